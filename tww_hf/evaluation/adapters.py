"""Benchmark annotation files -> probes (one question at one time of one video).

StreamingBench (real-time, omni-source, sequential QA, proactive; the `*_stream.json` variants too), OVO-Bench
(backward, real-time, forward: REC / SSR / CRR expanded over their `test_info` probes), and a generic offline
multiple-choice adapter (Video-MME / LV-Bench style: video, question, options, answer).
"""

import ast
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


LETTERS = "ABCDEFGHIJ"
SB_CATEGORIES = {
    "Emotion Recognition": "Omni-Source Understanding",
    "Scene Understanding": "Omni-Source Understanding",
    "Source Discrimination": "Omni-Source Understanding",
    "Multimodal Alignment": "Omni-Source Understanding",
    "Misleading Context Understanding": "Contextual Understanding",
    "Anomaly Context Understanding": "Contextual Understanding",
    "Sequential Question Answering": "Contextual Understanding",
    "Proactive Output": "Contextual Understanding",
}
OVO_CATEGORIES = {
    "EPM": "Backward Tracing", "ASI": "Backward Tracing", "HLD": "Backward Tracing",
    "STU": "Real-Time Visual Perception", "OJR": "Real-Time Visual Perception", "ATR": "Real-Time Visual Perception",
    "ACR": "Real-Time Visual Perception", "OCR": "Real-Time Visual Perception", "FPD": "Real-Time Visual Perception",
    "REC": "Forward Active Responding", "SSR": "Forward Active Responding", "CRR": "Forward Active Responding",
}
MCQ_SUFFIX = "Respond with only the letter of the correct option."


@dataclass
class Probe:
    """One question asked at `time` seconds into `video`.

    kind: "mcq" (answer = letter), "count" (a number), "yesno" ("yes"/"no"), "proactive" (answer = the text to
    output; `extra` holds the ground-truth time), "open" (free text)."""

    id: str
    benchmark: str
    task: str
    category: str
    video: str
    time: float | None
    question: str
    answer: str
    kind: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _options(raw) -> list[str]:
    options = ast.literal_eval(raw) if isinstance(raw, str) else list(raw)
    return [str(o) for o in options]


def _lettered(options: list[str]) -> list[str]:
    """Options as 'A. text', keeping existing letters."""
    return [o if o[:2] in {f"{c}." for c in LETTERS} else f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]


def _mcq_text(question: str, options: list[str]) -> str:
    return f"{question}\n" + "\n".join(_lettered(options)) + f"\n{MCQ_SUFFIX}"


def hms(stamp: str) -> float:
    """'HH:MM:SS' (or 'MM:SS', or seconds) -> seconds."""
    parts = [float(p) for p in str(stamp).split(":")]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


# ------------------------------------------------------------------------------------------------ StreamingBench
def streamingbench_probes(path: str | Path) -> list[Probe]:
    """Every question of a StreamingBench file (any of the four kinds, plain or `_stream`)."""
    path = Path(path)
    data = json.loads(path.read_text())
    probes = []
    for entry_index, entry in enumerate(data):
        entries = entry if isinstance(entry, list) else [entry]  # sequential QA: a list of entries per video
        for turn, item in enumerate(entries):
            for q_index, question in enumerate(item["questions"]):
                probes.append(_sb_probe(path.stem, entry_index, turn, q_index, item, question))
    return probes


def _sb_probe(file_stem, entry_index, turn, q_index, item, question) -> Probe:
    task = question["task_type"]
    category = SB_CATEGORIES.get(task, "Real-Time Visual Understanding")
    probe_id = f"sb/{file_stem}/{entry_index}/{turn}/{q_index}"
    base = dict(id=probe_id, benchmark="streamingbench", task=task, category=category,
                video=item["video_path"].removeprefix("./"), time=hms(question["time_stamp"]))
    if "ground_truth_output" in question:
        return Probe(**base, question=question["question"], answer=str(question["ground_truth_output"]),
                     kind="proactive", extra={"ground_truth_time": hms(question["ground_truth_time_stamp"])})
    extra = {"sqa_group": f"{file_stem}/{entry_index}", "turn": turn} if task.startswith("Sequential") else {}
    return Probe(**base, question=_mcq_text(question["question"], _options(question["options"])),
                 answer=str(question["answer"]).strip(), kind="mcq", extra=extra)


# ----------------------------------------------------------------------------------------------------- OVO-Bench
def ovobench_probes(path: str | Path) -> list[Probe]:
    """Every probe of OVO-Bench's annotation file; forward tasks expand over `test_info`."""
    probes = []
    for record in json.loads(Path(path).read_text()):
        task = record["task"]
        base = dict(benchmark="ovobench", task=task, category=OVO_CATEGORIES[task], video=record["video"])
        if task in ("REC", "SSR", "CRR"):
            for index, info in enumerate(_list(record["test_info"])):
                probes.append(Probe(id=f"ovo/{record['id']}/{index}", time=float(info["realtime"]),
                                    **_forward(task, record, info), **base))
        else:
            options = _options(record["options"])
            probes.append(Probe(id=f"ovo/{record['id']}", time=float(record["realtime"]),
                                question=_mcq_text(record["question"], options),
                                answer=LETTERS[int(record["gt"])], kind="mcq", **base))
    return probes


def _list(raw) -> list:
    return ast.literal_eval(raw) if isinstance(raw, str) else raw


def _forward(task: str, record: dict, info: dict) -> dict:
    if task == "REC":
        question = (f"You are watching a video. How many times has the person done the action "
                    f"'{record['activity']}' so far? Answer with a number.")
        return {"question": question, "answer": str(int(info["count"])), "kind": "count"}
    if task == "SSR":
        question = (f"You are watching a tutorial ({record.get('tutorial', '')}). Is the person currently performing "
                    f"this step: '{info['step']}'? Answer Yes or No.")
        return {"question": question, "answer": "yes" if int(info["type"]) == 1 else "no", "kind": "yesno"}
    question = (f"Question: {record['question']} Is there enough information in the video so far to answer this "
                "question? Answer Yes or No.")
    return {"question": question, "answer": "yes" if int(info["type"]) == 1 else "no", "kind": "yesno"}


# -------------------------------------------------------------------------------------------- offline transfer
def offline_mcq_probes(path: str | Path, benchmark: str = "offline") -> list[Probe]:
    """Video-MME / LV-Bench style: a list of {video, question, options, answer[, task]}; asked after the whole
    video (time None)."""
    probes = []
    for index, record in enumerate(json.loads(Path(path).read_text())):
        options = _options(record["options"])
        answer = str(record["answer"]).strip()
        answer = LETTERS[int(answer)] if answer.isdigit() else answer[:1].upper()
        probes.append(Probe(id=f"{benchmark}/{record.get('id', index)}", benchmark=benchmark,
                            task=record.get("task", record.get("task_type", "all")), category="offline",
                            video=record["video"], time=None, question=_mcq_text(record["question"], options),
                            answer=answer, kind="mcq"))
    return probes


ADAPTERS = {"streamingbench": streamingbench_probes, "ovobench": ovobench_probes, "offline": offline_mcq_probes}


def load_probes(benchmark: str, files: list[str | Path]) -> list[Probe]:
    if benchmark not in ADAPTERS:
        raise ValueError(f"Unknown benchmark {benchmark!r}; choose one of {', '.join(ADAPTERS)}.")
    return [probe for path in files for probe in ADAPTERS[benchmark](path)]


def dry_run_summary(probes: list[Probe]) -> dict:
    """Videos and probes per task, without touching any video."""
    tasks: dict[str, dict] = {}
    for probe in probes:
        entry = tasks.setdefault(probe.task, {"category": probe.category, "probes": 0, "videos": set()})
        entry["probes"] += 1
        entry["videos"].add(probe.video)
    return {
        "videos": len({p.video for p in probes}),
        "probes": len(probes),
        "tasks": {task: {"category": e["category"], "probes": e["probes"], "videos": len(e["videos"])}
                  for task, e in sorted(tasks.items())},
    }
