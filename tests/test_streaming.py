"""Invariants 2-4 on the tiny model: chunking invariance, train/infer identity, causality."""

import random

import pytest
import torch
from conftest import concat_source, make_units
from transformers import DynamicCache

from tww_hf import attention_router, build_streaming_mask, streaming_position_ids
from tww_hf.modeling.processing_tww import SourceUnit
from tww_hf.tiny import tiny_model


def merge_units(units):
    """Several consecutive source units read as one chunk."""
    videos = [u for u in units if u.pixel_values_videos is not None]
    return SourceUnit(
        kind=units[-1].kind,
        input_ids=torch.cat([u.input_ids for u in units], 1),
        mm_token_type_ids=torch.cat([u.mm_token_type_ids for u in units], 1),
        pixel_values_videos=torch.cat([u.pixel_values_videos for u in videos]) if videos else None,
        video_grid_thw=torch.cat([u.video_grid_thw for u in videos]) if videos else None,
    )


def random_chunking(units, rng):
    """Random grouping of consecutive units, and text units split at random token boundaries."""
    pieces = []
    for unit in units:
        if unit.pixel_values_videos is None and len(unit) > 2 and rng.random() < 0.5:
            cut = rng.randint(1, len(unit) - 1)
            pieces += _split_text(unit, cut)
        else:
            pieces.append(unit)
    chunks, i = [], 0
    while i < len(pieces):
        size = rng.randint(1, 3)
        chunks.append(merge_units(pieces[i : i + size]))
        i += size
    return chunks


def _split_text(unit, cut):
    return [
        SourceUnit(kind=unit.kind, input_ids=unit.input_ids[:, a:b], mm_token_type_ids=unit.mm_token_type_ids[:, a:b])
        for a, b in ((0, cut), (cut, len(unit)))
    ]


@pytest.fixture(scope="module")
def one_shot(model, units):
    """Source K/V and positions from one causal prefill of the whole source (stock path, DynamicCache)."""
    inputs = concat_source(units)
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"]
    )
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model.model(**inputs, position_ids=positions, past_key_values=cache, use_cache=True)
    return positions, cache


@pytest.mark.parametrize("seed", range(4))
def test_chunking_invariance(model, units, one_shot, seed):
    positions, reference = one_shot
    cache = model.new_stream_cache()
    read_positions = []
    for chunk in random_chunking(units, random.Random(seed)):
        read_positions.append(
            model.source_position_ids(cache, chunk.input_ids, chunk.mm_token_type_ids, chunk.video_grid_thw)
        )
        model.stream_read(cache, **chunk.model_inputs())
    assert torch.equal(torch.cat(read_positions, -1), positions)
    for layer, expected in zip(cache.layers, reference.layers):
        keys, values = layer.source.prefix()
        torch.testing.assert_close(keys, expected.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(values, expected.values, atol=1e-5, rtol=0)


def make_targets(processor, units, seed=0, content=4):
    """One target unit per source unit: forced prefix, random content, boundary; <|im_end|> closes the last."""
    rng = random.Random(seed)
    targets = []
    for index, unit in enumerate(units):
        body = [rng.randint(20, 300) for _ in range(content)]
        targets.append(
            processor.target_prefix_ids(unit.kind, first=index == 0) + body + [processor.boundary_token_id(unit.kind)]
        )
    targets[-1].append(processor.end_token_id)
    return targets


def packed_target_logits(model, units, targets):
    """One training-style forward over [R_1..R_U, C_1..C_U] under the streaming mask and positions."""
    source = concat_source(units)
    source_lengths, target_lengths = [len(u) for u in units], [len(t) for t in targets]
    flat = torch.tensor([sum(targets, [])])
    positions, _ = model.model.get_rope_index(
        source["input_ids"], source["mm_token_type_ids"], video_grid_thw=source["video_grid_thw"]
    )
    with torch.no_grad():
        logits = model(
            input_ids=torch.cat([source["input_ids"], flat], 1),
            mm_token_type_ids=torch.cat([source["mm_token_type_ids"], torch.zeros_like(flat, dtype=torch.int)], 1),
            pixel_values_videos=source["pixel_values_videos"],
            video_grid_thw=source["video_grid_thw"],
            attention_mask=build_streaming_mask(source_lengths, target_lengths)[None, None],
            position_ids=streaming_position_ids(positions, flat.shape[1], model.config.target_start_pos),
        ).logits
    return logits[0, sum(source_lengths) :]


def incremental_target_logits(model, processor, units, targets):
    """Teacher-forced streaming: read R_u, feed (previous boundary + prefix of C_u), then C_u token by token."""
    cache, rows, pending = model.new_stream_cache(), [], []
    for index, (unit, target) in enumerate(zip(units, targets)):
        snapshot = model.stream_read(cache, **unit.model_inputs())
        last = index == len(units) - 1
        body = target if last else target[:-1]  # the boundary waits for the next unit (deferred convention)
        prefix = len(processor.target_prefix_ids(unit.kind, first=index == 0))
        rows.append(model.stream_write(cache, torch.tensor([pending + body[:prefix]]), snapshot)[0])
        for token in body[prefix:]:
            rows.append(model.stream_write(cache, torch.tensor([[token]]), snapshot)[0])
        pending = [] if last else [target[-1]]
    return torch.cat(rows), cache


def test_train_infer_identity(model, processor, units):
    assert sum(u.kind == "segment" for u in units) >= 3 and sum(u.kind == "question" for u in units) >= 2
    targets = make_targets(processor, units)
    incremental, cache = incremental_target_logits(model, processor, units, targets)
    packed = packed_target_logits(model, units, targets)
    assert incremental.shape == packed.shape == (sum(len(t) for t in targets), model.config.text_config.vocab_size)
    torch.testing.assert_close(incremental, packed, atol=1e-4, rtol=0)
    assert cache.source_length == sum(len(u) for u in units)
    assert cache.target_length == cache.next_target_position == sum(len(t) for t in targets)


def test_writes_see_each_key_once_and_route_as_plain_causal(model, processor, units):
    attention_router.reset_counts()
    incremental_target_logits(model, processor, units, make_targets(processor, units))
    text_cases = {case for (case, _backend) in attention_router.counts if case != "vision"}
    assert text_cases == {"prefill", "chunk", "decode"}  # streaming never needs an irregular mask


def test_target_start_pos_is_honoured(processor, units):
    shifted = tiny_model(seed=0, processor=processor, target_start_pos=7)
    targets = make_targets(processor, units)
    incremental, cache = incremental_target_logits(shifted, processor, units, targets)
    assert cache.next_target_position == 7 + sum(len(t) for t in targets)
    torch.testing.assert_close(incremental, packed_target_logits(shifted, units, targets), atol=1e-4, rtol=0)


def test_causality_later_units_change_no_earlier_prediction(model, processor, units):
    """Invariant 4: perturb R_4..R_5 and C_4..C_5; no row predicting a token of C_1..C_3 may change."""
    other_units = make_units(processor, seed=7)  # same layout, other pixels
    other_units[4] = processor.with_close(processor.encode_question("How many times did a blue circle jump?", 6.0))
    perturbed = units[:3] + other_units[3:]
    targets = make_targets(processor, units)
    other_targets = targets[:3] + make_targets(processor, units, seed=5)[3:]
    # Rows whose next token lies in C_1..C_3: all rows of C_1..C_3 except the last one (it predicts C_4's prefix).
    rows = sum(len(t) for t in targets[:3]) - 1
    for logits_of in (packed_target_logits, lambda m, u, t: incremental_target_logits(m, processor, u, t)[0]):
        before, after = logits_of(model, units, targets), logits_of(model, perturbed, other_targets)
        torch.testing.assert_close(before[:rows], after[:rows], atol=1e-5, rtol=0)
        assert (before[rows + 5 :] - after[rows + 5 : before.shape[0]]).abs().max() > 1e-3  # later rows did change
