"""`tww eval synthetic --notes`: how well a model's own notes carry the state (`Shapes seen: ...`, `Entries so far:
N.`) that count, real-time and not-yet answers read from the latest note.

On held-out synthetic streams the model streams the video with no questions, and each note it writes is checked
against the event log:
- `count`: the note's running count equals the log's; `count_low` / `count_high`: it is below / above it;
- `shapes`: the note's `Shapes seen` sentence equals the log's;
- `entries`: the note reports as many entries (`... enters`) as happened in its segment;
- `adds_up`: the note's count minus the previous note's equals the entries it reports (the arithmetic alone);
- `times`: every time the note mentions (`At 2.5s ...`) lies in its own segment, as the causality validator
  requires of the training notes (a later time claims what has not been seen yet);
- `entry_recall`: per entry rather than per note, the % of entries that their own segment's note reports (most
  notes have no entry to report, so `entries` is high even when most entries are missed).
A running count is right only while every entry has been noted, so `count` falls with `entries` compounding.
"""

import re
import tempfile
from pathlib import Path

from ..synth import STAGES, TIME_MENTION, build_record, carried_state, render_record_video
from ..world import Event
from .synthetic import EVAL_SEED_OFFSET


_COUNT = re.compile(r"Entries so far: (\d+)\.")
CHECKS = ("count", "count_low", "count_high", "shapes", "entries", "adds_up", "times")


def check_notes(notes: list[str], segment_ends: list[float], events: list[Event]) -> list[dict]:
    """One {check: passed} per note (plus `happened` and `found`: entries in the segment, and how many of them the
    note reports): `notes[i]` was written for the segment ending at `segment_ends[i]`."""
    checks, previous_end, previous_count = [], -1.0, 0
    for note, end in zip(notes, segment_ends):
        gold = carried_state(events, end)
        gold_count = int(_COUNT.search(gold).group(1))
        found = _COUNT.search(note)
        count = int(found.group(1)) if found else None
        reported = note.count(" enters")
        happened = sum(e.kind == "enter" and previous_end < e.time <= end for e in events)
        checks.append({"count": count == gold_count,
                       "count_low": count is not None and count < gold_count,
                       "count_high": count is not None and count > gold_count,
                       "shapes": gold.split(" Entries")[0] in note,
                       "entries": reported == happened,
                       "adds_up": count is not None and count - previous_count == reported,
                       "times": all(previous_end < float(t) <= end + 1e-6 for t in TIME_MENTION.findall(note)),
                       "happened": happened, "found": min(reported, happened)})
        previous_end, previous_count = end, count if count is not None else previous_count
    return checks


def note_state_accuracy(model, processor, num: int = 20, seed: int = 0, max_note_tokens: int = 64) -> dict:
    """{"stage 2" / "stage 3": {"notes": n, check: % of notes passing}} over the held-out streams of
    `tww eval synthetic` (the same seeds), each cut into its stage's segments."""
    from ..modeling.sources_tww import FixedSegmenter

    per_stage: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(num):
            stage = (2, 3)[index % 2]
            record = build_record(stage, EVAL_SEED_OFFSET + seed + index, negatives="hard")
            video = str(render_record_video(record, Path(folder)))
            stream = model.stream_generate(processor, video, [], overlap=False, fps=record["fps"],
                                           segmenter=FixedSegmenter(STAGES[stage]["segment"]),
                                           max_note_tokens=max_note_tokens)
            notes = [event.text for event in stream if event.kind == "note"]
            ends = [unit["end"] for unit in record["units"] if unit["kind"] == "segment"]
            events = [Event(**event) for event in record["events"]]
            per_stage.setdefault(f"stage {stage}", []).extend(check_notes(notes, ends, events))
    return {stage: {"notes": len(rows), **{c: 100.0 * sum(r[c] for r in rows) / len(rows) for c in CHECKS},
                    "entries_total": sum(r["happened"] for r in rows),
                    "entry_recall": 100.0 * sum(r["found"] for r in rows) / max(1, sum(r["happened"] for r in rows))}
            for stage, rows in sorted(per_stage.items())}


def notes_table(result: dict, num: int, seed: int) -> str:
    lines = [f"The model's own notes against the event log, {num} held-out streams (seed {seed}), % of notes.", "",
             "| streams | notes | " + " | ".join(CHECKS) + " | entry events | entry_recall |",
             "|---|---|" + "---|" * (len(CHECKS) + 2)]
    for stage, row in result.items():
        lines.append(f"| {stage} | {row['notes']} | " + " | ".join(f"{row[c]:.0f}" for c in CHECKS)
                     + f" | {row['entries_total']} | {row['entry_recall']:.0f} |")
    return "\n".join(lines) + "\n"
