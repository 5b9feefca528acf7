import os
import tempfile


# Offline, and a private HF cache (remote-code module copies land there), before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="tww-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tww_hf  # noqa: E402, F401
from tww_hf.tiny import tiny_model, tiny_processor  # noqa: E402


@pytest.fixture(scope="session")
def processor():
    return tiny_processor()


@pytest.fixture(scope="session")
def model(processor):
    return tiny_model(seed=0, processor=processor)


def make_segment(processor, rng, start: float, frames: int, height: int = 64, width: int = 64):
    """A random segment of `frames` frames at 2 fps starting at `start` seconds."""
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    return processor.encode_segment(pixels, [start + 0.5 * i for i in range(frames)])


def make_units(processor, seed: int = 0):
    """3 segments (one non-square, one with an odd frame count) and 2 questions, header and close attached."""
    rng = np.random.default_rng(seed)
    units = [
        make_segment(processor, rng, 0.0, 4),
        processor.encode_question("What color is the ball?", 2.0),
        make_segment(processor, rng, 2.0, 3, 32, 64),
        make_segment(processor, rng, 4.0, 4),
        processor.encode_question("How many times did the red square move?", 6.0),
    ]
    return processor.build_source(units)


@pytest.fixture(scope="session")
def units(processor):
    return make_units(processor)


def concat_source(units):
    """One-shot inputs for the whole source: ids, token types, patches, grids."""
    videos = [u for u in units if u.pixel_values_videos is not None]
    return {
        "input_ids": torch.cat([u.input_ids for u in units], dim=1),
        "mm_token_type_ids": torch.cat([u.mm_token_type_ids for u in units], dim=1),
        "pixel_values_videos": torch.cat([u.pixel_values_videos for u in videos]),
        "video_grid_thw": torch.cat([u.video_grid_thw for u in videos]),
    }


# Prepended to scripts run in a fresh process that must not be able to import tww_hf (remote-code checks).
BLOCK_TWW_HF = """
import importlib.abc, sys
class BlockTwwHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tww_hf" or name.startswith("tww_hf."):
            raise ImportError("tww_hf is blocked in this process")
sys.meta_path.insert(0, BlockTwwHf())
"""


TWO_SEGMENTS = [{"start": 0, "end": 2, "num_frames": 2}, {"start": 2, "end": 4, "num_frames": 2}]


def write_reference_record(root, conversations, frame_times=(1.0, 2.0, 3.0, 4.0), segment_info=TWO_SEGMENTS,
                           name="data_000000.json"):
    """The reference repository's layout: `<root>/all_data/<name>` beside `<root>/raw_picture/0/*.jpg`; by default
    four frames at 1-4 s in two 2-frame segments ending at 2 s and 4 s."""
    import json

    from PIL import Image

    from tww_hf.video import synthetic_frames

    frames, _ = synthetic_frames(seconds=float(len(frame_times)), fps=1.0)
    (root / "raw_picture" / "0").mkdir(parents=True, exist_ok=True)
    names = [f"frame_{i:04d}.jpg" for i in range(len(frame_times))]
    for file_name, frame in zip(names, frames):
        Image.fromarray(frame).save(root / "raw_picture" / "0" / file_name)
    (root / "all_data").mkdir(exist_ok=True)
    path = root / "all_data" / name
    path.write_text(json.dumps({"conversations": conversations, "metadata": {
        "index": 0, "frames_path": "raw_picture/0", "frame_files": names, "sample_timestamps": list(frame_times),
        "segment_info": segment_info}}))
    return path
