"""The serial streaming loop (the interleaved schedule): read unit u, write C_u, read u+1, ...

Greedy decoding with a token budget per note and per answer. The boundary of C_u is *decided* by C_u's last content
token but *fed* together with C_{u+1}'s forced prefix after R_{u+1} is read (deferred-boundary convention, DESIGN.md);
a boundary of the wrong kind is coerced to the unit's kind and counted; a unit that reaches its budget gets its
boundary forced, so every later unit is still read and answered.
"""

from dataclasses import dataclass, field

import torch

from .processing_tww import QUESTION, SEGMENT


@dataclass
class UnitOutput:
    """What one target unit produced. `tokens` excludes the forced prefix and the boundary."""

    index: int
    kind: str
    tokens: list[int] = field(default_factory=list)
    boundary: int | None = None
    coerced: bool = False
    truncated: bool = False


def _greedy(logits: torch.Tensor) -> int:
    return int(logits[0, -1].argmax())


def write_unit(
    model, processor, cache, snapshot, index: int, kind: str, pending: list[int], budget: int
) -> UnitOutput:
    """Decodes C_index greedily against `snapshot`; `pending` (the previous unit's boundary) is fed with the prefix."""
    eot, eoq, end = processor.eot_token_id, processor.eoq_token_id, processor.end_token_id
    own, other = (eot, eoq) if kind == SEGMENT else (eoq, eot)
    output = UnitOutput(index=index, kind=kind)
    feed = pending + processor.target_prefix_ids(kind, first=index == 0)
    while True:
        token = _greedy(model.stream_write(cache, torch.tensor([feed]), snapshot, logits_to_keep=1))
        if token in (own, other, end) or len(output.tokens) >= budget:
            output.coerced = token in (other, end)
            output.truncated = token not in (own, other, end)
            output.boundary = own
            return output
        output.tokens.append(token)
        feed = [token]


def finish_stream(model, processor, cache, boundary: int, budget: int = 8) -> None:
    """Feeds the last boundary (it sees the whole source) and lets the model close the stream with `<|im_end|>`."""
    feed = [boundary]
    for _ in range(budget):
        token = _greedy(model.stream_write(cache, torch.tensor([feed]), logits_to_keep=1))
        if token == processor.end_token_id:
            return
        feed = [token]


def run_serial(model, processor, units, max_note_tokens: int = 48, max_answer_tokens: int = 96):
    """Streams `units` (already built with `processor.build_source`) and yields one event dict per step:
    `{"event": "read", ...}` after each unit is read, then `{"event": "note" | "answer", "text": ...}`."""
    cache = model.new_stream_cache()
    pending: list[int] = []
    for index, unit in enumerate(units):
        snapshot = model.stream_read(cache, **unit.model_inputs())
        yield {"event": "read", "unit": index, "kind": unit.kind, "time": unit.end, "source_tokens": snapshot.length}
        budget = max_note_tokens if unit.kind == SEGMENT else max_answer_tokens
        output = write_unit(model, processor, cache, snapshot, index, unit.kind, pending, budget)
        pending = [output.boundary]
        yield {
            "event": "note" if unit.kind == SEGMENT else "answer",
            "unit": index,
            "time": unit.end,
            "question": unit.text if unit.kind == QUESTION else None,
            "text": processor.tokenizer.decode(output.tokens, skip_special_tokens=True),
            "tokens": len(output.tokens),
            "coerced_boundary": output.coerced,
            "truncated": output.truncated,
        }
    if pending:
        finish_stream(model, processor, cache, pending[0])
    yield {"event": "done", "source_tokens": cache.source_length, "target_tokens": cache.target_length}
