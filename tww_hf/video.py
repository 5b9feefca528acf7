"""Video sources (file, live URL/webcam, frames directory, reference records, arrays, synthetic) and clip writing.

Every source yields `(frame, seconds)`: frame `(H, W, 3)` uint8, timestamps non-decreasing, resampled to `fps`.
"""

import json
import time
from pathlib import Path

import numpy as np

from .modeling.sources_tww import (  # noqa: F401  (re-exported: the remote-code half of the sources)
    CountSegmenter,
    FixedSegmenter,
    QuestionAlignedSegmenter,
    SceneChangeSegmenter,
    iter_array,
    iter_video_file,
    resample,
)


def _require_av():
    try:
        import av
    except ImportError as error:
        raise ImportError("Reading and writing video needs PyAV: pip install 'tww-hf[video]'.") from error
    return av


def read_video(path: str | Path, fps: float = 1.0) -> tuple[np.ndarray, list[float]]:
    """Decodes a whole file at about `fps` frames per second: frames `(N, H, W, 3)` uint8 and their timestamps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video file {path} does not exist.")
    pairs = list(iter_video_file(path, fps))
    if not pairs:
        raise ValueError(f"{path} has no decodable video frames.")
    return np.stack([frame for frame, _ in pairs]), [time for _, time in pairs]


def file_source(path: str | Path, fps: float = 1.0):
    """(frame, seconds) from a video file, decoded lazily at about `fps`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Video file {path} does not exist.")
    return iter_video_file(path, fps)


def live_source(url: str, fps: float = 1.0, format: str | None = None, max_seconds: float | None = None):
    """(frame, seconds since the first frame) from a live URL (rtsp://, http(s)://) or a device (/dev/video0 with
    format='v4l2'), through PyAV, at about `fps`; stops after `max_seconds` of stream time if given."""
    av = _require_av()
    try:
        container = av.open(url, format=format, options={"rtsp_transport": "tcp"} if url.startswith("rtsp") else {})
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(f"Cannot open live source {url}: {error}. Check the URL/device and its format.") from error
    start, next_time = None, 0.0
    with container:
        for frame in container.decode(video=0):
            # The frame's presentation time (its capture time), relative to the first; the wall clock if it has none.
            now = float(frame.time) if frame.time is not None else time.monotonic()
            start = now if start is None else start
            stamp = now - start
            if max_seconds is not None and stamp > max_seconds:
                return
            if stamp + 1e-6 >= next_time:
                next_time = stamp + 1.0 / fps
                yield frame.to_ndarray(format="rgb24"), stamp


def frames_dir_source(frames_dir: str | Path, frame_files: list[str], timestamps: list[float],
                      fps: float | None = None):
    """(frame, seconds) from extracted frame images (the reference data layout: `frames_path` + `frame_files` +
    `sample_timestamps`), keeping about `fps` of them if given."""
    if fps is not None:
        yield from resample(frames_dir_source(frames_dir, frame_files, timestamps), fps)
        return
    from PIL import Image

    frames_dir = Path(frames_dir)
    if len(frame_files) != len(timestamps):
        raise ValueError(f"{len(frame_files)} frame files but {len(timestamps)} timestamps; fix the record.")
    for name, stamp in zip(frame_files, timestamps):
        path = frames_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"Frame {path} is missing; check `frames_path` and `frame_files` in the record.")
        with Image.open(path) as image:
            yield np.asarray(image.convert("RGB")), float(stamp)


def reference_record_stream(record_path: str | Path):
    """A reference-format record (`video` or `frames_path` + `frame_files` + `sample_timestamps`, `conversations`,
    `metadata.segment_info`) -> `(frames, questions, segmenter)` for `stream_generate`. The frame root is the parent
    of the record's folder, as in the reference repository."""
    record_path = Path(record_path)
    record = json.loads(record_path.read_text())
    meta = record.get("metadata", record)
    questions = [
        (float(turn["timestamps"]), turn["value"])
        for turn in record.get("conversations", [])
        if turn.get("from") == "human" and turn.get("timestamps") is not None
    ]
    counts = [int(segment["num_frames"]) for segment in meta.get("segment_info", [])]
    segmenter = CountSegmenter(seconds=30.0, counts=counts)
    if meta.get("frame_files"):
        root = record_path.parent.parent / meta.get("frames_path", "")
        return frames_dir_source(root, meta["frame_files"], meta["sample_timestamps"]), questions, segmenter
    video = file_source(record_path.parent / record["video"], fps=float(meta.get("sample_fps", 1.0)))
    return video, questions, segmenter


def synthetic_source(seconds: float, fps: float = 2.0, size: int = 64, seed: int = 0):
    """(frame, seconds) of `synthetic_frames`."""
    frames, times = synthetic_frames(seconds, fps, size, seed)
    return iter_array(frames, times)


def synthetic_frames(
    seconds: float, fps: float = 2.0, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """A coloured square moving over a dark background, changing colour every few seconds."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(64, 256, size=(16, 3))
    count = max(1, int(round(seconds * fps)))
    frames = np.zeros((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        t = i / fps
        x = int((size - 16) * (0.5 + 0.5 * np.sin(t)))
        frames[i, 24:40, x : x + 16] = colors[int(t // 4) % len(colors)]
    return frames, [i / fps for i in range(count)]


def write_video(path: str | Path, frames: np.ndarray, fps: float, start: float = 0.0) -> Path:
    """Writes `frames` `(N, H, W, 3)` uint8 to an mp4 file (MPEG-4 part 2, which every FFmpeg build has); the first
    frame is presented at `start` seconds (a multiple of 1 / fps), which the file sources report as its time."""
    from fractions import Fraction

    av = _require_av()
    path, rate = Path(path), int(round(fps))
    first = round(start * rate)
    if abs(first - start * rate) > 1e-6 or first < 0:
        raise ValueError(f"start must be a non-negative multiple of 1 / fps = {1 / rate}s, got {start}.")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000  # near-lossless for small synthetic frames (the default blurs colours badly)
        stream.codec_context.time_base = Fraction(1, rate)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = first + index, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
