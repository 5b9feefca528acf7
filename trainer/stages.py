"""The three-stage, stage-matched recipe: stage 1 (single-round) -> 2 (multi-round) -> 3 (long-range), each stage
starting from the previous stage's checkpoint."""

import json
from dataclasses import replace
from pathlib import Path

from datasets import Dataset

from ..data import load_jsonl, validate_record
from .sft import TWWSFTConfig, build_trainer, load_model_for_training, save_checkpoint


def load_dataset(path: str | Path, stage: int | None = None) -> Dataset:
    """A JSONL file (or a folder of `stage{N}.jsonl`) as a `datasets.Dataset`; every record is validated first."""
    path = Path(path)
    if path.is_dir():
        path = path / f"stage{stage}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"Training data {path} does not exist; write it with `tww data build` or pass a file.")
    records = load_jsonl(path)
    if stage is not None:
        records = [r for r in records if r.get("stage", stage) == stage] or records
    for record in records:
        validate_record(record)
    # Segment and question units have different fields: keep each record as one JSON string, not an Arrow schema.
    return Dataset.from_list([{"record": json.dumps(record)} for record in records])


def run_stage(data, output_dir, args: TWWSFTConfig, source: str | None = None, tiny: bool = False) -> Path:
    """Trains one stage and saves a loadable checkpoint in `output_dir`; returns it."""
    model, processor = load_model_for_training(source, tiny)
    dataset = load_dataset(data, args.stage)
    trainer = build_trainer(model, processor, dataset, replace(args, output_dir=str(output_dir)))
    trainer.train()
    return save_checkpoint(trainer, processor, output_dir, base_model=source)


def run_curriculum(data, output_dir, args: TWWSFTConfig, source: str | None = None, tiny: bool = False) -> Path:
    """Stages 1 -> 2 -> 3 into `output_dir/stage{N}`, each from the previous one's checkpoint."""
    checkpoint = source
    for stage in (1, 2, 3):
        stage_dir = Path(output_dir) / f"stage{stage}"
        checkpoint = run_stage(data, stage_dir, replace(args, stage=stage), checkpoint, tiny and stage == 1)
    return Path(checkpoint)
