"""The streaming runtime: invariant 5 (overlapped == serial), event order and fields, errors, sessions, sources."""

import json
import random
import threading
import time

import numpy as np
import pytest
from conftest import write_reference_record

from tww_hf.modeling.sources_tww import (
    CountSegmenter,
    FixedSegmenter,
    QuestionAlignedSegmenter,
    SceneChangeSegmenter,
    Segment,
    iter_array,
    iter_items,
)
from tww_hf.video import reference_record_stream, synthetic_frames


QUESTIONS = [(2.5, "What color is the square?"), (5.0, "Which way did the square move?")]
BUDGET = dict(max_note_tokens=6, max_answer_tokens=8)


@pytest.fixture(scope="module")
def clip():
    return synthetic_frames(seconds=7.0, fps=2.0)


def outputs(events):
    """What the writer produced, in unit order: (kind, unit, tokens, text)."""
    return [(e.kind, e.unit, e.tokens, e.text) for e in events if e.kind in ("note", "answer")]


def run(model, processor, clip, **kwargs):
    frames, times = clip
    options = dict(timestamps=times, segmenter=FixedSegmenter(2.0), **BUDGET) | kwargs
    return list(model.stream_generate(processor, frames, QUESTIONS, **options))


def jitter(monkeypatch, model, seed):
    """Random delays in the reader and the writer: thread timing changes from run to run."""
    rng, lock = random.Random(seed), threading.Lock()

    def delayed(method):
        def wrapper(*args, **kwargs):
            with lock:
                pause = rng.uniform(0, 0.004)
            time.sleep(pause)
            return method(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(model, "stream_read", delayed(model.stream_read))
    monkeypatch.setattr(model, "stream_write", delayed(model.stream_write))


def test_overlapped_equals_serial_under_random_timings(model, processor, clip, monkeypatch):
    serial = outputs(run(model, processor, clip, overlap=False))
    assert len(serial) == 7 and {kind for kind, *_ in serial} == {"note", "answer"}
    for seed in range(8):
        with monkeypatch.context() as patch:
            jitter(patch, model, seed)
            assert outputs(run(model, processor, clip, overlap=True)) == serial, f"timing seed {seed}"


def test_overlap_lets_the_reader_run_ahead(model, processor, clip, monkeypatch):
    """With a slow writer, overlapped mode reads later units before earlier outputs are done; serial never does."""
    slow_write = model.stream_write
    monkeypatch.setattr(model, "stream_write", lambda *a, **k: (time.sleep(0.002), slow_write(*a, **k))[1])
    for overlap in (False, True):
        kinds = [e.kind for e in run(model, processor, clip, overlap=overlap)]
        reads_before_first_output = kinds.index("note")
        assert (reads_before_first_output > 1) == overlap


def test_event_order_and_fields(model, processor, clip):
    events = run(model, processor, clip)
    assert events[-1].kind == "summary" and events[0].kind == "segment"
    read_at = {e.unit: i for i, e in enumerate(events) if e.kind in ("segment", "question")}
    for i, event in enumerate(events):
        if event.kind in ("note", "answer", "answer_token"):
            assert read_at[event.unit] < i  # an output never precedes its unit's read
        assert json.loads(json.dumps(event.to_dict()))["event"] == event.kind
    answers = [e for e in events if e.kind == "answer"]
    assert [a.question for a in answers] == [q for _, q in QUESTIONS]
    for answer in answers:
        streamed = [e.token_id for e in events if e.kind == "answer_token" and e.unit == answer.unit]
        assert len(streamed) == answer.tokens
        assert answer.ttft_tokens > 0 and answer.done >= (answer.first_token or 0) >= 0
    reads = [e for e in events if e.kind in ("segment", "question")]
    assert [r.source_tokens for r in reads] == sorted(r.source_tokens for r in reads)
    summary = events[-1]
    assert summary.units == len(reads) and summary.errors == 0 and len(summary.question_latency) == 2
    assert summary.note_tokens == sum(e.tokens for e in events if e.kind == "note")


def test_questions_follow_every_earlier_frame(processor):
    frames, times = synthetic_frames(seconds=6.0, fps=2.0)
    items = list(iter_items(iter_array(frames, times), [(2.5, "q1"), (2.5, "q2")], FixedSegmenter(10.0)))
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["Segment", "Question", "Question", "Segment"] and items[-1].last
    assert items[0].end == 2.5 and items[3].start == 3.0


def test_budgets_force_boundaries_and_every_unit_is_still_answered(model, processor, clip):
    events = run(model, processor, clip, max_note_tokens=1, max_answer_tokens=1, max_total_tokens=3)
    outputs_ = [e for e in events if e.kind in ("note", "answer")]
    assert len(outputs_) == 7 and sum(e.tokens for e in outputs_) <= 3
    assert any(e.kind == "error" and "max_total_tokens" in e.message for e in events)
    assert events[-1].truncated_units >= 1


def test_bad_unit_is_skipped_and_the_stream_survives(model, processor):
    good = np.zeros((2, 64, 64, 3), np.uint8)
    items = [Segment(good, [0.0, 0.5]), Segment(np.zeros((2, 64, 64, 7), np.uint8), [1.0, 1.5]),
             Segment(good, [2.0, 2.5], last=True)]
    from tww_hf.modeling.engine_tww import DecodeSettings, StreamEngine

    engine = StreamEngine(model, processor, DecodeSettings(max_note_tokens=3), overlap=False)  # ordered events
    for item in items:
        engine.put(item)
    engine.close()
    events = list(engine.events())
    assert [e.kind for e in events if e.kind in ("note", "error")] == ["note", "error", "note"]
    assert "channels" in next(e.message for e in events if e.kind == "error")


def test_timestamps_going_backwards_end_cleanly_keeping_notes(model, processor):
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    events = list(model.stream_generate(processor, frames, [], timestamps=[0, 1, 2, 3, 1, 2],
                                        segmenter=FixedSegmenter(2.0), **BUDGET))
    assert any(e.kind == "error" and "backwards" in e.message for e in events)
    assert sum(e.kind == "note" for e in events) >= 1 and events[-1].kind == "summary"


def test_reader_failure_is_raised_in_the_caller(model, processor, clip, monkeypatch):
    calls = {"n": 0}
    original = model.stream_read

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated device failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "stream_read", failing)
    seen = []
    with pytest.raises(RuntimeError, match="simulated device failure"):
        for event in run(model, processor, clip):
            seen.append(event)
    assert calls["n"] == 3


def test_failed_read_leaves_no_partial_state(model, processor):
    cache = model.new_stream_cache()
    unit = processor.with_header(processor.encode_question("first question"))
    model.stream_read(cache, **unit.model_inputs())
    length, position = cache.source_length, cache.next_source_position
    broken = processor.encode_question("second")
    broken.input_ids[0, 0] = 10**6  # an id outside the vocabulary: the embedding lookup fails
    with pytest.raises(IndexError):
        model.stream_read(cache, **broken.model_inputs())
    assert cache.layers[0].source.length in (length, length + len(broken))  # may have been appended before failing
    cache.rollback_source(length, position)
    assert cache.source_length == length and cache.next_source_position == position


def test_question_before_frames_and_bad_questions(model, processor, clip):
    frames, times = clip
    events = list(model.stream_generate(processor, frames, [(0.0, "Anything yet?")], timestamps=[t + 1 for t in times],
                                        **BUDGET))
    assert any(e.kind == "error" and "before any video frame" in e.message for e in events)
    with pytest.raises(ValueError, match="time >= 0"):
        list(model.stream_generate(processor, frames, [(-1.0, "when?")], timestamps=times))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        list(model.stream_generate(processor, "missing.mp4", []))


def test_live_session(model, processor):
    frames, times = synthetic_frames(seconds=4.0, fps=2.0)
    session = model.start_stream(processor, segmenter=FixedSegmenter(2.0), **BUDGET)
    session.push_frames(frames[:5], times[:5])
    session.ask("What color is the square?")
    with pytest.raises(ValueError, match="backwards"):
        session.push_frames(frames[5:6], [0.1])
    session.push_frames(frames[5:], times[5:])
    session.close()
    events = list(session.events())
    kinds = [e.kind for e in events]
    assert kinds.count("answer") == 1 and kinds.count("note") == 3 and kinds[-1] == "summary"
    assert next(e for e in events if e.kind == "question").arrival == times[4]
    with pytest.raises(RuntimeError, match="closed"):
        session.ask("again?")


def test_realtime_paces_input(model, processor):
    frames, times = synthetic_frames(seconds=1.5, fps=2.0)
    events = list(model.stream_generate(processor, frames, [], timestamps=times, realtime=True,
                                        segmenter=FixedSegmenter(1.0), max_note_tokens=2))
    reads = [e for e in events if e.kind == "segment"]
    assert all(r.read_done >= r.arrival for r in reads)  # nothing is read before it arrives


def test_segmenters():
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    fixed, cuts = FixedSegmenter(2.0), []
    for t in np.arange(0, 6, 0.5):
        cuts += [s.end for s in fixed.push(frames[0], float(t))]
    assert cuts == [1.5, 3.5]
    rule = QuestionAlignedSegmenter(question_times=[100.0, 130.0], max_seconds=60, recut_seconds=30)
    pieces = list(iter_items(((frames[0], float(t)) for t in range(0, 140)), [(100.0, "a"), (130.0, "b")], rule,
                             drop_after_last_question=True))
    spans = [(p.start, p.end) for p in pieces if isinstance(p, Segment)]
    assert spans == [(0, 29), (30, 59), (60, 89), (90, 100), (101, 130)]  # 100 s > 60: 30 s chunks; 30 s kept whole
    scene = SceneChangeSegmenter(seconds=100, min_seconds=1.0)
    bright = np.full((8, 8, 3), 200, np.uint8)
    cuts = []
    for t in range(10):
        image = bright if t >= 6 else frames[0] + np.uint8(t % 2)
        cuts += [s.end for s in scene.push(image, float(t))]
    assert cuts == [5.0]
    counts, cuts = CountSegmenter(seconds=100, counts=[2, 3]), []
    for t in range(7):
        cuts += [len(s.timestamps) for s in counts.push(frames[0], float(t))]
    assert cuts == [2, 3]


def test_reference_record_frames_directory(model, processor, tmp_path):
    """The reference layout: <root>/all_data/data_000000.json beside <root>/raw_picture/0/*.jpg."""
    conversations = [{"from": "human", "timestamps": 2.0, "value": "<video>\nWhat moved?"},
                     {"from": "gpt", "value": "The square.\nAnswer: A"}]
    path = write_reference_record(tmp_path, conversations)
    source, questions, segmenter = reference_record_stream(path)
    assert questions == [(2.0, "<video>\nWhat moved?")]
    events = list(model.stream_generate(processor, source, questions, segmenter=segmenter, **BUDGET))
    kinds = [e.kind for e in events if e.kind in ("segment", "question")]
    assert kinds == ["segment", "question", "segment"]
    assert next(e for e in events if e.kind == "question").text == "What moved?"


def test_sampling_is_seeded_and_configurable(model, processor, clip):
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=1.5, top_k=50, top_p=0.95)
    first = outputs(run(model, processor, clip, generation_config=config, seed=3))
    again = outputs(run(model, processor, clip, generation_config=config, seed=3))
    other = outputs(run(model, processor, clip, generation_config=config, seed=4))
    greedy = outputs(run(model, processor, clip))
    assert first == again and first != other and first != greedy
    with pytest.raises(ValueError, match="temperature"):
        run(model, processor, clip, do_sample=True, temperature=0.0)


def test_live_source_reads_through_pyav(tmp_path):
    from tww_hf.video import live_source, write_video

    frames, _ = synthetic_frames(seconds=3.0, fps=4.0)
    path = write_video(tmp_path / "camera.mp4", frames, fps=4.0)
    stamps = [stamp for _, stamp in live_source(str(path), fps=100.0)]
    assert len(stamps) == len(frames) and stamps == sorted(stamps)


def test_array_and_frame_sources_resample_to_fps(tmp_path):
    from tww_hf.modeling.sources_tww import as_frame_source
    from tww_hf.video import frames_dir_source

    frames, times = synthetic_frames(seconds=4.0, fps=4.0)
    kept = [t for _, t in as_frame_source(frames, fps=1.0, timestamps=times)]
    assert kept == [0.0, 1.0, 2.0, 3.0]
    # Explicit timestamps without fps: every frame stays (a silent 1 fps default once halved the eval's frames).
    assert [t for _, t in as_frame_source(frames, timestamps=times)] == list(times)
    assert [t for _, t in as_frame_source(iter(zip(frames, times)), fps=2.0)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0,
                                                                                 3.5]
    (tmp_path / "f").mkdir()
    names = []
    for i, frame in enumerate(frames):
        names.append(f"{i}.png")
        __import__("PIL.Image").Image.fromarray(frame).save(tmp_path / "f" / names[-1])
    assert [t for _, t in frames_dir_source(tmp_path / "f", names, times, fps=2.0)] == [0.0, 0.5, 1.0, 1.5, 2.0,
                                                                                        2.5, 3.0, 3.5]
