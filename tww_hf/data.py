"""TWW training records: the project's JSONL format, reading frames for a record, and the validator.

One record per line:

    {"id": "synthetic-000001",
     "video": "clips/000001.mp4",            # relative to the JSONL file (or absolute); decoded at `fps`
     "fps": 2.0,
     "units": [
        {"kind": "segment", "start": 0.0, "end": 3.5, "note": "A red square enters from the left."},
        {"kind": "question", "time": 3.5, "question": "What color is the square?",
         "answer": "The square that entered is red.\\nAnswer: A"}],
     "stage": 1}

Instead of `video`, a record may carry `frames_dir` + `frame_files` + `frame_timestamps` (extracted images), or, in
memory, `frames` (`(N, H, W, 3)` uint8) + `timestamps`. A segment's frames are those with start <= t <= end.
Units are in arrival order; every segment has a `note` and every question an `answer` (one target per unit).
"""

import json
from pathlib import Path

import numpy as np


SEGMENT, QUESTION = "segment", "question"


class RecordError(ValueError):
    """A record that cannot be trained on; the message names the record and the field."""


def load_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file, each with `_root` set to the file's folder (for relative video paths)."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RecordError(f"{path}:{number}: not valid JSON ({error}).") from error
            record.setdefault("_root", str(path.parent))
            records.append(record)
    return records


def load_records(path: str | Path) -> list[dict]:
    """Records from a JSONL file, or from a `.json` file holding one record or a list; reference-format records
    (`conversations` + `metadata.segment_info`) are converted to the project format (without notes)."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        records = data if isinstance(data, list) else [data]
        for record in records:
            record.setdefault("_root", str(path.parent))
    else:
        records = load_jsonl(path)
    return [from_reference_record(r) if is_reference_record(r) else r for r in records]


def is_reference_record(record: dict) -> bool:
    return "conversations" in record and "units" not in record


def from_reference_record(record: dict) -> dict:
    """A reference-repository record -> the project format. Segments take `segment_info[].num_frames` frames in
    order; a question at t follows every segment ending <= t; segments after the last question are dropped (as in
    the reference). The reference format has no memory notes, so the segments come out without `note`."""
    meta = record.get("metadata", {})
    times = [float(t) for t in meta.get("sample_timestamps", [])]
    segments, start = [], 0
    for info in meta.get("segment_info", []):
        count = int(info["num_frames"])
        if count and start + count <= len(times):
            segments.append({"kind": SEGMENT, "start": times[start], "end": times[start + count - 1],
                             "_segment_end": float(info["end"])})
        start += count
    units, turns = [], record.get("conversations", [])
    for index, turn in enumerate(turns):
        if turn.get("from") != "human" or turn.get("timestamps") is None:
            continue
        time = float(turn["timestamps"])
        while segments and segments[0]["_segment_end"] <= time:
            units.append({k: v for k, v in segments.pop(0).items() if k != "_segment_end"})
        reply = turns[index + 1].get("value") if index + 1 < len(turns) else None
        units.append({"kind": QUESTION, "time": time, "question": turn["value"], "answer": reply})
    converted = {"id": f"reference-{meta.get('index', record.get('id', '?'))}", "units": units,
                 "_root": record.get("_root", "."), "_format": "reference"}
    if meta.get("frame_files"):
        converted.update(frames_dir=str(Path("..") / meta.get("frames_path", "")), frame_files=meta["frame_files"],
                         frame_timestamps=times)
    elif record.get("video"):
        converted.update(video=record["video"], fps=float(meta.get("sample_fps", 1.0)))
    return converted


def _name(record: dict) -> str:
    return f"record {record.get('id', '<no id>')!r}"


def unit_time(unit: dict) -> float:
    return float(unit["end"] if unit.get("kind") == SEGMENT else unit["time"])


def validate_record(record: dict) -> None:
    """Raises `RecordError` naming the record and field for anything training cannot use."""
    name, units = _name(record), record.get("units")
    if not isinstance(units, list) or not units:
        raise RecordError(f"{name}: `units` must be a non-empty list of segments and questions.")
    if not any(key in record for key in ("video", "frames", "frame_files")):
        raise RecordError(f"{name}: no video; set `video`, `frame_files` (with `frames_dir`), or `frames`.")
    if "frames" not in record and not record.get("fps") and "frame_files" not in record:
        raise RecordError(f"{name}: `fps` is required to decode `video`.")
    previous_time, previous_end = None, None
    for index, unit in enumerate(units):
        where = f"{name}, units[{index}]"
        _validate_unit(unit, where)
        time = unit_time(unit)
        if previous_time is not None and time < previous_time:
            raise RecordError(f"{where}: time {time} goes backwards (previous unit at {previous_time}); units must be "
                              "in arrival order.")
        if unit["kind"] == SEGMENT:
            if previous_end is not None and float(unit["start"]) <= previous_end:
                raise RecordError(f"{where}: segment starts at {unit['start']} but the previous one ends at "
                                  f"{previous_end}; segments must not overlap.")
            previous_end = float(unit["end"])
        previous_time = time


def _validate_unit(unit: dict, where: str) -> None:
    kind = unit.get("kind")
    if kind == SEGMENT:
        if not {"start", "end"} <= unit.keys() or float(unit["start"]) > float(unit["end"]):
            raise RecordError(f"{where}: a segment needs `start` <= `end` (seconds).")
        if not str(unit.get("note") or "").strip():
            raise RecordError(f"{where}: the segment has no `note`. Training needs one memory note per segment; "
                              "records without notes (the reference repository's format has none) go through the "
                              "data pipeline's teacher first: `tww data build`.")
    elif kind == QUESTION:
        if "time" not in unit or not str(unit.get("question") or "").strip():
            raise RecordError(f"{where}: a question needs `time` (seconds) and a non-empty `question`.")
        if not str(unit.get("answer") or "").strip():
            raise RecordError(f"{where}: the question has no `answer` (reasoning ending in 'Answer: X').")
    else:
        raise RecordError(f"{where}: `kind` must be 'segment' or 'question', got {kind!r}.")


def record_frames(record: dict) -> tuple[np.ndarray, list[float]]:
    """All frames of a record `(N, H, W, 3)` uint8 and their timestamps (decoded at the record's `fps`)."""
    if "frames" in record:
        return np.asarray(record["frames"]), [float(t) for t in record["timestamps"]]
    root = Path(record.get("_root", "."))
    if "frame_files" in record:
        from .video import frames_dir_source

        pairs = list(frames_dir_source(root / record.get("frames_dir", ""), record["frame_files"],
                                       record["frame_timestamps"]))
    else:
        from .video import iter_video_file

        video = Path(record["video"])
        video = video if video.is_absolute() else root / video
        if not video.is_file():
            raise RecordError(f"{_name(record)}: video {video} does not exist.")
        pairs = list(iter_video_file(video, float(record["fps"])))
    if not pairs:
        raise RecordError(f"{_name(record)}: the video has no frames.")
    return np.stack([frame for frame, _ in pairs]), [time for _, time in pairs]


def segment_frames(frames: np.ndarray, timestamps: list[float], unit: dict, record: dict):
    """The frames of one segment unit (start <= t <= end), with a clear error when there are none."""
    start, end = float(unit["start"]), float(unit["end"])
    keep = [i for i, t in enumerate(timestamps) if start - 1e-6 <= t <= end + 1e-6]
    if not keep:
        raise RecordError(f"{_name(record)}: no frame between {start}s and {end}s; check the segment times and fps.")
    return frames[keep], [timestamps[i] for i in keep]
