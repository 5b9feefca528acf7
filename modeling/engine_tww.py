"""The TWW streaming engine: one reader and one writer over a `StreamingDynamicCache`, serial or overlapped.

- The **reader** (its own thread, and its own CUDA stream on GPU) takes items (segments, questions) in arrival order,
  encodes them, reads them into the source cache and publishes `(unit, snapshot)`.
- The **writer** (its own thread) decodes C_u against unit u's snapshot: the forced prefix (with the previous
  unit's held-back boundary in front, the deferred-boundary convention), then tokens until the unit's boundary.
- `overlap=False` (the interleaved baseline) makes the reader wait until C_u is written before reading u+1;
  `overlap=True` (TWW) lets it run ahead. The writer's computation depends only on the snapshot and the target, so
  greedy output is token-for-token identical in both modes (invariant 5).

Stream state (cache, counters, queues) lives in the `StreamEngine` object; the model holds none.
"""

import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch

from .processing_tww import QUESTION, SEGMENT
from .sources_tww import Question, Segment


# ------------------------------------------------------------------------------------------------------- events
@dataclass
class StreamEvent:
    """Base of every event: `kind` names it, `to_dict()` gives JSON-ready fields (with an `event` key)."""

    kind = "event"

    def to_dict(self) -> dict:
        return {"event": self.kind, **asdict(self)}


@dataclass
class SegmentRead(StreamEvent):
    """A segment was read into the source cache. Times: `arrival` is stream time (s); `read_done` is wall time since
    the stream started (s); `lag` is how long after its arrival the read finished (s)."""

    kind = "segment"
    unit: int
    start: float
    end: float
    arrival: float
    read_done: float
    lag: float
    source_tokens: int


@dataclass
class QuestionRead(StreamEvent):
    kind = "question"
    unit: int
    text: str
    arrival: float
    read_done: float
    lag: float
    source_tokens: int


@dataclass
class NoteWritten(StreamEvent):
    kind = "note"
    unit: int
    segment_end: float
    text: str
    tokens: int
    done: float
    coerced_boundary: bool = False
    truncated: bool = False


@dataclass
class AnswerToken(StreamEvent):
    kind = "answer_token"
    unit: int
    token_id: int
    text: str


@dataclass
class AnswerDone(StreamEvent):
    """A question's reasoning + answer. `first_token` and `done` are seconds after the question's arrival;
    `ttft_tokens` counts the tokens processed before the first answer token (the paper's TTFT)."""

    kind = "answer"
    unit: int
    question: str
    arrival: float
    text: str
    tokens: int
    first_token: float | None
    ttft_tokens: int
    done: float
    coerced_boundary: bool = False
    truncated: bool = False


@dataclass
class StreamError(StreamEvent):
    kind = "error"
    message: str
    unit: int | None = None


@dataclass
class StreamSummary(StreamEvent):
    kind = "summary"
    units: int
    note_tokens: int
    answer_tokens: int
    source_tokens: int
    max_lag: float
    mean_lag: float
    question_latency: list = field(default_factory=list)
    coerced_boundaries: int = 0
    truncated_units: int = 0
    errors: int = 0
    wall: float = 0.0
    overlap: bool = True


# ---------------------------------------------------------------------------------------------------- decoding
@dataclass
class DecodeSettings:
    """Token budgets and sampling. `max_total_tokens` caps everything written (None: no global cap); boundaries are
    suppressed until a unit has `min_*_tokens` tokens (like `min_new_tokens`)."""

    max_note_tokens: int = 64
    max_answer_tokens: int = 256
    max_total_tokens: int | None = None
    min_note_tokens: int = 0
    min_answer_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    @classmethod
    def from_generation_config(cls, generation_config=None, **overrides) -> "DecodeSettings":
        """Sampling settings from a `GenerationConfig` (greedy unless it says `do_sample=True`), then overrides."""
        settings = {}
        if generation_config is not None:
            settings = {
                "do_sample": bool(generation_config.do_sample),
                "temperature": generation_config.temperature or 1.0,
                "top_k": generation_config.top_k,
                "top_p": generation_config.top_p,
            }
        settings.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**settings)

    def validate(self) -> None:
        if self.max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens must be >= 1, got {self.max_answer_tokens}.")
        if self.max_note_tokens < 0:  # 0: notes are left empty (the no-notes ablation)
            raise ValueError(f"max_note_tokens must be >= 0, got {self.max_note_tokens}.")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}.")


class TokenChooser:
    """Greedy or sampled next token from the last logits row. Sees only the logits: no source ids (no repetition
    penalty over video tokens, unlike the reference)."""

    def __init__(self, settings: DecodeSettings, device):
        self.settings = settings
        self.generator = None
        if settings.do_sample:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor, forbidden: list[int] | None = None) -> int:
        row = logits[0, -1].float()
        if forbidden:
            row = row.index_fill(0, torch.tensor(forbidden, device=row.device), float("-inf"))
        if not self.settings.do_sample:
            return int(row.argmax())
        row = row / self.settings.temperature
        if self.settings.top_k:
            kth = torch.topk(row, min(self.settings.top_k, row.numel())).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        if self.settings.top_p is not None and self.settings.top_p < 1.0:
            sorted_logits, order = torch.sort(row, descending=True)
            cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
            remove = cumulative - torch.softmax(sorted_logits, -1) > self.settings.top_p
            row = row.masked_fill(remove.scatter(0, order, remove), float("-inf"))
        return int(torch.multinomial(torch.softmax(row, -1), 1, generator=self.generator))


# ------------------------------------------------------------------------------------------------------ engine
_END = object()


@dataclass
class _ReadUnit:
    index: int
    kind: str
    item: object
    snapshot: object
    arrival_wall: float
    cuda_event: object = None
    patch_times: tuple = ()  # a segment's patch header times, for a `{times}` note prefix
    question: str = ""  # a question's text, for a `{question}` answer prefix


class StreamEngine:
    """One stream: feed items with `put` (or `put_frames`/`ask` through a session), read events from `events()`.

    Args:
        model (`TWWForConditionalGeneration`), processor (`TWWProcessor`).
        settings (`DecodeSettings`): budgets and sampling.
        overlap (`bool`): TWW (True) or the interleaved baseline (False).
        realtime (`bool`): items carry stream times; pace them against the wall clock (live setting).
    """

    def __init__(self, model, processor, settings: DecodeSettings | None = None, overlap: bool = True,
                 realtime: bool = False):
        model.config.require_stream_token_ids()
        self.model, self.processor, self.overlap, self.realtime = model, processor, overlap, realtime
        self.settings = settings or DecodeSettings()
        self.settings.validate()
        self.cache = model.new_stream_cache()
        self.inputs: queue.Queue = queue.Queue()
        self.ready: queue.Queue = queue.Queue()
        self.outputs: queue.Queue = queue.Queue()
        self.written = threading.Semaphore(0)  # serial mode: the reader waits for each unit's output
        self.start_wall = time.perf_counter()
        self.failure: BaseException | None = None
        self.stats = {"lags": [], "latency": [], "note": 0, "answer": 0, "coerced": 0, "truncated": 0, "errors": 0}
        on_cuda = next(model.parameters()).device.type == "cuda"
        self.read_stream = torch.cuda.Stream() if on_cuda else None
        self.device = next(model.parameters()).device
        self.reader = threading.Thread(target=self._guard, args=(self._read_loop,), name="tww-reader", daemon=True)
        self.writer = threading.Thread(target=self._guard, args=(self._write_loop,), name="tww-writer", daemon=True)
        self.reader.start()
        self.writer.start()

    # -------------------------------------------------------------------------------------------- input side
    def now(self) -> float:
        return time.perf_counter() - self.start_wall

    def put(self, item) -> None:
        """Queues a `Segment` or `Question` (arrival order); `close()` ends the input."""
        arrival_wall = self.start_wall + item.end if self.realtime else time.perf_counter()
        self.inputs.put((item, arrival_wall))

    def close(self) -> None:
        self.inputs.put((_END, None))

    def events(self):
        """Yields events until the stream ends; re-raises a reader/writer failure in the caller (never hangs)."""
        while True:
            event = self.outputs.get()
            if event is _END:
                break
            yield event
        self.reader.join()
        self.writer.join()
        if self.failure is not None:
            raise RuntimeError(f"The TWW stream failed: {self.failure}") from self.failure

    # ---------------------------------------------------------------------------------------------- threads
    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as error:  # surfaced by events(); unblock the other thread and the caller
            self.failure = self.failure or error
            self.outputs.put(StreamError(f"{type(error).__name__}: {error}"))
            self.inputs.put((_END, None))
            self.ready.put(_END)
            self.written.release()
            self.outputs.put(_END)

    def _read_loop(self) -> None:
        index, last_read = 0, None
        while self.failure is None:
            item, arrival_wall = self.inputs.get()
            if item is _END:
                if last_read is not None and not last_read.last:  # live stream: close the user turn now
                    self._read_close()
                self.ready.put(_END)
                return
            if self.realtime:
                time.sleep(max(0.0, arrival_wall - time.perf_counter()))
            if index > 0 and not self.overlap:
                self.written.acquire()  # interleaved: C_{u-1} must be written before R_u is read
            read = self._read_one(index, item, arrival_wall)
            if read is not None:
                self.ready.put(read)
                index, last_read = index + 1, item

    def _read_one(self, index: int, item, arrival_wall: float):
        """Encodes and reads one item; a bad item becomes an error event and leaves the cache untouched."""
        try:
            unit = self._encode(index, item)
        except ValueError as error:
            self.stats["errors"] += 1
            what = type(item).__name__.lower()
            self.outputs.put(StreamError(f"Skipped a {what} at {item.end:.2f}s: {error}", index))
            if index > 0 and not self.overlap:
                self.written.release()  # nothing will be written for it
            return None
        if isinstance(item, Question):  # events report the text the model reads (placeholders stripped)
            item = Question(item.time, unit.text, item.last)
        length, position = self.cache.source_length, self.cache.next_source_position
        stream = torch.cuda.stream(self.read_stream) if self.read_stream is not None else nullcontext()
        try:
            with stream:
                snapshot = self.model.stream_read(self.cache, **_to_device(unit.model_inputs(), self.device))
                cuda_event = torch.cuda.Event() if self.read_stream is not None else None
                if cuda_event is not None:
                    cuda_event.record(self.read_stream)
        except Exception:
            self.cache.rollback_source(length, position)  # a failed read leaves no partial K/V behind
            raise
        done = self.now()
        lag = time.perf_counter() - arrival_wall
        self.stats["lags"].append(lag)
        self.outputs.put(self._read_event(index, item, snapshot.length, done, lag))
        return _ReadUnit(index, unit.kind, item, snapshot, arrival_wall, cuda_event, unit.patch_times,
                         unit.text or "")

    def _encode(self, index: int, item):
        if isinstance(item, Segment):
            unit = self.processor.encode_segment(item.frames, item.timestamps)
        elif isinstance(item, Question):
            unit = self.processor.encode_question(item.text, item.time)
        else:
            raise ValueError(f"Unknown stream item {item!r}; push Segment or Question objects.")
        if index == 0:
            unit = self.processor.with_header(unit)
        return self.processor.with_close(unit) if item.last else unit

    def _read_close(self) -> None:
        ids = torch.tensor([self.processor.encode_text(self.processor.source_close)], device=self.device)
        self.model.stream_read(self.cache, input_ids=ids)

    def _read_event(self, index, item, source_tokens, done, lag):
        if isinstance(item, Segment):
            return SegmentRead(index, item.start, item.end, item.end, done, lag, source_tokens)
        return QuestionRead(index, item.text, item.time, done, lag, source_tokens)

    def _write_loop(self) -> None:
        chooser = TokenChooser(self.settings, self.device)
        pending: list[int] = []
        while True:
            read = self.ready.get()
            if read is _END:
                break
            if read.cuda_event is not None:
                torch.cuda.current_stream().wait_event(read.cuda_event)
            pending = self._write_unit(read, pending, chooser)
            if not self.overlap:
                self.written.release()
        if pending:
            self._finish(pending, chooser)
        self.outputs.put(self._summary())
        self.outputs.put(_END)

    # ----------------------------------------------------------------------------------------------- writing
    def _budget(self, kind: str) -> int:
        unit_budget = self.settings.max_note_tokens if kind == SEGMENT else self.settings.max_answer_tokens
        if self.settings.max_total_tokens is None:
            return unit_budget
        spent = self.stats["note"] + self.stats["answer"]
        return max(0, min(unit_budget, self.settings.max_total_tokens - spent))

    def _write_unit(self, read: _ReadUnit, pending: list[int], chooser: TokenChooser) -> list[int]:
        """Decodes C_u; returns its boundary, to be fed with the next unit's prefix."""
        processor, kind = self.processor, read.kind
        own = processor.boundary_token_id(kind)
        boundaries = {processor.eot_token_id, processor.eoq_token_id, processor.end_token_id}
        budget = self._budget(kind)
        if budget == 0 and kind == SEGMENT and self.settings.max_note_tokens == 0:
            feed = pending + processor.target_prefix_ids(kind, first=read.index == 0, patch_times=read.patch_times,
                                               question=read.question)
            self.model.stream_write(self.cache, _ids(feed, self.device), read.snapshot, logits_to_keep=1)
            self._record(read, [], False, False, None, 0)  # no-notes ablation: prefix only, boundary forced
            return [own]
        minimum = min(budget, self.settings.min_note_tokens if kind == SEGMENT else self.settings.min_answer_tokens)
        forbidden = sorted(boundaries)
        if budget == 0 and self.settings.max_total_tokens is not None:
            self.outputs.put(StreamError(f"The global budget max_total_tokens={self.settings.max_total_tokens} is "
                                         "spent; this unit gets no text. Raise max_total_tokens.", read.index))
        feed = pending + processor.target_prefix_ids(kind, first=read.index == 0, patch_times=read.patch_times,
                                               question=read.question)
        tokens, first_token, ttft_tokens, token = [], None, 0, None
        while True:
            logits = self.model.stream_write(self.cache, _ids(feed, self.device), read.snapshot, logits_to_keep=1)
            token = chooser(logits, forbidden if len(tokens) < minimum else None)
            if token in boundaries or len(tokens) >= budget:
                break
            if kind == QUESTION:
                if first_token is None:
                    first_token = time.perf_counter() - read.arrival_wall
                    ttft_tokens = read.snapshot.length + self.cache.target_length
                self.outputs.put(AnswerToken(read.index, token, processor.tokenizer.decode([token])))
            tokens.append(token)
            feed = [token]
        coerced, truncated = token in boundaries and token != own, token not in boundaries
        self._record(read, tokens, coerced, truncated, first_token, ttft_tokens)
        return [own]

    def _record(self, read, tokens, coerced, truncated, first_token, ttft_tokens) -> None:
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        self.stats["coerced"] += coerced
        self.stats["truncated"] += truncated
        if read.kind == SEGMENT:
            self.stats["note"] += len(tokens)
            self.outputs.put(NoteWritten(read.index, read.item.end, text, len(tokens), self.now(), coerced, truncated))
            return
        self.stats["answer"] += len(tokens)
        done = time.perf_counter() - read.arrival_wall
        self.stats["latency"].append(done)
        self.outputs.put(AnswerDone(read.index, read.item.text, read.item.time, text, len(tokens), first_token,
                                    ttft_tokens, done, coerced, truncated))

    def _finish(self, pending: list[int], chooser: TokenChooser, budget: int = 8) -> None:
        """Feeds the last boundary (it sees the whole source) and lets the model close with `<|im_end|>`."""
        feed = pending
        for _ in range(budget):
            token = chooser(self.model.stream_write(self.cache, _ids(feed, self.device), logits_to_keep=1))
            if token == self.processor.end_token_id:
                return
            feed = [token]

    def _summary(self) -> StreamSummary:
        lags = self.stats["lags"] or [0.0]
        return StreamSummary(
            units=len(self.cache.unit_snapshots), note_tokens=self.stats["note"], answer_tokens=self.stats["answer"],
            source_tokens=self.cache.source_length, max_lag=max(lags), mean_lag=sum(lags) / len(lags),
            question_latency=list(self.stats["latency"]), coerced_boundaries=self.stats["coerced"],
            truncated_units=self.stats["truncated"], errors=self.stats["errors"], wall=self.now(),
            overlap=self.overlap,
        )


def _ids(tokens: list[int], device) -> torch.Tensor:
    return torch.tensor([tokens], device=device)


def _to_device(inputs: dict, device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}


# ------------------------------------------------------------------------------------------- public entry points
def stream_generate(model, processor, video=None, questions=(), overlap: bool = True, realtime: bool = False,
                    segmenter=None, generation_config=None, fps: float | None = None, timestamps=None,
                    drop_after_last_question: bool = False, **decode_kwargs):
    """Streams a finite video (path/URL, array, or iterable of (frame, seconds)) with timed questions; yields events.

    See `TWWForConditionalGeneration.stream_generate` for the arguments.
    """
    from .sources_tww import FixedSegmenter, as_frame_source, iter_items

    questions = _check_questions(questions)
    settings = DecodeSettings.from_generation_config(generation_config, **decode_kwargs)
    frames = as_frame_source(video, fps, timestamps) if video is not None else iter(())
    items = iter_items(frames, questions, segmenter or FixedSegmenter(4.0), drop_after_last_question)
    engine = StreamEngine(model, processor, settings, overlap=overlap, realtime=realtime)
    threading.Thread(target=_feed, args=(engine, items), name="tww-feeder", daemon=True).start()
    yield from engine.events()


def _check_questions(questions) -> list[tuple[float, str]]:
    checked = []
    for entry in questions:
        try:
            seconds, text = entry
            seconds = float(seconds)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Each question is (seconds, text); got {entry!r}.") from error
        if seconds < 0 or not str(text).strip():
            raise ValueError(f"Question {entry!r} needs a time >= 0 seconds and a non-empty text.")
        checked.append((seconds, str(text)))
    return checked


def _feed(engine: StreamEngine, items) -> None:
    """Moves items into the engine; a source that breaks mid-way becomes an error event, then a clean end."""
    seen_frames = False
    try:
        for item in items:
            if isinstance(item, Question) and not seen_frames:
                engine.outputs.put(StreamError(f"The question at {item.time:.2f}s arrives before any video frame; "
                                               "it is answered without video."))
            seen_frames = seen_frames or isinstance(item, Segment)
            engine.put(item)
    except Exception as error:  # noqa: BLE001 -- any source failure ends the input cleanly, keeping what was read
        engine.stats["errors"] += 1
        engine.outputs.put(StreamError(f"The video source failed: {error}. Notes and answers so far are kept."))
    finally:
        engine.close()


class StreamSession:
    """A live stream: `push_frames(frames, timestamps)`, `ask(text)`, `events()`, `close()`.

    Frames are cut into segments by the session's segmenter; `ask` cuts the open segment so the question comes after
    every frame pushed before it. Since a live stream's last unit is unknown until `close()`, the user-turn close is
    read at `close()` (a stream from `stream_generate` attaches it to its last unit, as in training).
    """

    def __init__(self, model, processor, segmenter=None, overlap: bool = True, generation_config=None,
                 **decode_kwargs):
        from .sources_tww import FixedSegmenter

        self.segmenter = segmenter or FixedSegmenter(4.0)
        settings = DecodeSettings.from_generation_config(generation_config, **decode_kwargs)
        self.engine = StreamEngine(model, processor, settings, overlap=overlap, realtime=False)
        self.last_time: float | None = None
        self.closed = False

    def push_frames(self, frames, timestamps) -> None:
        """Adds frames `(N, H, W, 3)` (or one `(H, W, 3)`) with their stream times in seconds."""
        self._check_open()
        frames = [frames] if getattr(frames, "ndim", 4) == 3 else list(frames)
        timestamps = [float(timestamps)] if isinstance(timestamps, (int, float)) else [float(t) for t in timestamps]
        if len(frames) != len(timestamps):
            raise ValueError(f"push_frames got {len(frames)} frames and {len(timestamps)} timestamps; pass one each.")
        times = ([self.last_time] if self.last_time is not None else []) + timestamps
        if any(b < a for a, b in zip(times, times[1:])):
            raise ValueError(f"Timestamps go backwards ({times}); frames must be pushed in stream order. "
                             "Nothing was added.")
        for frame, stamp in zip(frames, timestamps):
            for segment in self.segmenter.push(frame, stamp):
                self.engine.put(segment)
        self.last_time = timestamps[-1] if timestamps else self.last_time

    def ask(self, text: str, time: float | None = None) -> None:
        """Asks a question now (default: at the latest frame's time)."""
        self._check_open()
        time = self.last_time if time is None else float(time)
        if time is None:
            time = 0.0
            message = "A question was asked before any frame; it is answered without video."
            self.engine.outputs.put(StreamError(message))
        for segment in self.segmenter.flush():
            self.engine.put(segment)
        self.engine.put(Question(time, text))

    def close(self) -> None:
        if self.closed:
            return
        for segment in self.segmenter.flush():
            self.engine.put(segment)
        self.engine.close()
        self.closed = True

    def events(self):
        return self.engine.events()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("This stream session is closed; start a new one with model.start_stream(...).")
