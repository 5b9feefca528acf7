"""The streaming causal mask and streaming positions of the packed training layout `[R_1..R_U, C_1..C_U]`.

Mask rule (DESIGN.md, paper §5, deferred-boundary convention B). Query in unit A, key in unit B:
  - R_u sees R_<=u (plain causal over the source);
  - C_u sees R_<=u and C_<=u, causal within C_u;
  - R never sees C;
  - the boundary token of C_u (its last token, `<EOT>`/`<EOQ>`) sees R_<=min(u+1, U): at inference it is fed together
    with C_{u+1}'s forced prefix, after R_{u+1} has been read.

Because the source occupies packed indices [0, S) and the target [S, S+T), the whole rule is one mask function:
    visible(q, kv) = kv <= q  and  (kv >= S  or  kv < source_visible[q])
where `source_visible[q]` is the number of source tokens query q may see (S for source rows: causality does the rest).
"""

import itertools
from types import SimpleNamespace

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel


def _check_layout(source_lengths, target_lengths) -> None:
    if len(source_lengths) != len(target_lengths) or not source_lengths:
        raise ValueError(
            f"A TWW layout needs one target unit per source unit; got {len(source_lengths)} source and "
            f"{len(target_lengths)} target units."
        )
    if any(int(n) <= 0 for n in itertools.chain(source_lengths, target_lengths)):
        raise ValueError(
            f"Every unit needs at least one token; got source {list(source_lengths)}, target {list(target_lengths)}."
        )


def source_visibility(source_lengths: list[int], target_lengths: list[int]) -> torch.Tensor:
    """Number of source tokens each packed position may attend to.

    Returns:
        `torch.LongTensor` of shape `(S + T,)`: S for source rows; for a row of C_u the length of R_<=u, or of
        R_<=min(u+1, U) for the boundary (last) token of C_u.
    """
    _check_layout(source_lengths, target_lengths)
    ends = list(itertools.accumulate(int(n) for n in source_lengths))
    total, last = ends[-1], len(ends) - 1
    rows = [torch.full((total,), total, dtype=torch.long)]
    for u, n in enumerate(target_lengths):
        row = torch.full((int(n),), ends[u], dtype=torch.long)
        row[-1] = ends[min(u + 1, last)]
        rows.append(row)
    return torch.cat(rows)


def streaming_mask_function(source_lengths: list[int], target_lengths: list[int]):
    """The streaming rule as a `transformers.masking_utils` mask function `(batch, head, q_idx, kv_idx) -> bool`.

    Usable with `sdpa_mask(..., mask_function=...)`, `and_masks`/`or_masks`, or a flex-attention block mask; indices
    are packed positions of one sequence.
    """
    visible = source_visibility(source_lengths, target_lengths)
    source_total = int(sum(int(n) for n in source_lengths))

    def mask_function(batch_idx, head_idx, q_idx, kv_idx):
        limit = visible.to(q_idx.device)[q_idx] if isinstance(q_idx, torch.Tensor) else visible[q_idx]
        return (kv_idx <= q_idx) & ((kv_idx >= source_total) | (kv_idx < limit))

    return mask_function


def build_streaming_mask(source_lengths: list[int], target_lengths: list[int]) -> torch.Tensor:
    """Dense streaming mask for one packed sequence.

    Args:
        source_lengths (`list[int]`): token count of R_1..R_U (the first includes the header, the last the close).
        target_lengths (`list[int]`): token count of C_1..C_U (each ending with its boundary token).

    Returns:
        `torch.BoolTensor` of shape `(S + T, S + T)`: True where the row (query) may attend to the column (key).
    """
    mask_function = streaming_mask_function(source_lengths, target_lengths)
    n = int(sum(source_lengths) + sum(target_lengths))
    q = torch.arange(n).view(-1, 1)
    kv = torch.arange(n).view(1, -1)
    return mask_function(0, 0, q, kv)


def build_streaming_mask_batch(layouts: list[tuple[list[int], list[int]]], length: int | None = None) -> torch.Tensor:
    """Streaming masks for a right-padded batch.

    Args:
        layouts: per sample `(source_lengths, target_lengths)`.
        length (`int`, *optional*): padded length (default: the longest sample).

    Returns:
        `torch.BoolTensor` of shape `(batch, 1, length, length)`. Padding rows attend only to themselves (so no row
        is empty, which would make softmax NaN); no real row attends to padding.
    """
    sizes = [int(sum(s) + sum(t)) for s, t in layouts]
    length = max(sizes) if length is None else length
    if length < max(sizes):
        raise ValueError(f"Padded length {length} is shorter than the longest sample ({max(sizes)} tokens).")
    mask = torch.eye(length, dtype=torch.bool).repeat(len(layouts), 1, 1, 1)
    for b, ((source_lengths, target_lengths), n) in enumerate(zip(layouts, sizes)):
        mask[b, 0, :n, :n] = build_streaming_mask(source_lengths, target_lengths)
    return mask


def target_position_ids(start: int, length: int, batch_size: int = 1, device=None) -> torch.Tensor:
    """Target positions: a 1-D counter from `start`, copied to the three M-RoPE axes.

    Returns:
        `torch.LongTensor` of shape `(3, batch_size, length)`.
    """
    positions = torch.arange(start, start + length, device=device)
    return positions.view(1, 1, -1).expand(3, batch_size, -1)


def streaming_position_ids(
    source_position_ids: torch.Tensor, target_length: int, target_start: int = 0
) -> torch.Tensor:
    """Packed positions `[source ‖ target]`: Qwen3-VL's M-RoPE over the source, then the target counter.

    Args:
        source_position_ids (`torch.LongTensor` of shape `(3, batch, S)`): from `get_rope_index` over the source.
        target_length (`int`): T.
        target_start (`int`): `config.target_start_pos`.

    Returns:
        `torch.LongTensor` of shape `(3, batch, S + T)`.
    """
    batch = source_position_ids.shape[1]
    target = target_position_ids(target_start, target_length, batch, source_position_ids.device)
    return torch.cat([source_position_ids, target], dim=-1)


class _RopeIndex:
    """Qwen3-VL's own `get_rope_index` without a model instance: it only reads the vision merge size."""

    get_rope_index = Qwen3VLModel.get_rope_index
    get_vision_position_ids = Qwen3VLModel.get_vision_position_ids

    def __init__(self, spatial_merge_size: int):
        self.config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=spatial_merge_size))


def source_position_ids(input_ids, mm_token_type_ids, video_grid_thw=None, spatial_merge_size: int = 2):
    """Qwen3-VL M-RoPE positions of a whole source `(3, batch, S)`, exactly as `Qwen3VLModel.get_rope_index`."""
    positions, _ = _RopeIndex(spatial_merge_size).get_rope_index(
        input_ids, mm_token_type_ids, video_grid_thw=video_grid_thw)
    return positions


__all__ = [
    "build_streaming_mask",
    "build_streaming_mask_batch",
    "source_position_ids",
    "source_visibility",
    "streaming_mask_function",
    "streaming_position_ids",
    "target_position_ids",
]
