"""The embedded demo model and `tww demo`.

The package ships a small TWW model trained by `trainer/scripts/train_demo_model.py` on the synthetic world: its
weights, config, processor and tokenizer live in `tww_hf/demo_model/`. The remote code is not stored twice: the
first call of `default_model_path()` assembles a complete checkpoint folder (those files plus this installation's
`tww_hf/modeling/*.py`) in a cache folder, which `AutoModel.from_pretrained(path, trust_remote_code=True)` loads.
"""

import hashlib
import os
import shutil
from pathlib import Path

from .modeling import __file__ as _modeling_init


PACKAGED = Path(__file__).parent / "demo_model"
# The flat files a TWW checkpoint carries as remote code (what `save_pretrained` copies next to the weights).
CODE_FILES = ("configuration_tww.py", "modeling_tww.py", "cache_tww.py", "attention_tww.py", "streaming_tww.py",
              "processing_tww.py", "engine_tww.py", "sources_tww.py")
DEMO_SEGMENT_SECONDS = 2.0  # the demo model's training segmentation (stages 1 and 2)
DEMO_FPS = 2.0


def cache_root() -> Path:
    """`$TWW_HF_CACHE`, else `$XDG_CACHE_HOME/tww_hf`, else `~/.cache/tww_hf`."""
    if os.environ.get("TWW_HF_CACHE"):
        return Path(os.environ["TWW_HF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tww_hf"


def default_model_path() -> Path:
    """A complete checkpoint folder of the embedded demo model (weights, config, processor, tokenizer, remote code).

    The folder is keyed by the content of the shipped files and the code, so upgrading tww_hf never mixes versions.
    Raises `FileNotFoundError` naming the training script when the package has no demo model.
    """
    if not (PACKAGED / "model.safetensors").is_file():
        raise FileNotFoundError(f"No demo model in {PACKAGED}. Train one with `python trainer/scripts/"
                                "train_demo_model.py --out tww_hf/demo_model` (about 30 minutes on CPU).")
    code_dir = Path(_modeling_init).parent
    sources = sorted(p for p in PACKAGED.iterdir() if p.is_file()) + [code_dir / name for name in CODE_FILES]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + path.read_bytes())
    target = cache_root() / f"demo_model-{digest.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        partial.mkdir(parents=True, exist_ok=True)
        for path in sources:
            shutil.copyfile(path, partial / path.name)
        try:
            partial.rename(target)  # atomic: a concurrent first call never sees a half-written folder
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another process won the race; its folder is complete
    return target


def demo_stream(seed: int = 0) -> tuple[dict, list[tuple[float, str, str]]]:
    """A held-out synthetic record (a seed `tww eval synthetic` also never trains on) and its (time, question,
    gold answer) triples."""
    from .evaluation.synthetic import EVAL_SEED_OFFSET
    from .synth import build_record

    record = build_record(2, EVAL_SEED_OFFSET + 500_000 + seed, negatives="hard")
    questions = [(u["time"], u["question"], u["gold"]) for u in record["units"] if u["kind"] == "question"]
    return record, questions


def run_demo(model_path: str | None = None, video: str | None = None, questions=None, seed: int = 0,
             realtime: bool = False, overlap: bool = True, max_note_tokens: int = 64, max_answer_tokens: int = 96,
             json_output: bool = False, segment_seconds: float = DEMO_SEGMENT_SECONDS, out=print) -> dict:
    """Streams a synthetic mp4 (or `video`) through the demo model (or `model_path`) and prints notes, answers with
    their latency, and a summary. Returns the summary numbers (correct answers are counted on synthetic clips)."""
    import json
    import tempfile

    from transformers import AutoModel, AutoProcessor

    from .modeling.sources_tww import FixedSegmenter
    from .synth import render_record_video

    path = model_path or default_model_path()
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    with tempfile.TemporaryDirectory() as folder:
        golds = {}
        if video is None:
            record, triples = demo_stream(seed)
            video = str(render_record_video(record, folder))
            golds = {round(t, 3): (question, gold) for t, question, gold in triples}
            questions = [(t, q) for t, q, _ in triples]
            out(f"tww demo: a held-out synthetic clip ({record['world']['duration']:.0f} s, {len(questions)} "
                f"questions) -> {video}\nmodel: {path}")
        events = model.stream_generate(processor, video, questions or [], overlap=overlap, realtime=realtime,
                                       fps=DEMO_FPS, segmenter=FixedSegmenter(segment_seconds),
                                       max_note_tokens=max_note_tokens, max_answer_tokens=max_answer_tokens)
        return _print_events(events, golds, json_output, out, json)


def _print_events(events, golds: dict, json_output: bool, out, json) -> dict:
    """`golds`: {question time: (question, gold answer)} for the questions that are scored."""
    from .cli import format_event
    from .evaluation.scoring import final_answer, option_texts, score_synthetic

    correct, asked, summary = 0, 0, None
    for event in events:
        if json_output:
            out(json.dumps(event.to_dict()))
        elif (line := format_event(event)) is not None:
            out(line)
        if event.kind == "answer" and round(event.arrival, 3) in golds:
            question, gold = golds[round(event.arrival, 3)]
            given, ok = final_answer(event.text), score_synthetic(question, event.text, gold)
            correct, asked = correct + ok, asked + 1
            if not json_output:
                text = option_texts(question).get(gold)
                shown = f"{gold}. {text}" if text else gold
                out(f"             gold answer: {shown} -> {'correct' if ok else 'wrong'} (model: {given!r})")
        if event.kind == "summary":
            summary = event
    result = {"correct": correct, "scored": asked, "note_tokens": summary.note_tokens,
              "answer_tokens": summary.answer_tokens, "max_lag": summary.max_lag, "wall": summary.wall}
    if not json_output:
        scored = f"{correct}/{asked} answers correct, " if asked else ""
        out(f"demo: {scored}{summary.note_tokens} note + {summary.answer_tokens} answer tokens, max lag "
            f"{summary.max_lag:.2f}s, {summary.wall:.1f}s wall ({'overlapped' if summary.overlap else 'interleaved'})")
    return result


def ship_checkpoint(source: str | Path, dest: str | Path = PACKAGED) -> Path:
    """Copies a trained checkpoint into the package as the demo model: every file except the remote code (which
    `default_model_path()` adds from the installed package) and training leftovers."""
    source, dest = Path(source), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in CODE_FILES:
            shutil.copyfile(path, dest / path.name)
    return dest
