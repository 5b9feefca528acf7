"""`tww eval synthetic`: held-out synthetic-world streams, five ways of running the same checkpoint.

Rows: TWW multi-round (one overlapped pass), TWW single-round (a fresh stream per question), interleaved (one pass,
no overlap), offline (the whole clip up to the question, then the question) and no-notes (one pass with every
note left empty). Seeds are offset by `EVAL_SEED_OFFSET`, which training data never uses, so any seed a user passes
gives held-out streams.
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from ..synth import STAGES, build_record, render_record_video
from .runner import EvalRun, merge_report


EVAL_SEED_OFFSET = 1_000_000
ROWS = {
    "TWW multi-round": dict(protocol="multi-round"),
    "TWW single-round": dict(protocol="single-round"),
    "interleaved": dict(protocol="multi-round", overlap=False),
    "offline": dict(protocol="offline"),
    "no-notes": dict(protocol="multi-round", max_note_tokens=0),
}
# Short names for `--rows` (the CLI): the row name without "TWW ".
ROW_NAMES = {name.removeprefix("TWW "): name for name in ROWS}
KINDS = {"realtime": "mcq", "backward": "mcq", "not_yet": "mcq", "count": "count", "presence": "yesno"}


def synthetic_probes(num: int, seed: int, folder: Path, stages=(2, 3),
                     segment_seconds: float | None = None) -> list[dict]:
    """Renders `num` held-out records (alternating stages) and returns their questions as probes. Each stream is
    cut into its stage's segments (2 s, or 4 s for stage 3), as in training, unless `segment_seconds` is given."""
    probes = []
    for index in range(num):
        stage = stages[index % len(stages)]
        record = build_record(stage, EVAL_SEED_OFFSET + seed + index, negatives="hard")
        render_record_video(record, folder)
        extra = {"segment_seconds": segment_seconds or STAGES[stage]["segment"]}
        for q_index, unit in enumerate(u for u in record["units"] if u["kind"] == "question"):
            probes.append({"id": f"{record['id']}/{q_index}", "benchmark": "synthetic",
                           "task": unit["question_type"], "category": f"stage {stage}", "video": record["video"],
                           "time": unit["time"], "question": unit["question"], "answer": unit["gold"],
                           "kind": KINDS[unit["question_type"]], "extra": extra})
    return probes


def select_rows(rows: list[str] | None) -> dict[str, dict]:
    """The rows named by `rows` (full names or the short ones of `ROW_NAMES`), in table order; None: every row."""
    if rows is None:
        return ROWS
    unknown = [r for r in rows if r not in ROWS and r not in ROW_NAMES]
    if unknown or not rows:
        raise ValueError(f"unknown synthetic eval row(s) {unknown}: choose from {sorted(ROW_NAMES)}.")
    wanted = {ROW_NAMES.get(r, r) for r in rows}
    return {name: settings for name, settings in ROWS.items() if name in wanted}


def run_synthetic_eval(model, processor, num: int = 20, seed: int = 0, out: str | Path | None = None,
                       segment_seconds: float | None = None, max_note_tokens: int = 64, max_answer_tokens: int = 128,
                       progress: bool = True, rows: list[str] | None = None) -> dict:
    """The rows (default: all of `ROWS`) over the same held-out probes; returns {row: report} and writes
    results.json / results.md / results.png under `out`."""
    selected = select_rows(rows)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        probes = synthetic_probes(num, seed, folder, segment_seconds=segment_seconds)
        reports = {}
        for name, settings in selected.items():
            decode = {"max_note_tokens": max_note_tokens, "max_answer_tokens": max_answer_tokens} | settings
            protocol = decode.pop("protocol")
            run_dir = folder / "runs" / name.replace(" ", "_")
            EvalRun(model, processor, probes, folder, run_dir, protocol=protocol, fps=2.0,
                    progress=progress, **decode).run()
            reports[name] = merge_report(run_dir, name)
    result = {"num_streams": num, "seed": seed, "probes": len(probes), "rows": reports}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2))
        (out / "results.md").write_text(synthetic_table(result))
        plot_synthetic(result, out / "results.png")
    return result


def synthetic_table(result: dict) -> str:
    kinds = sorted({task for report in result["rows"].values() for task in report["tasks"]})
    head = ("| run | " + " | ".join(kinds)
            + " | overall | output tokens / question | TTFT tokens | TTFT s | max lag s |")
    lines = [f"Held-out synthetic streams: {result['num_streams']} (seed {result['seed']}), {result['probes']} "
             "questions. Accuracy in %.", "", head, "|" + "---|" * (len(kinds) + 6)]
    for name, report in result["rows"].items():
        cells = [f"{report['tasks'][k]['accuracy']:.1f}" if k in report["tasks"] else "-" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {report['overall_per_question']:.1f} | "
                     f"{report.get('output_tokens_mean', float('nan')):.1f} | {report.get('ttft_tokens_mean', 0)} | "
                     f"{report.get('ttft_seconds_mean')} | {report.get('max_lag')} |")
    return "\n".join(lines) + "\n"


def plot_synthetic(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = list(result["rows"])
    kinds = sorted({task for report in result["rows"].values() for task in report["tasks"]})
    figure, axis = plt.subplots(figsize=(1.6 * len(kinds) + 3, 3.5))
    width = 0.8 / len(rows)
    for i, name in enumerate(rows):
        values = [result["rows"][name]["tasks"].get(k, {}).get("accuracy", 0.0) for k in kinds]
        axis.bar(np.arange(len(kinds)) + i * width, values, width, label=name)
    axis.set_xticks(np.arange(len(kinds)) + width * (len(rows) - 1) / 2, kinds)
    axis.set(ylabel="accuracy (%)", title="tww eval synthetic")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
