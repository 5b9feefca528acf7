"""StreamingDynamicCache: model-free unit tests, then generate() on a tiny model."""

import threading

import pytest
import torch
from transformers import DynamicCache

from tww_hf import StreamingDynamicCache
from tww_hf.tiny import tiny_config


def kv(n, value=None, batch=1):
    tensor = torch.randn(batch, 2, n, 4) if value is None else torch.full((batch, 2, n, 4), float(value))
    return tensor, tensor + 100


@pytest.fixture
def cache():
    return StreamingDynamicCache(tiny_config())


def test_read_and_write_views(cache):
    source_view = cache.source_view()
    keys, _ = source_view.update(*kv(5, 1), layer_idx=0)
    assert keys.shape[-2] == 5 and source_view.get_seq_length(0) == 5
    snapshot = cache.snapshot()
    source_view.update(*kv(3, 2), layer_idx=0)  # a later unit arrives
    target_view = cache.target_view(snapshot)
    keys, values = target_view.update(*kv(2, 9), layer_idx=0)
    assert keys.shape[-2] == 5 + 2  # source prefix of the snapshot, then target: each key once
    assert torch.all(keys[..., :5, :] == 1) and torch.all(keys[..., 5:, :] == 9)
    assert target_view.get_seq_length(0) == 7 and target_view.get_mask_sizes(1, 0) == (8, 0)
    assert cache.get_seq_length(0) == 8 + 2  # the whole cache: all source + all target


def test_snapshot_survives_buffer_growth(cache):
    view = cache.source_view()
    view.update(*kv(16, 1), layer_idx=0)
    snapshot = cache.snapshot()
    old_buffer = cache.layers[0].source.keys
    view.update(*kv(40, 2), layer_idx=0)  # forces a regrow: a new buffer
    assert cache.layers[0].source.keys is not old_buffer
    keys, _ = snapshot.prefix(0)
    assert keys.shape[-2] == 16 and torch.all(keys == 1)


def test_append_is_amortised(cache):
    view, grows = cache.source_view(), 0
    for _ in range(1000):
        before = cache.layers[0].source.keys
        view.update(*kv(1), layer_idx=0)
        grows += cache.layers[0].source.keys is not before
    assert cache.source_length == 1000 and grows <= 8  # doubling: log2(1000/16) + 1 reallocations


def test_crop_reorder_select_reset(cache):
    cache.source_view().update(*kv(4, batch=2), layer_idx=0)
    cache.update(*kv(3, batch=2), layer_idx=0)  # plain use: writes to the target against the whole source
    cache.crop(-2)
    assert cache.get_seq_length(0) == 5 and cache.target_length == 1
    with pytest.raises(ValueError, match="negative"):
        cache.crop(2)
    source_before = cache.layers[0].source.prefix()[0].clone()
    cache.reorder_cache(torch.tensor([1, 0]))
    assert torch.equal(cache.layers[0].source.prefix()[0], source_before.flip(0))
    cache.batch_select_indices(torch.tensor([0]))
    assert cache.layers[0].source.prefix()[0].shape[0] == 1
    cache.next_source_position = 10
    cache.reset()
    assert cache.get_seq_length(0) == 0 and cache.next_source_position == 0 and cache.unit_snapshots == []


def test_reader_appends_while_writer_reads_its_snapshot(cache):
    """One reader thread appends 200 chunks while the writer keeps attending to a fixed snapshot."""
    cache.source_view().update(*kv(8, 1), layer_idx=0)
    snapshot = cache.snapshot()
    target_view, errors = cache.target_view(snapshot), []

    def reader():
        view = cache.source_view()
        for i in range(200):
            view.update(*kv(3, 2 + i), layer_idx=0)

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(200):
        keys, _ = target_view.update(*kv(1, -1), layer_idx=0)
        if not torch.all(keys[..., :8, :] == 1):
            errors.append("snapshot prefix changed")
        target_view.layers[0].layer.target.crop(-1)
    thread.join()
    assert not errors and cache.source_length == 8 + 600


def test_generate_with_streaming_cache_equals_dynamic_cache(model, processor):
    ids = torch.tensor([processor.encode_text("What color is the ball?")])
    kwargs = dict(max_new_tokens=6, do_sample=False)
    plain = model.generate(ids, past_key_values=DynamicCache(config=model.config), **kwargs)
    streaming = model.generate(ids, past_key_values=model.new_stream_cache(), **kwargs)
    assert torch.equal(plain, streaming)
