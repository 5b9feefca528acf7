"""Benchmarks: `tww bench attention` — the routing decision, kernel time and max error per attention case."""

import json
import time

import torch

from .modeling import attention_tww as attention


class _Module:
    """Stands in for an attention module: the router only reads `is_causal`."""

    def __init__(self, is_causal: bool):
        self.is_causal = is_causal


# (case, q_len, k_len, causal, with_mask): Qwen3-VL-4B-like heads (32 query, 8 KV, head_dim 128).
CASES = [
    ("prefill", 1024, 1024, True, False),
    ("decode", 1, 4096, True, False),
    ("chunk", 256, 4096, True, False),
    ("masked", 1024, 1024, True, True),
    ("vision", 256, 256, False, False),
]


def _inputs(q_len, k_len, with_mask, device, dtype, heads=32, kv_heads=8, dim=128):
    generator = torch.Generator(device="cpu").manual_seed(0)
    query = torch.randn(1, heads, q_len, dim, generator=generator).to(device, dtype)
    key = torch.randn(1, kv_heads, k_len, dim, generator=generator).to(device, dtype)
    value = torch.randn(1, kv_heads, k_len, dim, generator=generator).to(device, dtype)
    mask = None
    if with_mask:  # a streaming-like irregular mask: causal, with a block of source keys hidden from later rows
        mask = torch.ones(q_len, k_len, dtype=torch.bool).tril()
        mask[q_len // 2 :, q_len // 4 : q_len // 2] = False
        mask = mask[None, None].to(device)
    return query, key, value, mask


def _time(fn, device, repeats: int) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def measure_case(case, q_len, k_len, causal, with_mask, device, dtype, repeats):
    query, key, value, mask = _inputs(q_len, k_len, with_mask, device, dtype)
    module = _Module(causal)
    scaling = query.shape[-1] ** -0.5
    attention.ROUTER.reset_counts()
    out, _ = attention.tww_adaptive_attention(module, query, key, value, mask, scaling=scaling)
    ((_, backend),) = attention.ROUTER.counts
    name = "vision" if case == "vision" else case
    reference = attention.KERNELS["eager"](query.float(), key.float(), value.float(), mask, name, scaling, 0.0)
    milliseconds = _time(
        lambda: attention.tww_adaptive_attention(module, query, key, value, mask, scaling=scaling), device, repeats
    )
    _, reason = attention.decide(name, query.device.type, query.dtype, attention.ROUTER.forced)
    return {
        "case": case,
        "q_len": q_len,
        "k_len": k_len,
        "backend": backend,
        "reason": reason,
        "ms": round(milliseconds, 3),
        "max_abs_diff_vs_fp32_math": float((out.float() - reference).abs().max()),
    }


def run_attention_bench(json_output: bool = False, device: str | None = None, dtype: str | None = None) -> int:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    repeats = 20 if device == "cuda" else 3
    rows = [measure_case(*spec, device=device, dtype=dtype, repeats=repeats) for spec in CASES]
    if json_output:
        print(
            json.dumps(
                {"device": device, "dtype": str(dtype), "available": attention.backend_availability(), "rows": rows},
                indent=2,
            )
        )
        return 0
    print(
        f"tww bench attention on {device} ({dtype}); available backends: "
        + ", ".join(name for name, ok in attention.backend_availability().items() if ok)
    )
    print("| case | q_len | k_len | backend | why | ms | max diff vs fp32 math |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['q_len']} | {row['k_len']} | {row['backend']} | {row['reason']} | "
            f"{row['ms']:.3f} | {row['max_abs_diff_vs_fp32_math']:.2e} |"
        )
    return 0
