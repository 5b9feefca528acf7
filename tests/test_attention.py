"""tww_adaptive routing: the case table, fallbacks, forced backends, numerics against the eager reference."""

import pytest
import torch

from tww_hf.modeling import attention_tww as attention


class Module:
    def __init__(self, is_causal=True):
        self.is_causal = is_causal


def qkv(q_len, k_len, heads=4, kv_heads=2, dim=8, dtype=torch.float32):
    generator = torch.Generator().manual_seed(q_len * 1000 + k_len)
    make = lambda h, n: torch.randn(1, h, n, dim, generator=generator, dtype=dtype)  # noqa: E731
    return make(heads, q_len), make(kv_heads, k_len), make(kv_heads, k_len)


@pytest.fixture(autouse=True)
def clean_router():
    attention.ROUTER.reset_counts()
    attention.set_attention_backend(None)
    attention.decide.cache_clear()
    yield
    attention.set_attention_backend(None)
    attention.decide.cache_clear()


CASES = [
    ((5, 5), True, None, "prefill"),
    ((1, 9), True, None, "decode"),
    ((4, 9), True, None, "chunk"),
    ((5, 5), False, None, "vision"),
    ((5, 5), True, "mask", "masked"),
]


def mask_for(q_len, k_len):
    mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    mask[-1, 0] = False  # irregular
    return mask[None, None]


@pytest.mark.parametrize("shape, causal, mask, case", CASES)
def test_cpu_routes_to_sdpa_and_matches_eager(shape, causal, mask, case):
    query, key, value = qkv(*shape)
    mask = mask_for(*shape) if mask else None
    out, _ = attention.tww_adaptive_attention(Module(causal), query, key, value, mask)
    assert dict(attention.ROUTER.counts) == {(case, "sdpa"): 1}
    reference = attention.KERNELS["eager"](query, key, value, mask, case, query.shape[-1] ** -0.5, 0.0)
    torch.testing.assert_close(out, reference.contiguous(), atol=1e-6, rtol=0)
    assert out.shape == (1, shape[0], 4, 8)


def test_chunk_is_bottom_right_not_top_left():
    query, key, value = qkv(3, 7)
    out, _ = attention.tww_adaptive_attention(Module(), query, key, value, None)
    # The last query row sees every key: the same as attending without any mask.
    full = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1)
    )
    torch.testing.assert_close(out[:, -1], full.transpose(1, 2)[:, -1])
    top_left = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), is_causal=True
    )
    assert (out[:, 0] - top_left.transpose(1, 2)[:, 0]).abs().max() > 1e-3


def test_gpu_routes_with_fake_kernels(monkeypatch):
    """The routing table on a (pretend) CUDA device with flash-attn and xformers present; spies replace kernels."""
    called = []
    for name in ("flash", "xformers", "sdpa_efficient", "sdpa"):
        monkeypatch.setitem(
            attention.KERNELS,
            name,
            lambda q, k, v, m, case, s, d, name=name: called.append((case, name)) or q.transpose(1, 2),
        )
    monkeypatch.setattr(attention, "is_flash_attn_available", lambda: True)
    monkeypatch.setattr(attention, "is_xformers_available", lambda: True)
    decide = attention.decide.__wrapped__
    assert decide("prefill", "cuda", torch.bfloat16, None)[0] == "flash"
    assert decide("decode", "cuda", torch.float16, None)[0] == "flash"
    assert decide("chunk", "cuda", torch.bfloat16, None)[0] == "flash"
    assert decide("vision", "cuda", torch.bfloat16, None)[0] == "flash"
    assert decide("masked", "cuda", torch.bfloat16, None)[0] == "xformers"
    assert decide("prefill", "cuda", torch.float32, None) == ("sdpa", "FlashAttention needs fp16/bf16 inputs")
    monkeypatch.setattr(attention, "is_xformers_available", lambda: False)
    assert decide("masked", "cuda", torch.bfloat16, None) == ("sdpa_efficient", "xformers is not installed")
    monkeypatch.setattr(attention, "is_flash_attn_available", lambda: False)
    assert decide("chunk", "cuda", torch.bfloat16, None) == ("sdpa", "flash-attn is not installed")


def test_fallback_is_logged_with_its_reason(caplog):
    with caplog.at_level("INFO", logger=attention.__name__):
        attention.decide("chunk", "cpu", torch.float32, None)
    assert "chunk -> sdpa because no CUDA device" in caplog.text


@pytest.mark.parametrize("forced", ["flash", "xformers", "sdpa_efficient"])
def test_forced_missing_backend_raises(forced):
    attention.set_attention_backend(forced)
    query, key, value = qkv(2, 2)
    with pytest.raises(RuntimeError, match=forced):
        attention.tww_adaptive_attention(Module(), query, key, value, None)


def test_forced_available_backend_is_used_and_unknown_rejected():
    attention.set_attention_backend("eager")
    query, key, value = qkv(4, 9)
    attention.tww_adaptive_attention(Module(), query, key, value, None)
    assert dict(attention.ROUTER.counts) == {("chunk", "eager"): 1}
    with pytest.raises(ValueError, match="Unknown attention backend 'flash3'"):
        attention.set_attention_backend("flash3")


def test_mask_builder_skips_plain_causal_only():
    assert attention.tww_adaptive_mask(1, 4, 9, q_offset=5) is None
    padded = torch.tensor([[False, True, True, True, True, True]])
    built = attention.tww_adaptive_mask(1, 6, 6, attention_mask=padded)
    assert built.shape == (1, 1, 6, 6) and not built[0, 0, :, 0].any()


def test_model_level_eager_equals_sdpa(model, processor):
    ids = torch.tensor([processor.encode_text("What color is the ball?")])
    with torch.no_grad():
        routed = model(input_ids=ids).logits
        attention.set_attention_backend("eager")
        eager = model(input_ids=ids).logits
    torch.testing.assert_close(routed, eager, atol=1e-5, rtol=0)
