"""build_streaming_mask against the hand-worked example of docs/reference-code.md §10.1, and its properties."""

import random

import pytest
import torch
from transformers.masking_utils import sdpa_mask

from tww_hf import build_streaming_mask, build_streaming_mask_batch, streaming_mask_function


# §10.1: structure [video, text, video, video, text]; T0-T7 = header + IS + note1 + EOT, etc.; <|im_end|> never fed.
SOURCE = [9, 3, 7, 7, 5]
TARGET = [8, 5, 5, 5, 5]
S = sum(SOURCE)


def visible_source(mask, target_index):
    row = mask[S + target_index, :S]
    assert row[: int(row.sum())].all(), "a target row must see a source prefix"
    return int(row.sum())


def test_hand_worked_example_source_visibility():
    mask = build_streaming_mask(SOURCE, TARGET)
    # "source visible" column of the target table, as a prefix length: S0-S8 -> 9, S0-S11 -> 12, ...
    expected = {
        0: 9,
        3: 9,
        4: 9,
        6: 9,
        7: 12,
        8: 12,
        11: 12,
        12: 19,
        13: 19,
        16: 19,
        17: 26,
        18: 26,
        21: 26,
        22: 31,
        23: 31,
        26: 31,
        27: 31,
    }
    for t, count in expected.items():
        assert visible_source(mask, t) == count, f"T{t}"


def test_hand_worked_example_target_and_source_rows():
    mask = build_streaming_mask(SOURCE, TARGET)
    target = mask[S:, S:]
    assert torch.equal(target, torch.ones(28, 28, dtype=torch.bool).tril())  # T_x sees T0..T_x
    assert torch.equal(mask[:S, :S], torch.ones(S, S, dtype=torch.bool).tril())  # S_i sees S0..S_i (M1)
    assert not mask[:S, S:].any()  # no source token sees the target
    # (f): a write's key count = R + earlier target + itself; T7 (fed with T8) sees 12 + 8 keys.
    assert int(mask[S + 7].sum()) == 12 + 8
    assert int(mask[S + 27].sum()) == 31 + 28


def random_layout(rng):
    units = rng.randint(1, 6)
    return [rng.randint(1, 9) for _ in range(units)], [rng.randint(1, 7) for _ in range(units)]


@pytest.mark.parametrize("seed", range(20))
def test_properties_on_random_layouts(seed):
    rng = random.Random(seed)
    source, target = random_layout(rng)
    mask = build_streaming_mask(source, target)
    s, n = sum(source), sum(source) + sum(target)
    assert mask.shape == (n, n) and mask.diagonal().all()
    assert not mask.triu(1).any()  # causal in packed order
    assert not mask[:s, s:].any()
    assert torch.equal(mask[s:, s:], torch.ones(n - s, n - s, dtype=torch.bool).tril())
    ends = torch.tensor(source).cumsum(0).tolist()
    row = s
    for u, length in enumerate(target):
        for i in range(length):
            boundary = i == length - 1
            limit = ends[min(u + 1, len(ends) - 1)] if boundary else ends[u]
            assert int(mask[row, :s].sum()) == limit and mask[row, :limit].all()
            row += 1


def test_mask_function_drives_transformers_sdpa_mask():
    function = streaming_mask_function(SOURCE, TARGET)
    n = S + sum(TARGET)
    built = sdpa_mask(
        batch_size=1, q_length=n, kv_length=n, mask_function=function, allow_is_causal_skip=False, use_vmap=True
    )
    assert torch.equal(built[0, 0], build_streaming_mask(SOURCE, TARGET))


def test_batch_form_pads_without_empty_rows():
    layouts = [(SOURCE, TARGET), ([2, 3], [2, 2])]
    batch = build_streaming_mask_batch(layouts)
    assert batch.shape == (2, 1, S + 28, S + 28)
    assert torch.equal(batch[1, 0, :9, :9], build_streaming_mask([2, 3], [2, 2]))
    assert not batch[1, 0, :9, 9:].any()  # no real token sees padding
    assert batch[1, 0].any(-1).all()  # every row (padding included) attends somewhere: no NaN softmax
    with pytest.raises(ValueError, match="shorter"):
        build_streaming_mask_batch(layouts, length=10)


@pytest.mark.parametrize("source, target", [([3], [2, 2]), ([], []), ([3, 0], [1, 1])])
def test_bad_layouts_are_named(source, target):
    with pytest.raises(ValueError):
        build_streaming_mask(source, target)
