"""`tww_adaptive`: one attention function that routes each call to the kernel that fits its shape and mask.

| case    | when                                         | GPU route                        | CPU fallback            |
|---------|----------------------------------------------|----------------------------------|-------------------------|
| prefill | causal, no mask, q_len == k_len              | flash-attn causal                | SDPA is_causal          |
| decode  | causal, no mask, q_len == 1 < k_len          | flash-attn, no mask              | SDPA, no mask           |
| chunk   | causal, no mask, 1 < q_len < k_len           | flash-attn causal (bottom-right) | SDPA + bottom-right     |
| masked  | an explicit mask (packed streaming training) | xformers, else SDPA EFFICIENT    | SDPA + mask             |
| vision  | not causal (the vision tower)                | flash-attn                       | SDPA                    |

Streaming inference only produces the first three cases: a read attends to the whole source, a write to exactly
`source[:limit] ‖ target` (the cache view returns only visible keys), so both are plain bottom-right causal.
SDPA's `is_causal=True` is top-left aligned, so it is never used when q_len != k_len.

Decisions are cached by their inputs, counted (`ROUTER.counts`), and logged with their reason when they fall back.
A backend forced with `set_attention_backend` that cannot run raises instead of falling back.
Registered together with its mask builder: an attention name without a mask builder silently gets no mask.
"""

import importlib.util
import logging
import threading
from collections import Counter
from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, prepare_padding_mask, sdpa_mask


logger = logging.getLogger(__name__)

ATTENTION_NAME = "tww_adaptive"
BACKENDS = ("flash", "xformers", "sdpa_efficient", "sdpa", "eager")
CASES = ("prefill", "decode", "chunk", "masked", "vision")
_HALF = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------- availability probes
@lru_cache
def is_cuda_available() -> bool:
    return torch.cuda.is_available()


@lru_cache
def is_flash_attn_available() -> bool:
    """flash-attn installed, importable (its CUDA extension loads) and a CUDA device present."""
    if importlib.util.find_spec("flash_attn") is None or not is_cuda_available():
        return False
    try:
        from flash_attn import flash_attn_func  # noqa: F401
    except Exception as error:  # a CPU-built or ABI-mismatched wheel fails here, not at find_spec
        logger.info("flash-attn is installed but cannot be imported (%s); it will not be used.", error)
        return False
    return True


@lru_cache
def is_xformers_available() -> bool:
    """xformers installed, importable and a CUDA device present (its kernels are CUDA-only)."""
    if importlib.util.find_spec("xformers") is None or not is_cuda_available():
        return False
    try:
        import xformers.ops  # noqa: F401
    except Exception as error:
        logger.info("xformers is installed but cannot be imported (%s); it will not be used.", error)
        return False
    return True


def backend_availability() -> dict[str, bool]:
    return {
        "flash": is_flash_attn_available(),
        "xformers": is_xformers_available(),
        "sdpa_efficient": is_cuda_available(),
        "sdpa": True,
        "eager": True,
    }


# --------------------------------------------------------------------------------------------------- the router
class AttentionRouter:
    """Process-wide routing state: an optional forced backend and per-(case, backend) call counts (thread-safe)."""

    def __init__(self):
        self.forced: str | None = None
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, case: str, backend: str) -> None:
        with self._lock:
            self.counts[(case, backend)] += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()


ROUTER = AttentionRouter()


def set_attention_backend(name: str | None) -> None:
    """Forces every `tww_adaptive` call onto one backend (`None` or "auto": route by shape). Process-wide."""
    if name in (None, "auto"):
        ROUTER.forced = None
        return
    if name not in BACKENDS:
        raise ValueError(f"Unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)} or 'auto'.")
    ROUTER.forced = name


def classify(query: torch.Tensor, key: torch.Tensor, attention_mask, is_causal: bool) -> str:
    """The routing case of one call (see the module table)."""
    if attention_mask is not None:
        return "masked"
    if not is_causal:
        return "vision"
    q_len, k_len = query.shape[-2], key.shape[-2]
    if q_len == k_len:
        return "prefill"
    return "decode" if q_len == 1 else "chunk"


@lru_cache(maxsize=256)
def decide(case: str, device_type: str, dtype: torch.dtype, forced: str | None) -> tuple[str, str]:
    """(backend, reason) for a case on a device and dtype; cached, and logged once when it falls back."""
    if forced is not None:
        _check_forced(forced, case, device_type, dtype)
        return forced, "forced"
    on_cuda, half = device_type == "cuda", dtype in _HALF
    if case != "masked":
        if on_cuda and half and is_flash_attn_available():
            return "flash", "flash-attn"
        reason = _flash_missing_reason(on_cuda, half)
        backend = "sdpa"
    elif on_cuda and is_xformers_available():
        return "xformers", "irregular mask: memory-efficient attention"
    elif on_cuda:
        backend, reason = "sdpa_efficient", "xformers is not installed"
    else:
        backend, reason = "sdpa", "no CUDA device"
    logger.info("tww_adaptive: %s -> %s because %s.", case, backend, reason)
    return backend, reason


def _flash_missing_reason(on_cuda: bool, half: bool) -> str:
    if not on_cuda:
        return "no CUDA device"
    if not half:
        return "FlashAttention needs fp16/bf16 inputs"
    return "flash-attn is not installed"


def _check_forced(forced: str, case: str, device_type: str, dtype: torch.dtype) -> None:
    if forced in ("flash", "xformers", "sdpa_efficient") and device_type != "cuda":
        raise RuntimeError(f"Attention backend {forced!r} was forced but the inputs are on {device_type}, not CUDA.")
    if forced == "flash" and not is_flash_attn_available():
        raise RuntimeError(
            "Attention backend 'flash' was forced but flash-attn is not available: pip install flash-attn."
        )
    if forced == "flash" and dtype not in _HALF:
        raise RuntimeError(
            f"Attention backend 'flash' was forced but inputs are {dtype}; load the model in bf16/fp16."
        )
    if forced == "flash" and case == "masked":
        raise RuntimeError(
            "Attention backend 'flash' was forced but this call has an irregular mask flash cannot take."
        )
    if forced == "xformers" and not is_xformers_available():
        raise RuntimeError(
            "Attention backend 'xformers' was forced but xformers is not available: pip install xformers."
        )


# ------------------------------------------------------------------------------------------------------ kernels
def bottom_right_causal_mask(q_len: int, k_len: int, device) -> torch.Tensor:
    """`(q_len, k_len)` bool: query i (the last q_len of k_len tokens) sees keys 0 .. k_len - q_len + i."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`(B, H_kv, L, D)` -> `(B, H_kv * n_rep, L, D)`, the head order of transformers' `repeat_kv`."""
    if n_rep == 1:
        return states
    batch, heads, length, dim = states.shape
    return states[:, :, None].expand(batch, heads, n_rep, length, dim).reshape(batch, heads * n_rep, length, dim)


def _sdpa(query, key, value, mask, case, scaling, dropout) -> torch.Tensor:
    if case == "chunk":
        mask = bottom_right_causal_mask(query.shape[-2], key.shape[-2], query.device)
    gqa = query.shape[1] != key.shape[1]
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=case == "prefill",
        enable_gqa=gqa,
    )
    return out.transpose(1, 2)


def _sdpa_efficient(query, key, value, mask, case, scaling, dropout) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    n_rep = query.shape[1] // key.shape[1]  # EFFICIENT takes no enable_gqa: expand K/V heads
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        return _sdpa(query, repeat_kv(key, n_rep), repeat_kv(value, n_rep), mask, case, scaling, dropout)


def _eager(query, key, value, mask, case, scaling, dropout) -> torch.Tensor:
    """Reference path: explicit scores, boolean mask, fp32 softmax."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if case in ("prefill", "chunk"):
        mask = bottom_right_causal_mask(query.shape[-2], key.shape[-2], query.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2)


def _flash(query, key, value, mask, case, scaling, dropout) -> torch.Tensor:
    from flash_attn import flash_attn_func

    # flash-attn >= 2.1 aligns causal masks bottom-right; it takes GQA natively ((B, L, H, D) layout).
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    return flash_attn_func(q, k, v, dropout_p=dropout, softmax_scale=scaling, causal=case in ("prefill", "chunk"))


def _xformers(query, key, value, mask, case, scaling, dropout) -> torch.Tensor:
    import xformers.ops as xops

    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[-2]
    n_rep = heads // kv_heads
    # 5-D (B, L, G, H/G, D) layout: GQA without copying K/V (expand is a view).
    q = query.transpose(1, 2).reshape(batch, q_len, kv_heads, n_rep, dim)
    k = key.transpose(1, 2)[:, :, :, None].expand(batch, k_len, kv_heads, n_rep, dim)
    v = value.transpose(1, 2)[:, :, :, None].expand(batch, k_len, kv_heads, n_rep, dim)
    bias = None
    if mask is not None:
        # xformers wants an additive bias whose last dim is 8-aligned in memory: allocate padded, then slice.
        padded = query.new_full((batch, kv_heads, n_rep, q_len, -(-k_len // 8) * 8), float("-inf"))
        bias = padded[..., :k_len]
        bias.masked_fill_(mask.view(mask.shape[0], 1, 1, q_len, k_len).expand_as(bias), 0.0)
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout, scale=scaling)
    return out.reshape(batch, q_len, heads, dim)


KERNELS = {"flash": _flash, "xformers": _xformers, "sdpa_efficient": _sdpa_efficient, "sdpa": _sdpa, "eager": _eager}


def tww_adaptive_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs
) -> tuple[torch.Tensor, None]:
    """The `AttentionInterface` function.

    Args:
        query (`torch.Tensor` of shape `(B, H, q_len, D)`), key / value (`(B, H_kv, k_len, D)`): K/V not repeated.
        attention_mask (`torch.BoolTensor` of shape `(B, 1, q_len, k_len)`, *optional*): True = attend. `None` means
            plain causal aligned bottom-right (text) or no mask (vision).

    Returns:
        `(attn_output (B, q_len, H, D), None)`.
    """
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask > -1  # an additive 0/-inf mask from eager-style callers
    case = classify(query, key, attention_mask, causal)
    backend, _ = decide(case, query.device.type, query.dtype, ROUTER.forced)
    ROUTER.record(case, backend)
    out = KERNELS[backend](query, key, value, attention_mask, case, scaling, dropout)
    return out.contiguous(), None


def tww_adaptive_mask(
    batch_size,
    q_length,
    kv_length,
    q_offset=0,
    kv_offset=0,
    mask_function=causal_mask_function,
    attention_mask=None,
    **kwargs,
):
    """Mask builder paired with `tww_adaptive`: `None` for plain causal without padding (the attention function aligns
    it bottom-right itself), else the dense boolean mask `(B, 1, q_len, kv_len)` from `sdpa_mask`."""
    padding_mask = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    plain = mask_function is causal_mask_function and (padding_mask is None or bool(padding_mask.all()))
    if plain:
        return None
    kwargs.pop("allow_is_causal_skip", None)
    return sdpa_mask(
        batch_size,
        q_length,
        kv_length,
        q_offset,
        kv_offset,
        mask_function,
        attention_mask,
        allow_is_causal_skip=False,
        **kwargs,
    )


AttentionInterface.register(ATTENTION_NAME, tww_adaptive_attention)
AttentionMaskInterface.register(ATTENTION_NAME, tww_adaptive_mask)

__all__ = [
    "ATTENTION_NAME",
    "ROUTER",
    "backend_availability",
    "set_attention_backend",
    "tww_adaptive_attention",
    "tww_adaptive_mask",
]
