"""`tww eval synthetic --teacher-forced`: is an answer wrong because of what the model saw, or because of the answer
format?

On held-out synthetic streams, the model reads the gold stream (frames, gold notes, gold reasoning) in one
teacher-forced forward pass, and we check whether it predicts the final answer tokens (the text after `Answer:`)
exactly. The reasoning already names the answer ("So the triangle is purple now."), so this measures the last step
alone: turning the reasoning's content into the answer line. The synthetic records answer multiple choice with the
option's text (`Answer: purple`, see `build_record`); with letters (`mcq_answer="letter"`) this step is a content ->
letter lookup, and the previous demo model scored it at chance (README). Frames come from the renderer in memory
(no mp4 round trip), so pixels differ slightly from the streamed evaluation's.

`teacher_forced_notes` does the same for notes, by how far into the stream they are written: given the gold stream
up to a note, does the model predict the note's colour words, shape words and numbers (times and counts)? A model
that reads the newest segment's frames scores the same at 5 s and at 50 s; the demo model does not (README).
"""

from collections import defaultdict

import torch

from ..synth import build_record
from ..world import COLORS, SHAPES, generate_world
from .synthetic import EVAL_SEED_OFFSET, KINDS


CHANCE = {"mcq": 25.0, "yesno": 50.0, "count": None}
TIME_BUCKETS = ((8.0, "0-8 s"), (20.0, "8-20 s"), (float("inf"), "after 20 s"))
WORD_KINDS = ("colour", "shape", "number")


def held_out_records(num: int, seed: int, stages=(2, 3)) -> list[dict]:
    """The same held-out records as `synthetic_probes`, with their frames in memory."""
    records = []
    for index in range(num):
        record = build_record(stages[index % len(stages)], EVAL_SEED_OFFSET + seed + index, negatives="hard")
        world = generate_world(**record["world"])
        records.append({**record, "frames": world.render(), "timestamps": world.timestamps})
    return records


def answer_spans(sample, answer_ids: list[int], boundary_id: int) -> list[tuple[int, int]]:
    """`(start, end)` of each question unit's final answer tokens, as indices into the packed sequence (source then
    target): from after the last "Answer:" (`answer_ids`) in the unit up to its boundary token (`boundary_id`)."""
    spans, offset, width = [], 0, len(answer_ids)
    for length in sample.target_lengths:
        unit = sample.target_ids[offset: offset + length]
        starts = [i for i in range(len(unit) - width) if unit[i: i + width] == answer_ids]
        if starts and boundary_id in unit[starts[-1]:]:
            begin = starts[-1] + width
            end = begin + unit[begin:].index(boundary_id)
            spans.append((len(sample.source_ids) + offset + begin, len(sample.source_ids) + offset + end))
        offset += length
    return spans


def teacher_forced_answers(model, processor, num: int = 20, seed: int = 0, batch_size: int = 4) -> dict:
    """{question type: {"questions", "accuracy" (%), "chance" (%) or None}}: exact prediction of the final answer
    tokens given the gold stream and reasoning, over `num` held-out streams (stages 2 and 3 alternating)."""
    from ..trainer.collator import TWWDataCollator

    collator = TWWDataCollator(processor, target_start_pos=getattr(model.config, "target_start_pos", 0))
    answer_ids = processor.encode_text("Answer:")
    boundary_id = processor.boundary_token_id("question")
    hits = defaultdict(list)
    records = held_out_records(num, seed)
    model.eval()
    device = next(model.parameters()).device
    for first in range(0, len(records), batch_size):
        chunk = records[first: first + batch_size]
        samples = [collator.encode(record) for record in chunk]
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collator.pad(samples).items()}
        batch.pop("labels")
        with torch.no_grad():
            predicted = model(**batch).logits.argmax(-1).cpu()  # (B, L): the token predicted after each position
        for row, (record, sample) in enumerate(zip(chunk, samples)):
            types = [u["question_type"] for u in record["units"] if u["kind"] == "question"]
            for kind, (begin, end) in zip(types, answer_spans(sample, answer_ids, boundary_id), strict=True):
                gold = batch["input_ids"][row, begin:end].cpu()
                hits[kind].append(bool((predicted[row, begin - 1: end - 1] == gold).all()))
    return {kind: {"questions": len(found), "accuracy": 100.0 * sum(found) / len(found),
                   "chance": CHANCE[KINDS[kind]]} for kind, found in sorted(hits.items())}


def _word_kind(text: str) -> str | None:
    text = text.strip()
    return "colour" if text in COLORS else "shape" if text in SHAPES else "number" if text.isdigit() else None


def teacher_forced_notes(model, processor, num: int = 20, seed: int = 0, batch_size: int = 4) -> dict:
    """{time bucket: {"notes": n, "colour" / "shape" / "number": % of those note tokens predicted}}: teacher-forced,
    over the notes of `num` held-out streams, bucketed by the stream time at which each note's segment ends
    (`TIME_BUCKETS`). Only trained note tokens count (not the forced prefix)."""
    from ..trainer.collator import TWWDataCollator

    collator = TWWDataCollator(processor, target_start_pos=getattr(model.config, "target_start_pos", 0))
    tokenizer, records = processor.tokenizer, held_out_records(num, seed)
    hits, notes = defaultdict(list), defaultdict(int)
    device = next(model.parameters()).device
    for first in range(0, len(records), batch_size):
        chunk = records[first: first + batch_size]
        samples = [collator.encode(record) for record in chunk]
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collator.pad(samples).items()}
        labels = batch.pop("labels").cpu()
        with torch.no_grad():
            predicted = model(**batch).logits.argmax(-1).cpu()  # (B, L): the token predicted after each position
        for row, (record, sample) in enumerate(zip(chunk, samples)):
            offset = len(sample.source_ids)
            for unit, length in zip(record["units"], sample.target_lengths):
                if unit["kind"] == "segment":
                    bucket = next(name for limit, name in TIME_BUCKETS if unit["end"] <= limit)
                    notes[bucket] += 1
                    for i in range(offset, offset + length):
                        kind = _word_kind(tokenizer.decode([int(labels[row, i])])) if labels[row, i] >= 0 else None
                        if kind:
                            hits[(bucket, kind)].append(bool(predicted[row, i - 1] == labels[row, i]))
                offset += length
    return {name: {"notes": notes[name], **{kind: 100.0 * sum(hits[(name, kind)]) / len(hits[(name, kind)])
                                            for kind in WORD_KINDS if hits[(name, kind)]}}
            for _, name in TIME_BUCKETS if notes[name]}


def forced_table(result: dict, num: int, seed: int) -> str:
    lines = [f"Final-answer accuracy given the gold stream and reasoning (teacher-forced), {num} held-out streams "
             f"(seed {seed}): the step from the reasoning's content to the answer line alone.", "",
             "| question type | questions | accuracy % | chance % |", "|---|---|---|---|"]
    for kind, row in result.items():
        chance = "-" if row["chance"] is None else f"{row['chance']:.0f}"
        lines.append(f"| {kind} | {row['questions']} | {row['accuracy']:.1f} | {chance} |")
    return "\n".join(lines) + "\n"


def forced_notes_table(result: dict, num: int, seed: int) -> str:
    lines = [f"Note words predicted given the gold stream (teacher-forced), {num} held-out streams (seed {seed}), by "
             "the stream time at which the note's segment ends, %.", "",
             "| segment ends | notes | " + " | ".join(WORD_KINDS) + " |", "|---|---|" + "---|" * len(WORD_KINDS)]
    for name, row in result.items():
        lines.append(f"| {name} | {row['notes']} | " + " | ".join(f"{row[k]:.1f}" if k in row else "-"
                                                                for k in WORD_KINDS) + " |")
    return "\n".join(lines) + "\n"
