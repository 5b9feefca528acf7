"""Frames in, stream items out: the minimal sources and the segmenters `stream_generate` needs as remote code.

A *frame source* is any iterable of `(frame, timestamp)`: frame an `(H, W, 3)` uint8 array, timestamp in seconds,
non-decreasing. A *segmenter* groups frames into segments; questions force a cut at their time, so a question at t
comes after every frame with timestamp <= t. `iter_items` turns both into the ordered stream of `Segment` /
`Question` items, marking the last one.
"""

import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    """Frames `(T, H, W, 3)` uint8 with their timestamps; `end` is the arrival time (the last frame's time)."""

    frames: np.ndarray
    timestamps: list[float]
    last: bool = False

    @property
    def start(self) -> float:
        return self.timestamps[0]

    @property
    def end(self) -> float:
        return self.timestamps[-1]


@dataclass
class Question:
    time: float
    text: str
    last: bool = False

    @property
    def end(self) -> float:
        return self.time


# ------------------------------------------------------------------------------------------------------ sources
DEFAULT_FPS = 1.0  # frames per second kept from a file, or assumed for an array without timestamps


def iter_video_file(path, fps: float = DEFAULT_FPS):
    """Decodes a file (or any URL FFmpeg opens) with PyAV, keeping about `fps` frames per second."""
    try:
        import av
    except ImportError as error:
        raise ImportError("Reading video needs PyAV: pip install av (or tww-hf[video]).") from error
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(f"Cannot open video {path}: {error}. Check the path/URL and that FFmpeg reads it.") from error
    next_time = 0.0
    with container:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                time = float(frame.time) if frame.time is not None else index / fps
                if time + 1e-6 >= next_time:
                    next_time = time + 1.0 / fps
                    yield frame.to_ndarray(format="rgb24"), time
        except av.error.FFmpegError as error:
            raise ValueError(f"Decoding {path} failed mid-stream: {error}.") from error


def iter_array(frames, timestamps=None, fps: float | None = None):
    """Frames `(N, H, W, 3)` with explicit timestamps, or evenly spaced at `fps`."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"Video frames must be an array (N, H, W, 3); got shape {frames.shape}.")
    if timestamps is None:
        if not fps:
            raise ValueError("In-memory frames need `timestamps` (seconds, one per frame) or `fps`.")
        timestamps = [i / fps for i in range(len(frames))]
    if len(timestamps) != len(frames):
        raise ValueError(f"Got {len(frames)} frames but {len(timestamps)} timestamps; pass one per frame.")
    yield from zip(frames, (float(t) for t in timestamps))


def resample(pairs, fps: float | None):
    """Keeps about `fps` of the (frame, seconds) pairs (the first frame at or after every 1/fps step)."""
    next_time, last = 0.0, None
    for frame, time in pairs:
        if last is not None and time < last:  # never hide bad input by dropping it
            raise ValueError(f"Frame timestamps go backwards ({time:.3f}s after {last:.3f}s); pass frames in "
                             "stream order.")
        last = time
        if fps is None or time + 1e-6 >= next_time:
            next_time = time + (1.0 / fps if fps else 0.0)
            yield frame, time


def as_frame_source(video, fps: float | None = None, timestamps=None):
    """A path/URL, an array, or an iterable of (frame, timestamp) -> an iterator of (frame, timestamp).

    `fps=None` (the default) decodes files at `DEFAULT_FPS` and keeps every frame of an array given with explicit
    `timestamps` (the caller already chose them); an array without timestamps is taken as `DEFAULT_FPS`. A given
    `fps` resamples any source to about that rate.
    """
    if isinstance(video, str) or hasattr(video, "__fspath__"):
        path = str(video)
        if "://" not in path and not path.startswith("/dev/") and not os.path.exists(path):
            raise FileNotFoundError(f"Video file {path} does not exist.")
        return iter_video_file(video, fps or DEFAULT_FPS)
    if isinstance(video, np.ndarray) or (hasattr(video, "shape") and hasattr(video, "ndim")):
        if timestamps is not None:
            return resample(iter_array(np.asarray(video), timestamps), fps)
        return iter_array(np.asarray(video), None, fps or DEFAULT_FPS)
    return iter(video) if fps is None else resample(iter(video), fps)


# --------------------------------------------------------------------------------------------------- segmenters
@dataclass
class FixedSegmenter:
    """Cuts every `seconds` of stream time (the live default)."""

    seconds: float = 4.0
    _frames: list = field(default_factory=list, repr=False)
    _times: list = field(default_factory=list, repr=False)

    def push(self, frame, time: float) -> list[Segment]:
        done = []
        if self._times and self._should_cut(frame, time):
            done = self.flush()
        self._frames.append(frame)
        self._times.append(time)
        return done

    def _should_cut(self, frame, time: float) -> bool:
        return time - self._times[0] >= self.seconds

    def flush(self) -> list[Segment]:
        """Closes the open segment (at a question or at the end of the stream)."""
        if not self._frames:
            return []
        segment = Segment(np.stack(self._frames), list(self._times))
        self._frames, self._times = [], []
        return [segment]


@dataclass
class SceneChangeSegmenter(FixedSegmenter):
    """Cuts where the mean absolute frame difference spikes above `threshold` times its running mean, keeping each
    segment between `min_seconds` and `seconds` long (content-aware cuts: the paper's suggested future work)."""

    min_seconds: float = 1.0
    threshold: float = 3.0
    _mean_diff: float = field(default=0.0, repr=False)

    def _should_cut(self, frame, time: float) -> bool:
        length = time - self._times[0]
        diff = float(np.abs(frame.astype(np.float32) - self._frames[-1].astype(np.float32)).mean())
        spike = self._mean_diff > 0 and diff > self.threshold * self._mean_diff
        self._mean_diff = diff if self._mean_diff == 0 else 0.8 * self._mean_diff + 0.2 * diff
        return length >= self.seconds or (spike and length >= self.min_seconds)


@dataclass
class QuestionAlignedSegmenter(FixedSegmenter):
    """The paper's evaluation rule: cut at question times; a piece longer than `max_seconds` is re-cut into
    `recut_seconds` chunks (60/30 by default). Needs the question times up front."""

    question_times: list = field(default_factory=list)
    max_seconds: float = 60.0
    recut_seconds: float = 30.0
    _piece_start: float | None = field(default=None, repr=False)

    def _should_cut(self, frame, time: float) -> bool:
        piece_start = self._piece_start if self._piece_start is not None else self._times[0]
        next_question = next((q for q in sorted(self.question_times) if q >= piece_start), None)
        long_piece = next_question is None or next_question - piece_start > self.max_seconds
        return long_piece and time - self._times[0] >= self.recut_seconds

    def flush(self, question: bool = False) -> list[Segment]:
        segments = super().flush()
        if question:  # a question closes the piece: the next piece starts after it
            self._piece_start = None
        elif segments and self._piece_start is None:
            self._piece_start = segments[0].start
        return segments


def iter_items(frames, questions, segmenter, drop_after_last_question: bool = False):
    """Segments and questions in arrival order, the last item marked `last=True`.

    Args:
        frames: iterable of `(frame, timestamp)`.
        questions: `[(seconds, text), ...]`, any order.
        segmenter: `FixedSegmenter`, `SceneChangeSegmenter`, `QuestionAlignedSegmenter` or compatible.
        drop_after_last_question: drop frames after the last question (the benchmark protocol).
    """
    pending = sorted((float(t), text) for t, text in questions)
    drop = drop_after_last_question and bool(pending)
    previous = None
    try:
        for item in _ordered_items(frames, pending, segmenter, drop):
            if previous is not None:
                yield previous
            previous = item
    except Exception:  # the source broke: hand over what was complete (not as the last item), then the error
        if previous is not None:
            yield previous
        raise
    if previous is None:
        raise ValueError("The stream has no frames and no questions.")
    previous.last = True
    yield previous


def _ordered_items(frames, pending, segmenter, drop_after_last_question: bool):
    last_time = None
    for frame, time in frames:
        if last_time is not None and time < last_time:
            raise ValueError(f"Frame timestamps go backwards ({time:.3f}s after {last_time:.3f}s); pass frames in "
                             "stream order.")
        last_time = time
        while pending and pending[0][0] < time:  # every frame at or before the question time comes first
            yield from _close_for_question(segmenter)
            question_time, text = pending.pop(0)
            yield Question(question_time, text)
        if drop_after_last_question and not pending:
            continue
        yield from segmenter.push(np.asarray(frame), time)
    yield from _close_for_question(segmenter) if pending else segmenter.flush()
    for question_time, text in pending:
        yield Question(question_time, text)


def _close_for_question(segmenter):
    if isinstance(segmenter, QuestionAlignedSegmenter):
        return segmenter.flush(question=True)
    return segmenter.flush()


@dataclass
class CountSegmenter(FixedSegmenter):
    """Cuts after `counts[k]` frames for segment k (a record's `segment_info[].num_frames`), then by `seconds`."""

    counts: list = field(default_factory=list)
    _done: int = field(default=0, repr=False)

    def _should_cut(self, frame, time: float) -> bool:
        if self._done < len(self.counts):
            return len(self._frames) >= self.counts[self._done]
        return super()._should_cut(frame, time)

    def flush(self) -> list[Segment]:
        segments = super().flush()
        self._done += len(segments)
        return segments
