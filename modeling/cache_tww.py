"""StreamingDynamicCache: the dual KV cache of a TWW stream (source = what was read, target = what was written).

Reads append to the source and attend to the source only. Writes append to the target and attend to
`source[:limit] ‖ target`, where `limit` is the source length of the unit being written, taken from an immutable
`SourceSnapshot`. Every key is attended exactly once (the reference code attends to the source twice).

Threads: one reader may append to the source while one writer decodes against an older snapshot. Each uses its own
view object (`cache.source_view()`, `cache.target_view(snapshot)`), so no mode flag is shared. Buffers grow by
doubling (amortised O(1) append); a grown buffer is a new tensor, and a snapshot keeps the references it was taken
with, whose first `length` entries are never written again.
"""

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class _GrowableKV:
    """Keys and values `[batch, kv_heads, capacity, head_dim]` with a used length; append doubles the capacity."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        new_length = self.length + keys.shape[-2]
        if self.keys is None or new_length > self.keys.shape[-2]:
            self._grow(keys, values, max(new_length, 2 * self.length, 16))
        self.keys[..., self.length : new_length, :] = keys
        self.values[..., self.length : new_length, :] = values
        self.length = new_length  # published last: a reader of `length` only sees written entries

    def _grow(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        new_keys = keys.new_empty(*keys.shape[:-2], capacity, keys.shape[-1])
        new_values = values.new_empty(*values.shape[:-2], capacity, values.shape[-1])
        if self.keys is not None:
            new_keys[..., : self.length, :] = self.keys[..., : self.length, :]
            new_values[..., : self.length, :] = self.values[..., : self.length, :]
        self.keys, self.values = new_keys, new_values  # swapped whole; old references stay valid for old lengths

    def prefix(self, length: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The first `length` (default: all used) entries as views; `(None, None)` before the first append."""
        if self.keys is None:
            return None, None
        length = self.length if length is None else length
        return self.keys[..., :length, :], self.values[..., :length, :]

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(
                f"crop takes a negative number of tokens to remove (transformers 5 contract), got {tokens_to_remove}."
            )
        if -tokens_to_remove > self.length:
            raise ValueError(f"Cannot remove {-tokens_to_remove} tokens from a part holding {self.length}.")
        self.length += tokens_to_remove

    def map_batch(self, fn) -> None:
        """Applies `fn` (a batch-dimension op such as index_select) to the used part, compacting the buffer."""
        if self.keys is not None:
            self.keys, self.values = fn(self.keys[..., : self.length, :]), fn(self.values[..., : self.length, :])

    def reset(self) -> None:
        self.keys = self.values = None
        self.length = 0


@dataclass(frozen=True)
class SourceSnapshot:
    """The source as it stood after a unit was read: its length, and per layer the buffers holding it.

    Attributes:
        length (`int`): number of source tokens read so far.
        keys (`tuple[torch.Tensor, ...]`), values: per decoder layer, tensors whose first `length` entries
            along dim -2 are the source K/V (never written again, so safe to read while the source grows).
    """

    length: int
    keys: tuple
    values: tuple

    def prefix(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.length == 0:
            return None, None
        return self.keys[layer_idx][..., : self.length, :], self.values[layer_idx][..., : self.length, :]


class StreamingLayer(CacheLayerMixin):
    """One decoder layer's source and target K/V.

    Used directly (e.g. by `generate()`), `update` writes to the target and attends to the whole source read so far:
    plain decoding after a read, and plain `DynamicCache` behaviour on an empty source.
    """

    is_sliding = False
    is_croppable = True
    is_compileable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.source = _GrowableKV()
        self.target = _GrowableKV()

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.write(key_states, value_states, self.source.prefix())

    def read(self, key_states, value_states) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends to the source; returns the whole source (the keys a read attends to)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.source.append(key_states, value_states)
        return self.source.prefix()

    def write(self, key_states, value_states, source_prefix) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends to the target; returns `source_prefix ‖ target` (the keys a write attends to, each once)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.target.append(key_states, value_states)
        target_keys, target_values = self.target.prefix()
        source_keys, source_values = source_prefix
        if source_keys is None or source_keys.shape[-2] == 0:
            return target_keys, target_values
        return torch.cat([source_keys, target_keys], dim=-2), torch.cat([source_values, target_values], dim=-2)

    def get_seq_length(self) -> int:
        return self.source.length + self.target.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.source.reset()
        self.target.reset()
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        """Removes the last `-tokens_to_remove` target tokens (the source is append-only)."""
        if self.is_initialized:  # as DynamicLayer: a layer that never saw a token has nothing to crop
            self.target.crop(tokens_to_remove)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for part in (self.source, self.target):
            part.map_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        for part in (self.source, self.target):
            part.map_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for part in (self.source, self.target):
            part.map_batch(lambda t: t[indices, ...])


class _SourceLayerView(CacheLayerMixin):
    """A layer as seen by a read: appends to the source, attends to the source."""

    is_sliding = False
    is_compileable = False

    def __init__(self, layer: StreamingLayer):
        super().__init__()
        self.layer = layer

    def lazy_initialization(self, key_states, value_states) -> None:
        self.layer.lazy_initialization(key_states, value_states)

    def update(self, key_states, value_states, *args, **kwargs):
        return self.layer.read(key_states, value_states)

    def get_seq_length(self) -> int:
        return self.layer.source.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1


class _TargetLayerView(_SourceLayerView):
    """A layer as seen by a write of one unit: appends to the target, attends to `snapshot prefix ‖ target`."""

    def __init__(self, layer: StreamingLayer, snapshot: SourceSnapshot, layer_idx: int):
        super().__init__(layer)
        self.snapshot, self.layer_idx = snapshot, layer_idx

    def update(self, key_states, value_states, *args, **kwargs):
        return self.layer.write(key_states, value_states, self.snapshot.prefix(self.layer_idx))

    def get_seq_length(self) -> int:
        return self.snapshot.length + self.layer.target.length


class StreamingDynamicCache(Cache):
    """The KV state of one TWW stream: per layer an append-only source and a target, plus the stream's counters.

    Args:
        config (`PreTrainedConfig`): the model config (TWW or its text config); sets the number of layers and the
            target's first position (`target_start_pos`).

    Attributes:
        next_source_position (`int`): first M-RoPE position of the next source chunk (largest so far + 1).
        next_target_position (`int`): position of the next target token (a 1-D counter over every target token).
        unit_snapshots (`list[SourceSnapshot]`): one per unit read, in order.
    """

    def __init__(self, config):
        text_config = config.get_text_config(decoder=True)
        super().__init__(layers=[StreamingLayer() for _ in range(text_config.num_hidden_layers)])
        self.target_start_pos = int(getattr(config, "target_start_pos", 0) or 0)
        self.next_source_position = 0
        self.next_target_position = self.target_start_pos
        self.unit_snapshots: list[SourceSnapshot] = []

    @property
    def source_length(self) -> int:
        return self.layers[0].source.length

    @property
    def target_length(self) -> int:
        return self.layers[0].target.length

    def snapshot(self) -> SourceSnapshot:
        """The source as it stands now (length and buffer references); cheap, never a copy."""
        length = self.source_length
        keys = tuple(layer.source.keys for layer in self.layers)
        values = tuple(layer.source.values for layer in self.layers)
        return SourceSnapshot(length=length, keys=keys, values=values)

    def source_view(self) -> Cache:
        """The cache as seen by a read (pass as `past_key_values`)."""
        return Cache(layers=[_SourceLayerView(layer) for layer in self.layers])

    def target_view(self, snapshot: SourceSnapshot | None = None) -> Cache:
        """The cache as seen by a write against `snapshot` (default: the source as it stands now)."""
        snapshot = snapshot if snapshot is not None else self.snapshot()
        return Cache(layers=[_TargetLayerView(layer, snapshot, i) for i, layer in enumerate(self.layers)])

    def rollback_source(self, length: int, next_source_position: int) -> None:
        """Forgets source tokens past `length` (a read that failed part-way); earlier K/V and snapshots are intact."""
        for layer in self.layers:
            layer.source.length = min(layer.source.length, length)
        self.next_source_position = next_source_position

    def reset(self) -> None:
        """Empties the stream: K/V, counters and snapshots."""
        super().reset()
        self.next_source_position = 0
        self.next_target_position = self.target_start_pos
        self.unit_snapshots = []


__all__ = ["StreamingDynamicCache", "SourceSnapshot", "StreamingLayer"]
