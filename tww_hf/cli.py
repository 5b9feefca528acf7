"""The `tww` command line: convert, watch, demo, bench."""

import argparse
import json
import sys
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


def make_segmenter(name: str, seconds: float, questions):
    from .video import FixedSegmenter, QuestionAlignedSegmenter, SceneChangeSegmenter

    if name == "scene":
        return SceneChangeSegmenter(seconds=seconds)
    if name == "question":
        return QuestionAlignedSegmenter(seconds=seconds, question_times=[t for t, _ in questions])
    return FixedSegmenter(seconds=seconds)


def format_event(event) -> str | None:
    """A human-readable line per event; streamed answer tokens are left to --json (threads interleave them)."""
    kind = event.kind
    if kind == "segment":
        return f"[{event.end:7.1f}s] read segment {event.start:.1f}-{event.end:.1f}s (lag {event.lag:.2f}s)"
    if kind == "question":
        return f"[{event.arrival:7.1f}s] Q: {event.text}"
    if kind == "note":
        return f"[{event.segment_end:7.1f}s]   note: {event.text!r}"
    if kind == "answer":
        first = f"{event.first_token:.2f}s" if event.first_token is not None else "-"
        return (f"[{event.arrival:7.1f}s]   A: {event.text!r}\n"
                f"             answered in {event.done:.2f}s (first token after {first}, "
                f"{event.ttft_tokens} tokens processed before it, {event.tokens} generated)")
    if kind == "error":
        return f"  ! {event.message}"
    if kind == "summary":
        latency = ", ".join(f"{x:.2f}s" for x in event.question_latency) or "-"
        return (f"summary: {event.units} units, {event.note_tokens} note + {event.answer_tokens} answer tokens, "
                f"lag max {event.max_lag:.2f}s mean {event.mean_lag:.2f}s, question latency {latency}, "
                f"{event.wall:.1f}s wall ({'overlapped' if event.overlap else 'interleaved'})")
    return None


def stream_and_print(model, processor, video, questions, args) -> int:
    events = model.stream_generate(
        processor, video, questions, overlap=not args.no_overlap, realtime=args.realtime, fps=args.fps,
        segmenter=make_segmenter(args.segmenter, args.segment_seconds, questions),
        max_note_tokens=args.max_note_tokens, max_answer_tokens=args.max_answer_tokens,
    )
    errors = 0
    for event in events:
        errors += event.kind == "error"
        if args.json:
            print(json.dumps(event.to_dict()), flush=True)
        elif (line := format_event(event)) is not None:
            print(line, flush=True)
    return 1 if errors else 0


def watch(args) -> int:
    model, processor = load_model_and_processor(args.model)
    if args.model is None and not args.json:
        print("No --model given: using a tiny RANDOM model; the stream is real, its notes and answers are noise.")
    video = args.video
    if not Path(video).is_file() and "://" not in video and not video.startswith("/dev/"):
        raise FileNotFoundError(f"Video file {video} does not exist.")
    return stream_and_print(model, processor, video, args.ask or [], args)


def demo(args) -> int:
    from .demo import run_demo

    run_demo(model_path=args.model, video=args.video, questions=args.ask, seed=args.seed, realtime=args.realtime,
             overlap=not args.no_overlap, max_note_tokens=args.max_note_tokens,
             max_answer_tokens=args.max_answer_tokens, json_output=args.json, segment_seconds=args.segment_seconds)
    return 0


def convert(args) -> int:
    from .convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.out)
    print(f"Wrote a TWW checkpoint to {out}; load it with AutoModel.from_pretrained('{out}', trust_remote_code=True).")
    return 0


def train(args) -> int:
    from .trainer.sft import TWWSFTConfig
    from .trainer.stages import run_curriculum, run_stage

    if args.source is None and not args.tiny:
        raise ValueError("Pass --from CHECKPOINT (a TWW checkpoint) or --tiny (a tiny random model to try it out).")
    config = TWWSFTConfig(
        output_dir=args.output, stage=args.stage, max_steps=args.max_steps, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr, lora_r=args.lora, logging_steps=1, save_strategy="no",
        use_cpu=args.cpu or not _has_cuda(), gradient_checkpointing=not args.no_gradient_checkpointing,
        seed=args.seed,
    )
    runner = run_curriculum if args.curriculum else run_stage
    out = runner(args.data, args.output, config, source=args.source, tiny=args.tiny)
    print(f"Saved {out}; load it with AutoModel.from_pretrained('{out}', trust_remote_code=True).")
    return 0


def export(args) -> int:
    from .hub_cards.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, eval_file=args.eval, repo_id=args.repo_id,
                            revision=args.revision, base_model=args.base_model)
    print(f"Hub-ready folder: {out} (card: {out / 'README.md'}). Upload it with `tww push {out} REPO_ID`.")
    return 0


def push(args) -> int:
    from .hub_cards.export import push_folder

    info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"Pushed {args.folder} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def data(args) -> int:
    from .data import RecordError, load_records, validate_record
    from .synth import causality_problems

    path = Path(args.file)
    files = sorted(path.glob("stage*.jsonl")) if path.is_dir() else [path]
    records, problems = [r for f in files for r in load_records(f)], []
    for record in records:
        try:
            validate_record(record)
        except RecordError as error:
            problems.append(str(error))
            continue
        problems += [f"record {record.get('id')!r}, {p}" for p in causality_problems(record)]
    for problem in problems:
        print(f"invalid: {problem}")
    print(f"{len(records)} records checked, {len(problems)} problems.")
    return 1 if problems else 0


def data_synth(args) -> int:
    import time

    from .synth import synthesize

    start = time.perf_counter()
    path, problems = synthesize(args.stage, args.num, args.out, seed=args.seed, size=args.size, fps=args.fps,
                                mcq_answer=args.mcq_answer, negatives=args.negatives, late_start=args.late_start,
                                busy=args.busy)
    for problem in problems:
        print(f"dropped: {problem}")
    kept = sum(1 for _ in path.open())
    print(f"Wrote {kept} stage-{args.stage} records to {path} in {time.perf_counter() - start:.1f}s "
          f"({len(problems)} problems found and dropped).")
    return 0


def data_build(args) -> int:
    from .teachers import OpenAITeacher, TransformersTeacher, build_from_annotations

    if args.teacher == "openai":
        if not args.base_url or not args.model:
            raise ValueError("--teacher openai needs --base-url (e.g. http://127.0.0.1:8000/v1) and --model.")
        teacher = OpenAITeacher(args.base_url, args.model, api_key_env=args.api_key_env)
    else:
        if not args.model:
            raise ValueError("--teacher transformers needs --model (a local chat model folder).")
        teacher = TransformersTeacher(args.model)
    path, problems = build_from_annotations(args.annotations, teacher, args.out)
    for problem in problems:
        print(f"dropped: {problem}")
    kept = sum(1 for _ in path.open())
    print(f"Wrote {kept} records to {path} ({len(problems)} dropped).")
    return 0 if kept else 1


def evaluate(args) -> int:
    if args.benchmark == "synthetic":
        return evaluate_synthetic(args)
    from .evaluation.adapters import dry_run_summary, load_probes

    if not args.annotations:
        raise ValueError(f"tww eval {args.benchmark} needs --annotations FILE (repeatable).")

    probes = load_probes(args.benchmark, args.annotations)
    if args.tasks:
        probes = [p for p in probes if p.task in set(args.tasks)]
    if args.limit:
        keep = list(dict.fromkeys(p.video for p in probes))[: args.limit]
        probes = [p for p in probes if p.video in set(keep)]
    if args.dry_run:
        print(json.dumps(dry_run_summary(probes), indent=2))
        return 0
    if not args.videos:
        raise ValueError("--videos DIR is required (the folder the annotation's video paths are relative to).")
    from .evaluation.runner import EvalRun, merge_report

    rank, world_size, state = _distributed()
    model, processor = load_model_and_processor(args.model)
    run = EvalRun(model, processor, [p.to_dict() for p in probes], args.videos, args.out, protocol=args.protocol,
                  fps=args.fps, sqa_gold_context=args.sqa_gold_context, rank=rank, world_size=world_size,
                  max_note_tokens=args.max_note_tokens, max_answer_tokens=args.max_answer_tokens)
    run.run()
    if state is not None:
        state.wait_for_everyone()
    if rank == 0:
        report = merge_report(args.out, f"{args.benchmark} ({args.protocol})")
        print((Path(args.out) / "report.md").read_text())
        if report["missing_videos"]:
            print(f"{len(report['missing_videos'])} videos missing or unreadable; listed in {args.out}/report.json.")
    return 0


def evaluate_synthetic(args) -> int:
    from .demo import PACKAGED, default_model_path
    from .evaluation.synthetic import run_synthetic_eval, synthetic_table

    path = args.model
    if path is None and (PACKAGED / "model.safetensors").is_file():
        path = str(default_model_path())  # the embedded demo model
    model, processor = load_model_and_processor(path)
    if path is None and not args.json:
        print("No --model given and no demo model shipped: evaluating the tiny RANDOM model (expect chance level).")
    if args.teacher_forced:
        from .evaluation.forced import forced_notes_table, forced_table, teacher_forced_answers, teacher_forced_notes

        answers = teacher_forced_answers(model, processor, num=args.num, seed=args.seed)
        notes = teacher_forced_notes(model, processor, num=args.num, seed=args.seed)
        print(json.dumps({"answers": answers, "notes_by_time": notes}, indent=2) if args.json else
              forced_table(answers, args.num, args.seed) + "\n" + forced_notes_table(notes, args.num, args.seed))
        return 0
    if args.notes:
        from .evaluation.notes import note_state_accuracy, notes_table

        result = note_state_accuracy(model, processor, num=args.num, seed=args.seed,
                                     max_note_tokens=args.max_note_tokens)
        print(json.dumps(result, indent=2) if args.json else notes_table(result, args.num, args.seed))
        return 0
    result = run_synthetic_eval(model, processor, num=args.num, seed=args.seed, out=args.out,
                                segment_seconds=args.segment_seconds,
                                max_note_tokens=args.max_note_tokens, max_answer_tokens=args.max_answer_tokens,
                                rows=args.rows)
    print(json.dumps(result, indent=2) if args.json else synthetic_table(result))
    return 0


def _distributed():
    """(rank, world size, accelerate state or None): videos are split across `accelerate launch` processes."""
    try:
        import torch
        from accelerate import PartialState
    except ImportError:
        return 0, 1, None
    # cpu=True lets `accelerate launch --multi_gpu --num_processes N` run N gloo processes on a CPU machine.
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state


def bench(args) -> int:
    from .bench import run_attention_bench, run_data_bench, run_eval_bench, run_overlap_bench, run_train_bench

    if args.what == "attention":
        return run_attention_bench(json_output=args.json, device=args.device, dtype=args.dtype)
    if args.what == "overlap":
        return run_overlap_bench(segments=args.segments, plot=args.plot, json_output=args.json)
    if args.what == "train":
        return run_train_bench(json_output=args.json)
    if args.what == "data":
        return run_data_bench(json_output=args.json)
    if args.what == "eval":
        return run_eval_bench(json_output=args.json)
    raise SystemExit(f"Unknown benchmark {args.what!r}.")


def make_parser() -> argparse.ArgumentParser:
    from .evaluation.synthetic import ROW_NAMES

    parser = argparse.ArgumentParser(prog="tww", description="Think While Watching on Qwen3-VL.")
    commands = parser.add_subparsers(dest="command", required=True)

    watch_parser = commands.add_parser("watch", help="stream a video file, printing notes and answers")
    watch_parser.add_argument("video")
    _add_stream_options(watch_parser)
    watch_parser.add_argument("--model", default=None, help="checkpoint folder (default: a tiny random model)")
    watch_parser.add_argument("--fps", type=float, default=1.0, help="frames kept per second")
    watch_parser.set_defaults(func=watch)

    demo_parser = commands.add_parser("demo", help="the embedded demo model watching a held-out synthetic clip")
    demo_parser.add_argument("--ask", action="append", type=parse_question, metavar="'SECONDS: QUESTION'",
                             help="questions for --video (the synthetic clip brings its own)")
    demo_parser.add_argument("--video", default=None, help="your own video file instead of the synthetic clip")
    demo_parser.add_argument("--model", default=None, help="another checkpoint (default: the embedded demo model)")
    demo_parser.add_argument("--seed", type=int, default=0, help="which held-out synthetic clip")
    demo_parser.add_argument("--segment-seconds", type=float, default=2.0)
    demo_parser.add_argument("--no-overlap", action="store_true", help="interleaved baseline: read, write, read, ...")
    demo_parser.add_argument("--realtime", action="store_true", help="pace the video at its timestamps")
    demo_parser.add_argument("--max-note-tokens", type=int, default=64)
    demo_parser.add_argument("--max-answer-tokens", type=int, default=96)
    demo_parser.add_argument("--json", action="store_true", help="one JSON object per line")
    demo_parser.set_defaults(func=demo)

    convert_parser = commands.add_parser("convert", help="stock Qwen3-VL checkpoint folder -> TWW checkpoint")
    convert_parser.add_argument("src")
    convert_parser.add_argument("out")
    convert_parser.set_defaults(func=convert)

    train_parser = commands.add_parser("train", help="train a stage (or the 3-stage curriculum) with TRL")
    train_parser.add_argument("--data", required=True, help="a JSONL file, or a folder of stage1/2/3.jsonl")
    train_parser.add_argument("--stage", type=int, choices=[1, 2, 3], default=1)
    train_parser.add_argument("--output", required=True)
    source = train_parser.add_mutually_exclusive_group()
    source.add_argument("--from", dest="source", default=None, help="TWW checkpoint to start from")
    source.add_argument("--tiny", action="store_true", help="start from a tiny random TWW model (CPU try-out)")
    train_parser.add_argument("--curriculum", action="store_true", help="stages 1 -> 2 -> 3, each from the last")
    train_parser.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    train_parser.add_argument("--max-steps", type=int, default=-1)
    train_parser.add_argument("--epochs", type=float, default=1.0)
    train_parser.add_argument("--batch-size", type=int, default=1)
    train_parser.add_argument("--grad-accum", type=int, default=1)
    train_parser.add_argument("--lr", type=float, default=1e-5)
    train_parser.add_argument("--seed", type=int, default=42)
    train_parser.add_argument("--cpu", action="store_true")
    train_parser.add_argument("--no-gradient-checkpointing", action="store_true")
    train_parser.set_defaults(func=train)

    data_parser = commands.add_parser("data", help="training data tools")
    data_commands = data_parser.add_subparsers(dest="data_command", required=True)
    validate_parser = data_commands.add_parser("validate", help="check TWW records (a JSONL file, a folder of "
                                               "stage*.jsonl, or a reference .json)")
    validate_parser.add_argument("file")
    validate_parser.set_defaults(func=data)
    synth_parser = data_commands.add_parser("synth", help="generate synthetic-world records for a stage")
    synth_parser.add_argument("--stage", type=int, choices=[1, 2, 3], required=True)
    synth_parser.add_argument("--num", type=int, default=100)
    synth_parser.add_argument("--out", required=True)
    synth_parser.add_argument("--seed", type=int, default=0)
    synth_parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    synth_parser.add_argument("--fps", type=float, default=2.0)
    synth_parser.add_argument("--mcq-answer", choices=["option", "letter"], default="option",
                              help="multiple-choice answer lines name the option's text (default) or its letter")
    synth_parser.add_argument("--negatives", choices=["random", "hard"], default="random",
                              help="backward-question distractors: random (training data, default) or hard "
                                   "(as in `tww eval synthetic`)")
    synth_parser.add_argument("--late-start", action="store_true",
                              help="clips begin a random number of seconds into the stream (stages 1 and 2; the "
                                   "demo model's training data)")
    synth_parser.add_argument("--busy", action="store_true",
                              help="a world with more arrivals and fewer departures (two or three objects on screen "
                                   "as often as in minute-long streams; training data)")
    synth_parser.set_defaults(func=data_synth)
    build_parser = data_commands.add_parser("build", help="write notes and reasoning for annotations with a teacher")
    build_parser.add_argument("--teacher", choices=["openai", "transformers"], required=True)
    build_parser.add_argument("--annotations", required=True, help="reference-format .json or JSONL records")
    build_parser.add_argument("--out", required=True)
    build_parser.add_argument("--base-url", default=None, help="openai: the endpoint, e.g. http://127.0.0.1:8000/v1")
    build_parser.add_argument("--model", default=None, help="openai: model name; transformers: model folder")
    build_parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the key")
    build_parser.set_defaults(func=data_build)

    export_parser = commands.add_parser("export", help="a Hub-ready folder with weights, remote code and a card")
    export_parser.add_argument("checkpoint")
    export_parser.add_argument("out")
    export_parser.add_argument("--eval", default=None, help="evaluation results JSON (tww eval --json)")
    export_parser.add_argument("--repo-id", default=None, help="the Hub id the card's usage snippet loads")
    export_parser.add_argument("--revision", default="main", help="the revision the card's snippet pins")
    export_parser.add_argument("--base-model", default=None)
    export_parser.set_defaults(func=export)

    push_parser = commands.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    push_parser.add_argument("folder")
    push_parser.add_argument("repo_id")
    push_parser.add_argument("--private", action="store_true")
    push_parser.add_argument("--revision", default=None, help="a branch to push to (created if missing)")
    push_parser.set_defaults(func=push)

    eval_parser = commands.add_parser("eval", help="StreamingBench / OVO-Bench / offline MCQ, one pass per video")
    eval_parser.add_argument("benchmark", choices=["streamingbench", "ovobench", "offline", "synthetic"])
    eval_parser.add_argument("--annotations", action="append", default=None, help="annotation file (repeatable)")
    eval_parser.add_argument("--num", type=int, default=20, help="synthetic: held-out streams")
    eval_parser.add_argument("--seed", type=int, default=0, help="synthetic: any seed gives held-out streams")
    eval_parser.add_argument("--json", action="store_true")
    eval_parser.add_argument("--videos", default=None, help="folder the annotation video paths are relative to")
    eval_parser.add_argument("--protocol", choices=["multi-round", "single-round", "offline"], default="multi-round")
    eval_parser.add_argument("--model", default=None,
                             help="checkpoint (default: synthetic, the embedded demo model; else a tiny random model)")
    eval_parser.add_argument("--out", default="eval_out")
    eval_parser.add_argument("--dry-run", action="store_true", help="count videos and probes per task; no video")
    eval_parser.add_argument("--limit", type=int, default=None, help="only the first N videos")
    eval_parser.add_argument("--tasks", nargs="*", default=None, help="only these tasks")
    eval_parser.add_argument("--fps", type=float, default=1.0)
    eval_parser.add_argument("--segment-seconds", type=float, default=None,
                             help="synthetic: one segment length for every stream (default: each stream's "
                                  "own, as in training: 2 s for stage-2 clips, 4 s for stage-3 clips)")
    eval_parser.add_argument("--teacher-forced", action="store_true",
                             help="synthetic: final-answer accuracy given the gold stream and reasoning (one forward "
                                  "pass per batch; separates the answer line from watching)")
    eval_parser.add_argument("--notes", action="store_true",
                             help="synthetic: how often the model's own notes carry the right state (running count, "
                                  "shapes seen) and report each entry, checked against the event log")
    eval_parser.add_argument("--rows", nargs="+", default=None, choices=list(ROW_NAMES),
                             help="synthetic: only these rows (default: all five)")
    eval_parser.add_argument("--sqa-gold-context", action="store_true",
                             help="official SQA behaviour: earlier gold answers in the prompt (leaks answers)")
    eval_parser.add_argument("--max-note-tokens", type=int, default=64)
    eval_parser.add_argument("--max-answer-tokens", type=int, default=128)
    eval_parser.set_defaults(func=evaluate)

    bench_parser = commands.add_parser("bench", help="benchmarks")
    bench_parser.add_argument("what", choices=["attention", "overlap", "train", "data", "eval"])
    bench_parser.add_argument("--segments", type=int, default=120, help="overlap: segments per run")
    bench_parser.add_argument("--plot", default="overlap_bench.png", help="overlap: where to save the plot")
    bench_parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    bench_parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default per device)")
    bench_parser.add_argument("--json", action="store_true")
    bench_parser.set_defaults(func=bench)
    return parser


def _add_stream_options(parser) -> None:
    parser.add_argument("--ask", action="append", type=parse_question, metavar="'SECONDS: QUESTION'")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--segmenter", choices=["fixed", "scene", "question"], default="fixed")
    parser.add_argument("--no-overlap", action="store_true", help="interleaved baseline: read, write, read, ...")
    parser.add_argument("--realtime", action="store_true", help="pace the video at its timestamps")
    parser.add_argument("--max-note-tokens", type=int, default=24)
    parser.add_argument("--max-answer-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as error:
        print(f"tww {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
