"""The `tww` command line: convert, watch, demo, bench."""

import argparse
import json
import sys
import tempfile
from pathlib import Path


def parse_question(text: str) -> tuple[float, str]:
    """'12.5: Who took the corner?' -> (12.5, 'Who took the corner?')."""
    time, sep, question = text.partition(":")
    try:
        seconds = float(time)
    except ValueError:
        seconds = None
    if not sep or seconds is None or seconds < 0 or not question.strip():
        raise argparse.ArgumentTypeError(
            f"--ask takes 'SECONDS: question', e.g. '12.5: What color is the ball?'; got {text!r}."
        )
    return seconds, question.strip()


def load_model_and_processor(path: str | None):
    """A checkpoint folder (remote code allowed), or the tiny random model when `path` is None."""
    import tww_hf  # noqa: F401  (registers the Auto classes)

    if path is None:
        from .tiny import tiny_model, tiny_processor

        processor = tiny_processor()
        return tiny_model(processor=processor), processor
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(path, trust_remote_code=True)


def build_units(processor, frames, times, questions, segment_seconds: float):
    """Segments cut at question times (and at the end of the video), re-cut to `segment_seconds`; questions placed
    after every segment that ends at or before their time."""
    from .video import question_aligned_segments

    cuts = [t for t, _ in questions] + [times[-1]]
    spans = question_aligned_segments(times, cuts, max_seconds=segment_seconds, recut_seconds=segment_seconds)
    events = [(times[end - 1], 0, ("segment", start, end)) for start, end in spans]
    events += [(t, 1, ("question", t, q)) for t, q in questions]
    units = []
    for _, _, item in sorted(events, key=lambda e: (e[0], e[1])):
        if item[0] == "segment":
            _, start, end = item
            units.append(processor.encode_segment(frames[start:end], times[start:end]))
        else:
            units.append(processor.encode_question(item[2], item[1]))
    return processor.build_source(units)


def print_event(event: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
    elif event["event"] == "read":
        print(f"[{event['time']:7.1f}s] read {event['kind']:<8} (source {event['source_tokens']} tokens)", flush=True)
    elif event["event"] == "note":
        print(f"[{event['time']:7.1f}s]   note: {event['text']!r}", flush=True)
    elif event["event"] == "answer":
        print(f"[{event['time']:7.1f}s]   Q: {event['question']}\n             A: {event['text']!r}", flush=True)
    elif event["event"] == "done":
        print(f"done: {event['source_tokens']} source tokens read, {event['target_tokens']} target tokens written.")


def watch(args) -> int:
    from .modeling.engine_tww import run_serial
    from .video import read_video

    model, processor = load_model_and_processor(args.model)
    if args.model is None and not args.json:
        print("No --model given: using a tiny RANDOM model; the stream is real, its notes and answers are noise.")
    frames, times = read_video(args.video, fps=args.fps)
    units = build_units(processor, frames, times, args.ask or [], args.segment_seconds)
    for event in run_serial(model, processor, units, args.max_note_tokens, args.max_answer_tokens):
        print_event(event, args.json)
    return 0


def demo(args) -> int:
    from .video import synthetic_frames, write_video

    print(
        "tww demo: the trained demo model does not exist yet, so this streams a generated clip through a tiny RANDOM "
        "model (real video decoding, segmentation, streaming cache and decoding; the text itself is noise)."
    )
    frames, _ = synthetic_frames(seconds=12.0, fps=2.0)
    with tempfile.TemporaryDirectory() as folder:
        clip = write_video(Path(folder) / "demo.mp4", frames, fps=2.0)
        args.video, args.model, args.fps = str(clip), None, 2.0
        args.ask = [(5.0, "What color is the square?"), (11.0, "Which way did the square move?")]
        return watch(args)


def convert(args) -> int:
    from .convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.out)
    print(f"Wrote a TWW checkpoint to {out}; load it with AutoModel.from_pretrained('{out}', trust_remote_code=True).")
    return 0


def bench(args) -> int:
    from .bench import run_attention_bench

    if args.what == "attention":
        return run_attention_bench(json_output=args.json, device=args.device, dtype=args.dtype)
    raise SystemExit(f"Unknown benchmark {args.what!r}.")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tww", description="Think While Watching on Qwen3-VL.")
    commands = parser.add_subparsers(dest="command", required=True)

    watch_parser = commands.add_parser("watch", help="stream a video file, printing notes and answers")
    watch_parser.add_argument("video")
    _add_stream_options(watch_parser)
    watch_parser.add_argument("--model", default=None, help="checkpoint folder (default: a tiny random model)")
    watch_parser.add_argument("--fps", type=float, default=1.0, help="frames kept per second")
    watch_parser.set_defaults(func=watch)

    demo_parser = commands.add_parser("demo", help="stream a generated clip (placeholder until the demo model ships)")
    _add_stream_options(demo_parser)
    demo_parser.set_defaults(func=demo)

    convert_parser = commands.add_parser("convert", help="stock Qwen3-VL checkpoint folder -> TWW checkpoint")
    convert_parser.add_argument("src")
    convert_parser.add_argument("out")
    convert_parser.set_defaults(func=convert)

    bench_parser = commands.add_parser("bench", help="benchmarks")
    bench_parser.add_argument("what", choices=["attention"])
    bench_parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    bench_parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default per device)")
    bench_parser.add_argument("--json", action="store_true")
    bench_parser.set_defaults(func=bench)
    return parser


def _add_stream_options(parser) -> None:
    parser.add_argument("--ask", action="append", type=parse_question, metavar="'SECONDS: QUESTION'")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--max-note-tokens", type=int, default=24)
    parser.add_argument("--max-answer-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"tww {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
