"""Benchmarks: `tww bench attention` — the routing decision, kernel time and max error per attention case."""

import json
import sys
import time
from pathlib import Path

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


QUESTION_AT = 0.25  # one question a quarter into the stream, the rest of the run to watch the backlog drain


def _stream(model, processor, frame, times, segment_s, answer_tokens, realtime, overlap):
    from .modeling.sources_tww import FixedSegmenter

    question = [(times[int(len(times) * QUESTION_AT)] + 1e-3, "What moved?")]
    return list(model.stream_generate(
        processor, np.stack([frame] * len(times)), question, timestamps=times, realtime=realtime, overlap=overlap,
        segmenter=FixedSegmenter(segment_s * 0.99), max_note_tokens=1, max_answer_tokens=answer_tokens,
        min_answer_tokens=answer_tokens,
    ))


def _measure_rates(model, processor, frame, answer_tokens: int, segments: int) -> tuple[float, float]:
    """Calibration: the same stream, interleaved and flat out. Returns the per-segment service time (read + its
    one-token note) averaged over the window where the backlog drains (after the question; it grows with the
    context, so a whole-run or start-of-run figure would misstate the load there), and T_gen."""
    times = [i * 0.5 for i in range(2 * segments)]
    events = _stream(model, processor, frame, times, 1.0, answer_tokens, realtime=False, overlap=False)
    answer = next(e for e in events if e.kind == "answer")
    notes = [e for e in events if e.kind == "note" and e.unit > answer.unit]
    window = notes[: max(2, segments // 3)]
    service = (window[-1].done - window[0].done) / (len(window) - 1)
    return service, answer.done - answer.first_token


def _overlap_run(model, processor, frame, rho: float, service_s: float, answer_tokens: int, segments: int,
                 overlap: bool) -> dict:
    duration = service_s / rho  # seconds of video per segment: arrival rate lambda = rho * mu
    times = [i * duration / 2 for i in range(2 * segments)]
    events = _stream(model, processor, frame, times, duration, answer_tokens, realtime=True, overlap=overlap)
    reads = [(e.arrival, e.lag) for e in events if e.kind == "segment"]
    answer = next(e for e in events if e.kind == "answer")
    decode_start = answer.arrival + answer.first_token
    # Caught up: the first segment arriving after the decode began whose lag is back within one segment duration.
    behind = [(arrival, lag) for arrival, lag in reads if arrival >= decode_start]
    back = next((arrival for arrival, lag in behind if lag <= duration and arrival > decode_start + answer.done
                 - answer.first_token), None)
    t_gen = answer.done - answer.first_token
    # While backlogged, reads run back to back: their spacing is the service time actually paid at that context.
    backlog = [arrival + lag for arrival, lag in behind if lag > duration]
    local_service = float(np.median(np.diff(backlog))) if len(backlog) >= 3 else float("nan")
    return {"rho": rho, "mode": "overlapped" if overlap else "interleaved", "segment_s": duration,
            "effective_rho": local_service / duration,
            "max_lag": max(lag for _, lag in reads), "mean_lag": float(np.mean([lag for _, lag in reads])),
            "question_latency": answer.done, "t_gen": t_gen,
            "catch_up": (back - decode_start - t_gen) if back is not None else float("nan"), "lags": reads}


def run_overlap_bench(rhos=(0.5, 0.8, 0.9), segments: int = 120, answer_tokens: int = 48, hidden_size: int = 768,
                      num_layers: int = 4, plot: str | None = "overlap_bench.png", json_output: bool = False) -> int:
    """Ingest lag and question latency, overlapped vs interleaved, at load factors rho, next to the queueing
    prediction T_catch = rho / (1 - rho) * T_gen (docs/paper.md §1.3)."""
    torch.set_num_threads(1)  # one core for the reader, one for the writer: a 2-core machine runs them in parallel
    sys.setswitchinterval(5e-4)  # hand the GIL over quickly between the reader's and the writer's Python steps
    model, processor = _bench_model(hidden_size, num_layers)
    frame = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    service_s, t_gen = _measure_rates(model, processor, frame, answer_tokens, segments)
    rows = [_overlap_run(model, processor, frame, rho, service_s, answer_tokens, segments, overlap)
            for rho in rhos for overlap in (False, True)]
    for row in rows:
        row["predicted_t_catch"] = row["rho"] / (1 - row["rho"]) * t_gen
        effective = row["effective_rho"]
        row["predicted_t_catch_effective"] = effective / (1 - effective) * t_gen if effective < 1 else float("nan")
        row["predicted_backlog_lag"] = t_gen + row["segment_s"]  # a segment arriving as decoding starts waits T_gen
    if json_output:
        print(json.dumps({"service_s": service_s, "t_gen": t_gen, "rows": rows}, indent=2))
    else:
        _print_overlap_table(service_s, t_gen, rows)
    if plot:
        _plot_overlap(rows, plot)
    return 0


def _print_overlap_table(service_s: float, t_gen: float, rows: list[dict]) -> None:
    print(f"tww bench overlap: interleaved service per segment (read + note, where the backlog drains) "
          f"{service_s * 1e3:.1f} ms (mu = {1 / service_s:.1f}/s); answer decode T_gen {t_gen:.2f} s; "
          "1 torch thread per stage")
    print("| rho | segment (s) | mode | max lag (s) | mean lag (s) | question latency (s) | catch-up after decode (s) "
          "| predicted T_catch (s) | effective rho in backlog | T_catch at effective rho (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['rho']} | {row['segment_s']:.3f} | {row['mode']} | {row['max_lag']:.2f} | "
              f"{row['mean_lag']:.3f} | {row['question_latency']:.2f} | {row['catch_up']:.2f} | "
              f"{row['predicted_t_catch']:.2f} | {row['effective_rho']:.2f} | "
              f"{row['predicted_t_catch_effective']:.2f} |")


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


# ----------------------------------------------------------------------------------------------- tww bench train
def _bench_records(count: int, segments: int, seed: int = 0) -> list[dict]:
    """In-memory records: `segments` 2-s segments (4 frames at 2 fps) with a question after every second one."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        frames = rng.integers(0, 256, (4 * segments, 64, 64, 3), dtype=np.uint8)
        times = [i * 0.5 for i in range(4 * segments)]
        units = []
        for k in range(segments):
            units.append({"kind": "segment", "start": 2.0 * k, "end": 2.0 * k + 1.5,
                          "note": "a red square moves to the left of the blue circle"})
            if k % 2 == 1:
                units.append({"kind": "question", "time": 2.0 * k + 1.5, "question": "Which way did it move?",
                              "answer": "The square moved left, then stopped.\nAnswer: B"})
        records.append({"id": f"bench-{index}", "frames": frames, "timestamps": times, "units": units})
    return records


def _step_ms(model, batch, optimizer, repeats: int) -> float:
    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1e3


def run_train_bench(batch_size: int = 4, segments: int = 6, repeats: int = 5, json_output: bool = False) -> int:
    """Collator throughput, and training step time with the streaming mask vs plain causal on the same tokens."""
    from .tiny import tiny_model, tiny_processor
    from .trainer.collator import TWWDataCollator

    processor = tiny_processor()
    collator = TWWDataCollator(processor)
    records = _bench_records(batch_size * repeats, segments)
    start = time.perf_counter()
    batches = [collator(records[i : i + batch_size]) for i in range(0, len(records), batch_size)]
    samples_per_s = len(records) / (time.perf_counter() - start)
    model = tiny_model(seed=0, processor=processor).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    streaming = batches[0]
    causal = {**streaming, "attention_mask": None}  # same tokens and positions, plain causal attention
    attention.ROUTER.reset_counts()
    streaming_ms = _step_ms(model, streaming, optimizer, repeats)
    causal_ms = _step_ms(model, causal, optimizer, repeats)
    result = {"batch_size": batch_size, "tokens_per_sample": int(streaming["input_ids"].shape[1]),
              "collator_samples_per_s": samples_per_s, "streaming_step_ms": streaming_ms,
              "causal_step_ms": causal_ms, "routes": {f"{c}/{b}": n for (c, b), n in attention.ROUTER.counts.items()}}
    if json_output:
        print(json.dumps(result, indent=2))
        return 0
    print(f"tww bench train: tiny model, batch {batch_size} x {result['tokens_per_sample']} tokens "
          f"({segments} segments, {segments // 2} questions per sample), CPU threads {torch.get_num_threads()}")
    print("| measure | value |\n|---|---|")
    print(f"| collator throughput | {samples_per_s:.1f} samples/s |")
    print(f"| train step, streaming mask | {streaming_ms:.1f} ms |")
    print(f"| train step, plain causal (same tokens) | {causal_ms:.1f} ms |")
    print(f"| streaming / causal | {streaming_ms / causal_ms:.2f}x |")
    print(f"| attention routes | {result['routes']} |")
    return 0


# ------------------------------------------------------------------------------------------------ tww bench data
def run_data_bench(num: int = 20, json_output: bool = False) -> int:
    """Generation speed and sizes of each synthetic stage (records, units, events, tokens, video bytes)."""
    import tempfile

    from .synth import synthesize
    from .tiny import tiny_processor
    from .trainer.collator import TWWDataCollator

    rows = []
    collator = TWWDataCollator(tiny_processor())
    with tempfile.TemporaryDirectory() as folder:
        for stage in (1, 2, 3):
            start = time.perf_counter()
            path, problems = synthesize(stage, num, folder, seed=1000, progress=False)
            seconds = time.perf_counter() - start
            records = [json.loads(line) for line in path.open()]
            for record in records:
                record["_root"] = folder
            tokens = [len(s.source_ids) + len(s.target_ids) for s in map(collator.encode, records[:5])]
            clips = sum((Path(folder) / r["video"]).stat().st_size for r in records)
            rows.append({
                "stage": stage, "records": len(records), "dropped": len(problems),
                "ms_per_record": seconds / num * 1e3,
                "seconds_of_video": float(np.mean([r["world"]["duration"] for r in records])),
                "segments": float(np.mean([sum(u["kind"] == "segment" for u in r["units"]) for r in records])),
                "questions": float(np.mean([sum(u["kind"] == "question" for u in r["units"]) for r in records])),
                "tokens_per_record": float(np.mean(tokens)), "video_kb_per_record": clips / len(records) / 1024,
            })
    if json_output:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"tww bench data: {num} records per stage (rendering + mp4 encoding + validation)")
    print("| stage | ms / record | video (s) | segments | questions | tokens | mp4 (KB) | dropped |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['ms_per_record']:.1f} | {row['seconds_of_video']:.1f} | {row['segments']:.1f} "
              f"| {row['questions']:.1f} | {row['tokens_per_record']:.0f} | {row['video_kb_per_record']:.1f} | "
              f"{row['dropped']} |")
    return 0


# ------------------------------------------------------------------------------------------------ tww bench eval
def run_eval_bench(videos: int = 3, seconds: float = 60.0, probes_per_video: int = 6, fps: float = 2.0,
                   json_output: bool = False) -> int:
    """Wall time of one-pass multi-round evaluation vs what the official harnesses do (re-cut and re-encode the
    clip [0, t] for every probe, then answer from scratch), on the same probes and model (tiny, CPU)."""
    import tempfile

    from .evaluation.runner import EvalRun
    from .modeling.sources_tww import QuestionAlignedSegmenter
    from .tiny import tiny_model, tiny_processor
    from .video import read_video, write_video
    from .world import generate_world

    processor = tiny_processor()
    model = tiny_model(seed=0, processor=processor)
    decode = {"max_note_tokens": 8, "max_answer_tokens": 8}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        probes = []
        for v in range(videos):
            write_video(root / f"v{v}.mp4", generate_world(v, duration=seconds, fps=fps).render(), fps=fps)
            for k in range(probes_per_video):
                time_s = seconds * (k + 1) / (probes_per_video + 1)
                probes.append({"id": f"v{v}/{k}", "benchmark": "ovobench", "task": "EPM", "category": "bench",
                               "video": f"v{v}.mp4", "time": time_s, "question": "What color is the square?\nA. red"
                               "\nB. green", "answer": "A", "kind": "mcq", "extra": {}})
        start = time.perf_counter()
        EvalRun(model, processor, probes, root, root / "out", fps=fps, progress=False, **decode).run()
        one_pass = time.perf_counter() - start
        start = time.perf_counter()
        for probe in probes:
            frames, times = read_video(root / probe["video"], fps=fps)
            keep = [i for i, t in enumerate(times) if t <= probe["time"]]
            clip = write_video(root / "clip.mp4", frames[keep], fps=fps)  # the per-probe re-cut and re-encode
            clip_frames, clip_times = read_video(clip, fps=fps)
            segmenter = QuestionAlignedSegmenter(question_times=[probe["time"]])
            list(model.stream_generate(processor, clip_frames, [(clip_times[-1], probe["question"])],
                                       timestamps=clip_times, segmenter=segmenter, **decode))
        per_probe = time.perf_counter() - start
    result = {"videos": videos, "seconds_per_video": seconds, "probes": len(probes), "one_pass_s": one_pass,
              "per_probe_reencode_s": per_probe, "speedup": per_probe / one_pass}
    if json_output:
        print(json.dumps(result, indent=2))
        return 0
    print(f"tww bench eval: {videos} videos x {seconds:.0f} s at {fps} fps, {len(probes)} probes, tiny model, CPU")
    print("| run | wall (s) |\n|---|---|")
    print(f"| one pass per video (multi-round) | {one_pass:.1f} |")
    print(f"| per-probe re-cut + re-encode + answer (official harness style) | {per_probe:.1f} |")
    print(f"| ratio | {per_probe / one_pass:.2f}x |")
    return 0
