"""Model cards for TWW checkpoints: metadata (`ModelCardData`, `model-index` from our evaluation JSON) rendered
through the package's Jinja template with huggingface_hub's `ModelCard`.

Evaluation JSON (what `tww eval` writes; also accepted by hand):

    {"results": [{"benchmark": "StreamingBench", "dataset_type": "mjuicem/StreamingBench", "split": "test",
                  "setting": "multi-turn", "metric": "accuracy", "value": 57.4}, ...]}

`tww eval synthetic --json` results (`{"rows": {row: {"tasks": {task: {"accuracy": ...}}, ...}}, "seed", ...}`) are
accepted as well and become one entry per row and question type, plus each row's overall accuracy.
"""

import json
import platform
from importlib import metadata
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData


TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
TRAINING_FILE = "tww_training.json"
_RESULT_FIELDS = ("benchmark", "metric", "value")


class EvalFileError(ValueError):
    """An evaluation results file that cannot be put on a card; the message names the entry and field."""


def load_eval_results(path: str | Path) -> list[dict]:
    """Reads and checks an evaluation JSON file (format in the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise EvalFileError(f"Cannot read evaluation results {path}: {error}.") from error
    if isinstance(data, dict) and isinstance(data.get("rows"), dict):
        data = {"results": synthetic_results(data, path)}
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise EvalFileError(f"{path}: expected an object with a `results` list, as `tww eval --json` writes.")
    for index, row in enumerate(results):
        missing = [key for key in _RESULT_FIELDS if not isinstance(row, dict) or key not in row]
        if missing:
            raise EvalFileError(f"{path}: results[{index}] lacks {', '.join(missing)}.")
        if not isinstance(row["value"], (int, float)):
            raise EvalFileError(f"{path}: results[{index}].value must be a number, got {row['value']!r}.")
    return results


def synthetic_results(data: dict, path: str | Path = "results") -> list[dict]:
    """`tww eval synthetic` results -> card entries: per row (setting), each question type's accuracy and the
    overall accuracy per question, on the held-out set named by its seed and size."""
    name = f"TWW synthetic world (held out, seed {data.get('seed', 0)}, {data.get('num_streams', '?')} streams)"
    entries = []
    for setting, row in data["rows"].items():
        tasks = row.get("tasks") if isinstance(row, dict) else None
        if not isinstance(tasks, dict) or "overall_per_question" not in row:
            raise EvalFileError(f"{path}: rows[{setting!r}] lacks `tasks` or `overall_per_question`, which "
                                f"`tww eval synthetic --json` writes.")
        scores = {f"accuracy ({task})": score["accuracy"] for task, score in sorted(tasks.items())}
        scores["accuracy"] = row["overall_per_question"]
        entries += [{"benchmark": name, "dataset_type": "tww_hf/synthetic", "split": "test", "setting": setting,
                     "metric": metric, "value": round(float(value), 1)} for metric, value in scores.items()]
    return entries


def framework_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("tww-hf", "transformers", "torch", "trl", "peft", "huggingface-hub", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def card_data(model_name: str, base_model: str | None = None, eval_results: list[dict] | None = None,
              datasets: list[str] | None = None, license: str = "apache-2.0") -> ModelCardData:
    """YAML metadata: base model, library, pipeline tag, tags, datasets, license and the `model-index`."""
    results = [
        EvalResult(task_type="video-text-to-text", dataset_type=row.get("dataset_type", row["benchmark"]),
                   dataset_name=row["benchmark"], dataset_split=row.get("split"), metric_type=row["metric"],
                   metric_value=row["value"], metric_name=f"{row['metric']} ({row.get('setting', 'default')})")
        for row in eval_results or []
    ]
    return ModelCardData(
        model_name=model_name, base_model=base_model, library_name="transformers",
        pipeline_tag="video-text-to-text", license=license, datasets=datasets,
        tags=["tww", "think-while-watching", "streaming-video", "qwen3_vl", "custom_code"],
        eval_results=results or None,
    )


def render_card(model_name: str, repo_id: str | None = None, revision: str = "main", base_model: str | None = None,
                eval_results: list[dict] | None = None, training: dict | None = None,
                datasets: list[str] | None = None) -> ModelCard:
    """The full model card (metadata + usage + method + training + evaluation + limitations + versions)."""
    rows = [{"setting": row.get("setting", "-"), **row} for row in eval_results or []]
    return ModelCard.from_template(
        card_data(model_name, base_model, eval_results, datasets),
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or f"your-name/{model_name}",
        revision=revision,
        base_model=base_model,
        training=training,
        eval_rows=rows,
        versions=framework_versions(),
    )


def write_training_record(folder: str | Path, args, dataset_size: int, hardware: str) -> dict:
    """Saves what a run did (stage, data size, hyperparameters, hardware) next to the checkpoint; returns it."""
    record = {
        "stage": getattr(args, "stage", None),
        "records": dataset_size,
        "learning rate": args.learning_rate,
        "warmup ratio": args.warmup_ratio,
        "weight decay": args.weight_decay,
        "per-device batch": args.per_device_train_batch_size,
        "gradient accumulation": args.gradient_accumulation_steps,
        "max steps": args.max_steps,
        "epochs": args.num_train_epochs,
        "precision": "bf16" if args.bf16 else "fp32",
        "LoRA rank": getattr(args, "lora_r", 0) or "full fine-tuning",
        "hardware": hardware,
    }
    Path(folder, TRAINING_FILE).write_text(json.dumps(record, indent=2))
    return record


def read_training_record(folder: str | Path) -> dict | None:
    path = Path(folder, TRAINING_FILE)
    return json.loads(path.read_text()) if path.is_file() else None
