"""The demo model's pieces: the `{times}` note prefix (collator and engine agree), the vision learning rate, the
embedded checkpoint and `tww demo`."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tww_hf.cli import main
from tww_hf.demo import CODE_FILES, PACKAGED, default_model_path
from tww_hf.tiny import tiny_model, tiny_processor
from tww_hf.trainer.collator import TWWDataCollator
from tww_hf.trainer.sft import TWWSFTConfig, TWWSFTTrainer, build_trainer
from tww_hf.trainer.stages import load_dataset


TIMED_PREFIX = "[SEG THINK] {times}\nFocus: "


def timed_processor():
    processor = tiny_processor()
    processor.segment_prefix = TIMED_PREFIX
    return processor


def two_segment_record():
    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    return {"id": "t", "fps": 2.0, "frames": frames, "timestamps": [i / 2 for i in range(8)], "units": [
        {"kind": "segment", "start": 0.0, "end": 1.5, "note": "a square"},
        {"kind": "segment", "start": 2.0, "end": 3.5, "note": "a circle"},
    ]}


def test_timed_prefix_repeats_the_segments_own_headers():
    processor = timed_processor()
    assert processor.target_prefix("segment", patch_times=(2.25, 3.25)) == (
        "[SEG THINK] <2.2 seconds><3.2 seconds>\nFocus: ")
    assert tiny_processor().target_prefix("segment", patch_times=(2.25,)) == "[SEG THINK]\nFocus: "  # default
    sample = TWWDataCollator(processor).encode(two_segment_record())
    decoded = processor.tokenizer.decode(sample.target_ids)
    assert "[SEG THINK] <0.2 seconds><1.2 seconds>\nFocus: a square" in decoded
    assert "[SEG THINK] <2.2 seconds><3.2 seconds>\nFocus: a circle" in decoded
    source = processor.tokenizer.decode(sample.source_ids)
    assert "<2.2 seconds><|vision_start|>" in source and "<3.2 seconds><|vision_start|>" in source


def test_engine_writes_the_same_timed_prefix_as_the_collator(monkeypatch):
    processor = timed_processor()
    model = tiny_model(processor=processor)
    record = two_segment_record()
    seen = []
    original = processor.target_prefix_ids

    def spy(kind, first=False, patch_times=(), question=""):
        seen.append((kind, tuple(patch_times), question))
        return original(kind, first, patch_times, question)

    monkeypatch.setattr(processor, "target_prefix_ids", spy)
    from tww_hf.modeling.sources_tww import FixedSegmenter

    events = list(model.stream_generate(processor, record["frames"], [], timestamps=record["timestamps"],
                                        segmenter=FixedSegmenter(2.0), fps=2.0, max_note_tokens=3, overlap=False))
    assert [e.kind for e in events].count("note") == 2
    assert seen == [("segment", (0.25, 1.25), ""), ("segment", (2.25, 3.25), "")]


def test_vision_learning_rate_scale(processor, tmp_path):
    import json

    from tww_hf.video import synthetic_frames, write_video

    frames, _ = synthetic_frames(seconds=2.0, fps=2.0)
    write_video(tmp_path / "clip.mp4", frames, fps=2.0)
    record = {"id": "r", "video": "clip.mp4", "fps": 2.0, "stage": 1,
              "units": [{"kind": "segment", "start": 0.0, "end": 1.5, "note": "a square"}]}
    (tmp_path / "stage1.jsonl").write_text(json.dumps(record))
    settings = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=1, learning_rate=1e-2,
                    warmup_ratio=0.0, use_cpu=True, save_strategy="no", report_to="none", seed=0,
                    gradient_checkpointing=False)
    model = tiny_model(seed=2, processor=processor).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = build_trainer(model, processor, load_dataset(tmp_path / "stage1.jsonl", 1),
                            TWWSFTConfig(vision_lr_scale=0.0, **settings))
    assert isinstance(trainer, TWWSFTTrainer)
    trainer.train()
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups][-1] == 0.0 and groups[-1]["weight_decay"] == 0.0
    vision = [n for n in before if ".visual." in f".{n}"]
    text = [n for n in before if ".visual." not in f".{n}"]
    params = dict(model.named_parameters())
    assert vision and all(torch.equal(params[n], before[n]) for n in vision)  # scale 0 freezes the tower
    assert any(not torch.equal(params[n], before[n]) for n in text)


needs_demo_model = pytest.mark.skipif(not (PACKAGED / "model.safetensors").is_file(),
                                      reason="the package ships no demo model")


@needs_demo_model
def test_default_model_path_is_a_complete_remote_code_checkpoint(tmp_path, monkeypatch):
    from transformers import AutoModel, AutoProcessor

    import tww_hf

    monkeypatch.setenv("TWW_HF_CACHE", str(tmp_path))
    path = default_model_path()
    assert path.parent == tmp_path and default_model_path() == path  # assembled once, then reused
    code = Path(tww_hf.modeling.__file__).parent
    for name in CODE_FILES:  # this installation's code, not a stale copy
        assert (path / name).read_bytes() == (code / name).read_bytes()
    model = AutoModel.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    assert type(model).__name__ == "TWWForConditionalGeneration"
    auto_map = model.config.auto_map  # what a machine without tww_hf resolves through trust_remote_code
    assert auto_map["AutoModel"] == "modeling_tww.TWWForConditionalGeneration"
    assert "{times}" in processor.segment_prefix
    size = sum(f.stat().st_size for f in PACKAGED.iterdir()) / 2**20
    assert size < 10, f"the embedded demo model is {size:.1f} MiB"


@needs_demo_model
def test_tww_demo_streams_and_summarises(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TWW_HF_CACHE", str(tmp_path))
    assert main(["demo", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "note:" in out and "A:" in out and "gold answer:" in out
    summary = [line for line in out.splitlines() if line.startswith("demo: ")]
    assert len(summary) == 1 and "answers correct" in summary[0] and "overlapped" in summary[0]


def note_word_accuracy(model, processor, records, words, shuffle: bool) -> float:
    """Teacher-forced accuracy at the note tokens naming a colour or shape, with the real or with shuffled frames."""
    ids = {i for i in range(len(processor.tokenizer)) if processor.tokenizer.decode([i]).strip() in words}
    batch = TWWDataCollator(processor)(records)
    if shuffle:  # the same patches, each given to another place and clip
        pixels = batch["pixel_values_videos"]
        batch["pixel_values_videos"] = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        predicted = model(**batch).logits[:, :-1].argmax(-1)
    labels = batch["labels"][:, 1:]
    named = torch.isin(labels, torch.tensor(sorted(ids)))
    return (predicted[named] == labels[named]).float().mean().item()


@needs_demo_model
def test_shipped_model_reads_its_frames(tmp_path, monkeypatch):
    """The embedded model names colours and shapes from the frames, not from priors: with the frames shuffled it
    does clearly worse (a blind checkpoint scores the same both ways)."""
    from transformers import AutoModel, AutoProcessor

    from tww_hf.evaluation.synthetic import EVAL_SEED_OFFSET
    from tww_hf.synth import build_record
    from tww_hf.world import COLORS, SHAPES, generate_world

    monkeypatch.setenv("TWW_HF_CACHE", str(tmp_path))
    path = default_model_path()
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    records = []
    for seed in range(16):  # held-out stage-1 clips
        record = build_record(1, EVAL_SEED_OFFSET + 700_000 + seed)
        world = generate_world(**record["world"])
        records.append(record | {"frames": world.render(), "timestamps": world.timestamps})
    for words in (set(COLORS), set(SHAPES)):  # each on its own: colours alone once hid that shapes were guessed
        real = note_word_accuracy(model, processor, records, words, shuffle=False)
        shuffled = note_word_accuracy(model, processor, records, words, shuffle=True)
        assert real > shuffled + 0.1, (sorted(words), real, shuffled)


def test_question_prefix_repeats_the_question_in_training_and_inference(monkeypatch):
    from tww_hf.modeling.sources_tww import FixedSegmenter

    processor = timed_processor()
    processor.question_prefix = "\n\n[Q THINK] {question}\nReasoning: "
    record = two_segment_record()
    record["units"].append({"kind": "question", "time": 3.5, "question": "<video>\nWhat is it?", "answer": "x"})
    decoded = processor.tokenizer.decode(TWWDataCollator(processor).encode(record).target_ids)
    assert "[Q THINK] What is it?\nReasoning: x" in decoded  # the text the source holds (placeholder stripped)
    seen, original = [], processor.target_prefix_ids
    monkeypatch.setattr(processor, "target_prefix_ids",
                        lambda kind, first=False, patch_times=(), question="": seen.append((kind, question))
                        or original(kind, first, patch_times, question))
    model = tiny_model(processor=processor)
    list(model.stream_generate(processor, record["frames"], [(3.5, "<video>\nWhat is it?")],
                               timestamps=record["timestamps"], segmenter=FixedSegmenter(2.0), max_note_tokens=2,
                               max_answer_tokens=2))
    assert ("question", "What is it?") in seen


def test_domain_tokenizer_splits_digits_like_qwen():
    """With `split_digits`, a header's time and a note's time share their digit tokens (as in Qwen's tokenizer), every
    text round-trips, and the special tokens stay single tokens; without it, BPE learns whole numbers."""
    from tww_hf.tiny import train_domain_tokenizer

    texts = ["At 24.0s a red square enters. Entries so far: 13.", "<24.0 seconds><24.5 seconds>"] * 50
    split = train_domain_tokenizer(texts, split_digits=True)

    def pieces(tokenizer, text):
        return [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]

    assert pieces(split, "<24.0 seconds>")[:5] == ["<", "2", "4", ".", "0"]
    assert pieces(split, "At 24.0s")[1:6] == [" ", "2", "4", ".", "0"]
    assert pieces(split, "so far: 13.")[-3:] == ["1", "3", "."]
    for text in texts + ["Answer: purple\n\n[Q THINK] x", "<EOT><EOQ>"]:
        assert split.decode(split.encode(text, add_special_tokens=False)) == text
    assert len(split.encode("<EOT>", add_special_tokens=False)) == 1
    whole = train_domain_tokenizer(texts)
    assert "24" in pieces(whole, "<24.0 seconds>") and " 24" in pieces(whole, "At 24.0s")
