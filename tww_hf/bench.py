"""Benchmarks: `tww bench attention` — the routing decision, kernel time and max error per attention case."""

import json
import sys
import time

import numpy as np
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


# --------------------------------------------------------------------------------------------- tww bench overlap
def _bench_model(hidden_size: int, num_layers: int):
    from .tiny import tiny_model, tiny_processor

    processor = tiny_processor(max_video_tokens=16)
    model = tiny_model(seed=0, processor=processor, hidden_size=hidden_size, num_layers=num_layers, vision_depth=2)
    return model, processor


def _measure_rates(model, processor, frame, answer_tokens: int, segments: int) -> tuple[float, float]:
    """Calibration on a run as long as the benchmark's, interleaved and flat out: the mean per-segment service time
    (read + its one-token note; it grows with the context, so the mean over the whole run is used) and the decode
    time of `answer_tokens` answer tokens at mid-run (T_gen)."""
    from .modeling.sources_tww import FixedSegmenter

    times = [i * 0.5 for i in range(2 * segments)]
    events = list(model.stream_generate(
        processor, np.stack([frame] * len(times)), [(times[len(times) // 2] + 1e-3, "What moved?")],
        timestamps=times, segmenter=FixedSegmenter(0.99), max_note_tokens=1, max_answer_tokens=answer_tokens,
        min_answer_tokens=answer_tokens, overlap=False,
    ))
    answer = next(e for e in events if e.kind == "answer")
    t_gen = answer.done - answer.first_token
    wall = events[-1].wall - t_gen
    return wall / segments, t_gen


def _overlap_run(model, processor, frame, rho: float, read_s: float, answer_tokens: int, segments: int,
                 overlap: bool) -> dict:
    from .modeling.sources_tww import FixedSegmenter

    duration = read_s / rho  # seconds of video per segment: arrival rate lambda = rho * mu
    times = [i * duration / 2 for i in range(2 * segments)]
    questions = [(times[int(len(times) * f)] + 1e-3, "What moved?") for f in (0.15, 0.5)]
    events = list(model.stream_generate(
        processor, np.stack([frame] * len(times)), questions, timestamps=times, realtime=True, overlap=overlap,
        segmenter=FixedSegmenter(duration * 0.99), max_note_tokens=1, max_answer_tokens=answer_tokens,
        min_answer_tokens=answer_tokens,
    ))
    reads = [(e.arrival, e.lag) for e in events if e.kind == "segment"]
    answers = [e for e in events if e.kind == "answer"]
    catch_up = []
    for answer in answers:  # first segment after the answer whose lag is back within one segment duration
        done = answer.arrival + answer.done
        later = [(arrival, lag) for arrival, lag in reads if arrival >= done and lag <= duration]
        catch_up.append(later[0][0] - done if later else float("nan"))
    return {"rho": rho, "mode": "overlapped" if overlap else "interleaved", "segment_s": duration,
            "max_lag": max(lag for _, lag in reads), "mean_lag": float(np.mean([lag for _, lag in reads])),
            "question_latency": [a.done for a in answers], "t_gen": float(np.mean([a.done - a.first_token
                                                                                     for a in answers])),
            "catch_up": catch_up, "lags": reads}


def run_overlap_bench(rhos=(0.5, 0.8, 0.9), segments: int = 120, answer_tokens: int = 48, hidden_size: int = 768,
                      num_layers: int = 4, plot: str | None = "overlap_bench.png", json_output: bool = False) -> int:
    """Ingest lag and question latency, overlapped vs interleaved, at load factors rho, next to the queueing
    prediction T_catch = rho / (1 - rho) * T_gen (docs/paper.md §1.3)."""
    torch.set_num_threads(1)  # one core for the reader, one for the writer: a 2-core machine runs them in parallel
    sys.setswitchinterval(5e-4)  # hand the GIL over quickly between the reader's and the writer's Python steps
    model, processor = _bench_model(hidden_size, num_layers)
    frame = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    read_s, t_gen = _measure_rates(model, processor, frame, answer_tokens, segments)
    rows = [_overlap_run(model, processor, frame, rho, read_s, answer_tokens, segments, overlap)
            for rho in rhos for overlap in (False, True)]
    for row in rows:
        row["predicted_t_catch"] = row["rho"] / (1 - row["rho"]) * row["t_gen"]
    if json_output:
        print(json.dumps({"read_s": read_s, "t_gen": t_gen, "rows": rows}, indent=2))
    else:
        _print_overlap_table(read_s, t_gen, rows)
    if plot:
        _plot_overlap(rows, plot)
    return 0


def _print_overlap_table(read_s: float, t_gen: float, rows: list[dict]) -> None:
    print(f"tww bench overlap: interleaved per-segment service (read + note, mean over the run) {read_s * 1e3:.1f} ms "
          f"(mu = {1 / read_s:.1f} segments/s), "
          f"answer decode T_gen {t_gen:.2f} s, torch threads 1 per stage")
    print("| rho | segment (s) | mode | max lag (s) | mean lag (s) | question latency (s) | catch-up (s) | "
          "predicted T_catch (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        latency = ", ".join(f"{x:.2f}" for x in row["question_latency"])
        catch = ", ".join(f"{x:.2f}" for x in row["catch_up"])
        print(f"| {row['rho']} | {row['segment_s']:.3f} | {row['mode']} | {row['max_lag']:.2f} | "
              f"{row['mean_lag']:.3f} | {latency} | {catch} | {row['predicted_t_catch']:.2f} |")


def _plot_overlap(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'tww-hf[all]'); skipping the plot.")
        return
    rhos = sorted({row["rho"] for row in rows})
    figure, axes = plt.subplots(1, len(rhos), figsize=(5 * len(rhos), 3.5), squeeze=False)
    for axis, rho in zip(axes[0], rhos):
        for row in (r for r in rows if r["rho"] == rho):
            arrivals, lags = zip(*row["lags"])
            axis.plot(arrivals, lags, label=row["mode"])
        axis.axhline(next(r["segment_s"] for r in rows if r["rho"] == rho), color="grey", ls=":", label="1 segment")
        axis.set(title=f"rho = {rho}", xlabel="stream time (s)", ylabel="ingest lag (s)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")
