"""Evaluation runs: each video decoded once and streamed once (multi-round), or per probe (single-round, offline);
results appended to JSONL so an interrupted run resumes; missing videos listed; videos sharded across processes."""

import json
from pathlib import Path

import numpy as np

from ..modeling.sources_tww import FixedSegmenter, QuestionAlignedSegmenter
from .scoring import aggregate, final_answer, markdown_report, score_proactive, score_probe


PROTOCOLS = ("multi-round", "single-round", "offline")


def group_by_video(probes: list[dict]) -> dict[str, list[dict]]:
    videos: dict[str, list[dict]] = {}
    for probe in probes:
        videos.setdefault(probe["video"], []).append(probe)
    for items in videos.values():
        items.sort(key=lambda p: (p["time"] if p["time"] is not None else float("inf")))
    return videos


def done_ids(out_dir: Path) -> set[str]:
    ids = set()
    for path in out_dir.glob("results.rank*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                ids.add(json.loads(line)["probe"]["id"])
            except (ValueError, KeyError):
                continue  # a line cut by an interruption: that probe runs again
    return ids


class EvalRun:
    """One evaluation: `run()` streams this rank's share of the videos and returns the merged report on rank 0."""

    def __init__(self, model, processor, probes: list[dict], videos_root: str | Path, out_dir: str | Path,
                 protocol: str = "multi-round", fps: float = 1.0, segment_max: float = 60.0,
                 segment_recut: float = 30.0, sqa_gold_context: bool = False, rank: int = 0, world_size: int = 1,
                 progress: bool = True, **decode_kwargs):
        if protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}.")
        self.model, self.processor, self.probes = model, processor, probes
        self.videos_root, self.out_dir = Path(videos_root), Path(out_dir)
        self.protocol, self.fps, self.rank, self.world_size, self.progress = protocol, fps, rank, world_size, progress
        self.segment_max, self.segment_recut, self.sqa_gold_context = segment_max, segment_recut, sqa_gold_context
        self.decode = {"max_note_tokens": 64, "max_answer_tokens": 128} | decode_kwargs
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.results_file = self.out_dir / f"results.rank{rank}.jsonl"
        self.missing: list[str] = []

    # ---------------------------------------------------------------------------------------------------- run
    def run(self) -> dict | None:
        from tqdm.auto import tqdm

        finished = done_ids(self.out_dir)
        videos = sorted(group_by_video(self.probes).items())[self.rank :: self.world_size]
        with self.results_file.open("a") as handle:
            if self.results_file.stat().st_size and not self.results_file.read_bytes().endswith(b"\n"):
                handle.write("\n")  # an interrupted run left a cut line: end it, so new rows stay parseable
            for video, probes in tqdm(videos, desc=f"eval rank {self.rank}", disable=not self.progress):
                todo = [p for p in probes if p["id"] not in finished]
                if todo:
                    for row in self.run_video(video, todo):
                        handle.write(json.dumps(row) + "\n")
                        handle.flush()
        (self.out_dir / f"missing.rank{self.rank}.json").write_text(json.dumps(self.missing, indent=2))
        return None

    def frames_for(self, video: str):
        from ..video import read_video

        path = self.videos_root / video
        try:
            return read_video(path, fps=self.fps)
        except (FileNotFoundError, ValueError) as error:
            self.missing.append(f"{video}: {error}")
            return None

    def run_video(self, video: str, probes: list[dict]) -> list[dict]:
        decoded = self.frames_for(video)
        if decoded is None:
            return []
        frames, times = decoded
        rows = [self.proactive(frames, times, p) for p in probes if p["kind"] == "proactive"]
        asked = [p for p in probes if p["kind"] != "proactive"]
        if asked and self.protocol == "multi-round":
            rows += self.stream(frames, times, asked)
        elif asked:
            for probe in asked:
                rows += self.stream(frames, times, [probe], offline=self.protocol == "offline")
        return rows

    # ------------------------------------------------------------------------------------------------ streams
    def stream(self, frames, times, probes: list[dict], offline: bool = False) -> list[dict]:
        """One stream over the video up to the last probe; every probe asked at its time."""
        end = max((p["time"] if p["time"] is not None else times[-1]) for p in probes)
        keep = [i for i, t in enumerate(times) if t <= end + 1e-6] or [0]
        questions = [(p["time"] if p["time"] is not None else times[keep[-1]], self.question_text(p, probes))
                     for p in probes]
        # A stream may fix its own segment length (the synthetic streams' stages use 2 s or 4 s segments).
        own = probes[0].get("extra", {}).get("segment_seconds")
        max_seconds, recut_seconds = (own, own) if own else (self.segment_max, self.segment_recut)
        segmenter = (FixedSegmenter(seconds=float("inf")) if offline else
                     QuestionAlignedSegmenter(question_times=[q for q, _ in questions], max_seconds=max_seconds,
                                              recut_seconds=recut_seconds))
        events = list(self.model.stream_generate(
            self.processor, frames[keep], questions, timestamps=[times[i] for i in keep], segmenter=segmenter,
            **self.decode))
        answers = [e for e in events if e.kind == "answer"]
        summary = events[-1]
        notes = sum(e.tokens for e in events if e.kind == "note")
        rows = []
        for probe, answer in zip(probes, answers):
            rows.append({"probe": probe, "reply": answer.text, "final": final_answer(answer.text),
                         "correct": score_probe(probe, answer.text), "answer_tokens": answer.tokens,
                         "note_tokens": notes / max(1, len(probes)), "ttft_tokens": answer.ttft_tokens,
                         "first_token_s": answer.first_token, "latency_s": answer.done, "max_lag": summary.max_lag,
                         "protocol": self.protocol})
        return rows

    def question_text(self, probe: dict, probes: list[dict]) -> str:
        """The probe's question; for sequential QA with `sqa_gold_context`, earlier turns with their gold answers
        in front (the official behaviour, which leaks gold answers into the context)."""
        group = probe.get("extra", {}).get("sqa_group")
        if not (self.sqa_gold_context and group):
            return probe["question"]
        earlier = [p for p in probes if p.get("extra", {}).get("sqa_group") == group
                   and p["extra"]["turn"] < probe["extra"]["turn"]]
        context = "".join(f"Earlier question: {p['question']}\nAnswer: {p['answer']}\n" for p in earlier)
        return context + probe["question"]

    def proactive(self, frames, times, probe: dict, step: float = 1.0, after: float = 4.0) -> dict:
        """Polls a live stream every `step` s from the question time to ground truth + `after` s: 'is it the right
        time?'; at the first yes the instruction is asked and its output scored (official +-2 s window)."""
        session = self.model.start_stream(self.processor, segmenter=FixedSegmenter(seconds=step), **self.decode)
        events, pushed, first_yes, output = session.events(), 0, None, ""
        poll = probe["time"]
        truth_time = probe["extra"]["ground_truth_time"]
        while poll <= truth_time + after + 1e-6 and first_yes is None:
            upto = [i for i, t in enumerate(times) if pushed <= i and t <= poll + 1e-6]
            if upto:
                session.push_frames(frames[upto], [times[i] for i in upto])
                pushed = upto[-1] + 1
            session.ask(f"{probe['question']} Is it the right time to output the answer now? Answer Yes or No.", poll)
            if final_answer(_next_answer(events)).lower().startswith("yes"):
                first_yes = poll
                session.ask(probe["question"], poll)
                output = _next_answer(events)
            poll += step
        session.close()
        list(events)
        on_time, correct = score_proactive(first_yes, output, truth_time, probe["answer"])
        return {"probe": probe, "reply": output, "first_yes_time": first_yes, "on_time": on_time, "correct": correct,
                "protocol": "proactive-polling"}


def _next_answer(events) -> str:
    for event in events:
        if event.kind == "answer":
            return event.text
    return ""


def merge_report(out_dir: str | Path, title: str) -> dict:
    """Merges every rank's results (each probe once) into report.json and report.md."""
    out_dir = Path(out_dir)
    rows = {}
    for path in sorted(out_dir.glob("results.rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[row["probe"]["id"]] = row
    missing = sorted({m for p in out_dir.glob("missing.rank*.json") for m in json.loads(p.read_text())})
    results = list(rows.values())
    report = aggregate(results) if results else {"tasks": {}, "categories": {}, "overall_per_question": float("nan")}
    scored = [r for r in results if "answer_tokens" in r]
    if scored:
        tokens = [r["answer_tokens"] + r["note_tokens"] for r in scored]
        report["output_tokens_mean"] = round(float(np.mean(tokens)), 2)
        report["ttft_tokens_mean"] = round(float(np.mean([r["ttft_tokens"] for r in scored])), 1)
        seconds = [r["first_token_s"] for r in scored if r["first_token_s"] is not None]
        report["ttft_seconds_mean"] = round(float(np.mean(seconds)), 3) if seconds else None
        report["max_lag"] = round(max(r["max_lag"] for r in scored), 3)
    proactive = [r for r in results if r.get("protocol") == "proactive-polling"]
    if proactive:
        report["proactive_time_accuracy"] = 100.0 * sum(r["on_time"] for r in proactive) / len(proactive)
    report["missing_videos"] = missing
    report["probes_scored"] = len(results)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(markdown_report(report, title))
    return report
