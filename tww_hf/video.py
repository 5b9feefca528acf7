"""Video in and out for the CLI: decode a file with PyAV at a target fps, write a synthetic clip, cut segments."""

from pathlib import Path

import numpy as np


def _require_av():
    try:
        import av
    except ImportError as error:
        raise ImportError("Reading and writing video needs PyAV: pip install 'tww-hf[video]'.") from error
    return av


def read_video(path: str | Path, fps: float = 1.0) -> tuple[np.ndarray, list[float]]:
    """Decodes `path` and keeps about `fps` frames per second.

    Returns:
        frames (`np.ndarray` of shape `(N, H, W, 3)`, uint8) and their timestamps in seconds.
    """
    av = _require_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video file {path} does not exist.")
    frames, times, next_time = [], [], 0.0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                time = float(frame.time if frame.time is not None else len(times) / fps)
                if time + 1e-6 >= next_time:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(time)
                    next_time = time + 1.0 / fps
    except av.error.FFmpegError as error:
        raise ValueError(f"Cannot decode {path}: {error}. Is it a video file FFmpeg can read?") from error
    if not frames:
        raise ValueError(f"{path} has no decodable video frames.")
    return np.stack(frames), times


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


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Writes `frames` `(N, H, W, 3)` uint8 to an mp4 file (MPEG-4 part 2, which every FFmpeg build has)."""
    av = _require_av()
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=int(round(fps)))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def question_aligned_segments(
    times: list[float], questions: list[float], max_seconds: float = 60.0, recut_seconds: float = 30.0
) -> list[tuple[int, int]]:
    """Frame index ranges `[start, end)` cut at question times; pieces longer than `max_seconds` are re-cut into
    `recut_seconds` (the paper's 60/30 rule). Frames after the last question are dropped (nothing asks about them)."""
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("Frame timestamps go backwards; pass frames in stream order.")
    cuts = sorted(questions)
    segments, start = [], 0
    for cut in cuts:
        end = sum(1 for t in times if t <= cut)
        while end > start and times[end - 1] - times[start] > max_seconds:
            stop = start + sum(1 for t in times[start:end] if t - times[start] < recut_seconds)
            segments.append((start, stop))
            start = stop
        if end > start:
            segments.append((start, end))
            start = end
    return segments
