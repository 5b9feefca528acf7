"""The `tww` command line: watch a real mp4 written by the test, the demo, and the errors a user can hit."""

import json

import pytest

from tww_hf.cli import main
from tww_hf.video import read_video, synthetic_frames, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, _ = synthetic_frames(seconds=6.0, fps=2.0)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=2.0)


def test_read_video_resamples_fps(clip):
    frames, times = read_video(clip, fps=1.0)
    assert frames.shape[1:] == (64, 64, 3) and frames.dtype.name == "uint8"
    assert times == sorted(times) and all(b - a >= 0.99 for a, b in zip(times, times[1:]))
    assert len(frames) == 6


def test_watch_json_events(clip, capsys):
    assert main(["watch", str(clip), "--fps", "2", "--ask", "2.5: What color is the square?", "--json",
                 "--max-note-tokens", "3", "--max-answer-tokens", "3", "--segment-seconds", "2"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "summary" and "answer" in kinds and "note" in kinds
    answer = next(e for e in events if e["event"] == "answer")
    assert answer["question"] == "What color is the square?" and answer["arrival"] == 2.5
    assert all(e["text"] is not None for e in events if e["event"] in ("note", "answer"))
    reads = [e for e in events if e["event"] in ("segment", "question")]
    assert [e["unit"] for e in reads] == list(range(len(reads)))
    assert all(e["tokens"] <= 3 for e in events if e["event"] in ("note", "answer"))


def test_watch_no_overlap_prints_timings(clip, capsys):
    assert main(["watch", str(clip), "--fps", "2", "--no-overlap", "--ask", "3: What moved?",
                 "--max-note-tokens", "2", "--max-answer-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "Q: What moved?" in out and "answered in" in out and "(interleaved)" in out


def test_demo_runs_with_another_checkpoint(processor, tmp_path, capsys):
    from tww_hf.tiny import tiny_model

    tiny_model(processor=processor).save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    assert main(["demo", "--model", str(tmp_path / "ckpt"), "--max-note-tokens", "2",
                 "--max-answer-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "held-out synthetic clip" in out and "gold answer:" in out and "demo: " in out


def test_demo_without_a_shipped_model_names_the_training_script(tmp_path, monkeypatch, capsys):
    import tww_hf.demo

    monkeypatch.setattr(tww_hf.demo, "PACKAGED", tmp_path / "none")
    assert main(["demo"]) == 2
    assert "train_demo_model.py" in capsys.readouterr().err


@pytest.mark.parametrize("ask", ["no time", "-1: q", "3:"])
def test_bad_question_is_rejected(clip, ask):
    with pytest.raises(SystemExit):
        main(["watch", str(clip), "--ask", ask])


def test_missing_and_corrupt_video(tmp_path, capsys):
    assert main(["watch", str(tmp_path / "missing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video")
    assert main(["watch", str(tmp_path / "bad.mp4")]) == 1
    assert "Cannot open video" in capsys.readouterr().out


def test_every_python_package_is_in_the_wheel():
    """A regular (non-editable) install ships only the packages pyproject lists; an unlisted subpackage works in the
    editable development install and breaks for users (tww_hf.evaluation was missing once)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, found = set(setuptools["packages"]), set()
    for package, folder in setuptools["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(root / folder).parts
            found.add(".".join((package, *relative)))
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
