"""Training: the collator against a hand-worked example, packed loss == incremental streaming loss, TRL + LoRA."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_reference_record
from test_streaming import incremental_target_logits

from tww_hf.data import RecordError, validate_record
from tww_hf.tiny import tiny_model
from tww_hf.trainer.collator import IGNORE_INDEX, TWWDataCollator
from tww_hf.trainer.sft import TWWSFTConfig, build_trainer
from tww_hf.trainer.stages import load_dataset
from tww_hf.video import synthetic_frames, write_video


def in_memory_record(seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    return {
        "id": f"mem-{seed}",
        "frames": frames,
        "timestamps": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5],
        "units": [
            {"kind": "segment", "start": 0.0, "end": 1.0, "note": "a red square"},
            {"kind": "question", "time": 1.0, "question": "What color?", "answer": "It is red.\nAnswer: A"},
            {"kind": "segment", "start": 1.5, "end": 2.5, "note": "it moves left"},
        ],
    }


def test_collator_hand_worked_example(processor):
    record = in_memory_record()
    batch = TWWDataCollator(processor)([record])
    text = processor.encode_text
    eot, eoq, end = processor.eot_token_id, processor.eoq_token_id, processor.end_token_id
    # Source: header + segment 1 (frames 0, 0.5, 1.0 -> padded to 4: patches at 0.25 s and 1.0 s) | question | seg 2
    segment_1 = processor.encode_segment(record["frames"][:3], [0.0, 0.5, 1.0])
    segment_2 = processor.encode_segment(record["frames"][3:], [1.5, 2.0, 2.5])
    source = (text(processor.source_header) + segment_1.input_ids[0].tolist() + text("What color?") + [eoq]
              + segment_2.input_ids[0].tolist() + text("<|im_end|>\n"))
    assert processor.tokenizer.decode(segment_1.input_ids[0]).startswith("<0.2 seconds>")
    note_1 = text("<|im_start|>assistant\n[SEG THINK]\nFocus: ") + text("a red square") + [eot]
    answer = text("\n\n[Q THINK]\nReasoning: ") + text("It is red.\nAnswer: A") + [eoq]
    note_2 = text("[SEG THINK]\nFocus: ") + text("it moves left") + [eot, end]
    assert batch["input_ids"][0].tolist() == source + note_1 + answer + note_2
    header = len(text("<|im_start|>assistant\n[SEG THINK]\nFocus: "))
    expected_labels = ([IGNORE_INDEX] * (len(source) + header) + text("a red square") + [eot]
                       + [IGNORE_INDEX] * len(text("\n\n[Q THINK]\nReasoning: ")) + text("It is red.\nAnswer: A")
                       + [eoq] + [IGNORE_INDEX] * len(text("[SEG THINK]\nFocus: ")) + text("it moves left")
                       + [eot, end])
    assert batch["labels"][0].tolist() == expected_labels
    # Mask: the <EOT> of note 1 sees the question too (deferred boundary); note 1's content does not.
    source_1 = len(text(processor.source_header)) + len(segment_1)
    eot_row = len(source) + len(note_1) - 1
    mask = batch["attention_mask"][0, 0]
    assert mask[eot_row, : source_1 + len(text("What color?")) + 1].all()
    assert not mask[eot_row - 1, source_1:len(source)].any() and mask[eot_row - 1, :source_1].all()
    # Positions: target is a 1-D counter from 0 on all three axes; the source ends where get_rope_index says.
    positions = batch["position_ids"][:, 0]
    assert positions[:, len(source):].tolist() == [list(range(len(batch["input_ids"][0]) - len(source)))] * 3
    assert batch["video_grid_thw"].tolist() == [[2, 4, 4], [2, 4, 4]]
    assert batch["mm_token_type_ids"][0].eq(2).sum() == 16


def test_collator_pads_batches_and_refuses_packing(processor):
    short = in_memory_record(1)
    short["units"] = short["units"][:1]
    batch = TWWDataCollator(processor)([in_memory_record(), short])
    n_short = int((batch["labels"][1] != IGNORE_INDEX).nonzero().max()) + 1
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"][1, n_short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][1, 0, n_short:, :n_short].sum() == 0  # padding rows see no real token
    with pytest.raises(ValueError, match="never packs"):
        TWWDataCollator(processor, pack_samples=True)


def test_target_start_jitter_moves_only_the_target_axis(processor):
    """Each sample's target counter starts at a random offset in [0, jitter]; the source positions, tokens, labels
    and mask stay those of the unjittered batch."""
    records = [in_memory_record(seed) for seed in range(8)]
    plain = TWWDataCollator(processor)(records)
    torch.manual_seed(0)
    jittered = TWWDataCollator(processor, target_start_jitter=50)(records)
    source = len(TWWDataCollator(processor).encode(records[0]).source_ids)  # the records share their layout
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(plain[key], jittered[key])
    assert torch.equal(plain["position_ids"][:, :, :source], jittered["position_ids"][:, :, :source])
    offsets = jittered["position_ids"][:, :, source:] - plain["position_ids"][:, :, source:]  # (3, B, T)
    per_sample = offsets[0, :, 0]
    assert (offsets == per_sample.view(1, -1, 1)).all()  # one constant shift per sample, on all three axes
    assert per_sample.min() >= 0 and per_sample.max() <= 50 and len(set(per_sample.tolist())) > 1
    with pytest.raises(ValueError, match="target_start_jitter"):
        TWWDataCollator(processor, target_start_jitter=-1)


def test_packed_loss_equals_incremental_streaming_loss(model, processor):
    """Ties training to invariant 3: the packed loss is the mean of the per-token losses of incremental streaming."""
    record = in_memory_record()
    batch = TWWDataCollator(processor)([record])
    with torch.no_grad():
        packed_loss = model(**batch).loss
    collator = TWWDataCollator(processor)
    sample = collator.encode(record)
    frames = record["frames"]
    units = processor.build_source([
        processor.encode_segment(frames[:3], [0.0, 0.5, 1.0]),
        processor.encode_question("What color?", 1.0),
        processor.encode_segment(frames[3:], [1.5, 2.0, 2.5]),
    ])
    targets, start = [], 0
    for length in sample.target_lengths:
        targets.append(sample.target_ids[start:start + length])
        start += length
    logits, _ = incremental_target_logits(model, processor, units, targets)
    labels = torch.tensor(sample.target_labels)
    rows = logits[:-1][labels[1:] != IGNORE_INDEX]  # row j predicts target token j + 1
    incremental_loss = torch.nn.functional.cross_entropy(rows, labels[1:][labels[1:] != IGNORE_INDEX])
    torch.testing.assert_close(packed_loss, incremental_loss, atol=1e-5, rtol=0)


def test_validator_names_record_and_field():
    record = in_memory_record()
    validate_record(record)
    cases = [
        (lambda r: r["units"][0].pop("note"), "units\\[0\\].*no `note`.*tww data build"),
        (lambda r: r["units"][1].update(answer=""), "units\\[1\\].*no `answer`"),
        (lambda r: r["units"][1].update(time=0.2), "goes backwards"),
        (lambda r: r["units"][2].update(start=0.5), "must not overlap"),
        (lambda r: r["units"][0].update(kind="clip"), "`kind` must be"),
        (lambda r: r.pop("frames"), "no video"),
    ]
    for mutate, message in cases:
        broken = in_memory_record()
        mutate(broken)
        with pytest.raises(RecordError, match=f"record 'mem-0'.*{message}"):
            validate_record(broken)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    """Two records over a real mp4, as the data pipeline writes them."""
    folder = tmp_path_factory.mktemp("data")
    frames, _ = synthetic_frames(seconds=4.0, fps=2.0)
    write_video(folder / "clip.mp4", frames, fps=2.0)
    records = []
    for i in range(2):
        records.append({"id": f"r{i}", "video": "clip.mp4", "fps": 2.0, "stage": 1, "units": [
            {"kind": "segment", "start": 0.0, "end": 1.5, "note": "a square on the left"},
            {"kind": "question", "time": 1.5, "question": "Where is the square?",
             "answer": "It was on the left.\nAnswer: B"},
            {"kind": "segment", "start": 2.0, "end": 3.5, "note": "the square moves right"},
        ]})
    for stage in (1, 2, 3):
        (folder / f"stage{stage}.jsonl").write_text("\n".join(json.dumps(r | {"stage": stage}) for r in records))
    return folder / "stage1.jsonl"


def train_args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
                    warmup_ratio=0.0, use_cpu=True, save_strategy="no", logging_steps=1, report_to="none",
                    gradient_checkpointing=False, seed=0)
    return TWWSFTConfig(**(settings | overrides))


def test_full_fine_tuning_changes_every_trainable_parameter(processor, jsonl, tmp_path):
    model = tiny_model(seed=1, processor=processor).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = build_trainer(model, processor, load_dataset(jsonl, 1), train_args(tmp_path))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(np.isfinite(losses))
    # Rows of ids that never occur in the data get no gradient; the weight decay of AdamW still moves them.
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    num_tokens = trainer.state.log_history[-2].get("num_tokens")
    assert num_tokens is not None and num_tokens < 3 * 2 * 400  # real tokens, not L² mask entries


def test_lora_trains_only_adapters_and_round_trips(processor, jsonl, tmp_path):
    from peft import PeftModel

    model = tiny_model(seed=2, processor=processor).train()
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = build_trainer(model, processor, load_dataset(jsonl, 1), train_args(tmp_path, lora_r=4))
    trainer.train()
    peft_model = trainer.model
    changed = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert changed and all("lora_" in name or "trainable_tokens" in name for name in changed)
    for name, parameter in peft_model.named_parameters():
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        if not parameter.requires_grad and clean in base:
            assert torch.equal(parameter, base[clean]), name
    ids = torch.tensor([processor.encode_text("What color is the square?")])
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_model(seed=2, processor=processor), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-5, rtol=0)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=0)


def test_packing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot be packed"):
        TWWSFTConfig(output_dir=str(tmp_path), packing=True)


@pytest.mark.slow
def test_tww_train_cli_saves_a_loadable_checkpoint(jsonl, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "tww_hf.cli", "train", "--tiny", "--data", str(jsonl), "--output",
         str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "2", "--cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True)
    assert type(model).__name__ == "TWWForConditionalGeneration"


@pytest.mark.slow
def test_two_process_accelerate_run(jsonl, tmp_path):
    """Two gloo processes on CPU. In accelerate 1.15 `--cpu` always starts one process; `--multi_gpu` starts N
    torchrun workers, and the trainer's `use_cpu=True` (tww train --cpu) makes them a MULTI_CPU group."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "tww_hf.cli", "train", "--tiny", "--data", str(jsonl), "--output",
         str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "1", "--cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "tww_training.json").read_text())["hardware"] == "2 x CPU"


def test_reference_records_convert_and_the_validator_says_build_notes(tmp_path):
    """The reference repository's format (conversations + segment_info, frames beside the JSON folder)."""
    from tww_hf.data import load_records, record_frames

    conversations = [{"from": "human", "timestamps": 2.0, "value": "<video>\nWhat is shown?"},
                     {"from": "gpt", "value": "A square.\nAnswer: A"},
                     {"from": "human", "timestamps": 4.0, "value": "Where did it go?"},
                     {"from": "gpt", "value": "Left.\nAnswer: C"}]
    path = write_reference_record(tmp_path, conversations)
    (record,) = load_records(path)
    assert [(u["kind"], u.get("end", u.get("time"))) for u in record["units"]] == [
        ("segment", 2.0), ("question", 2.0), ("segment", 4.0), ("question", 4.0)]
    assert record["units"][1]["answer"] == "A square.\nAnswer: A"
    loaded, times = record_frames(record)
    assert loaded.shape == (4, 64, 64, 3) and times == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(RecordError, match="no `note`.*tww data build"):
        validate_record(record)


@pytest.mark.slow
def test_curriculum_chains_stages(processor, jsonl, tmp_path):
    from tww_hf.trainer.stages import run_curriculum

    out = run_curriculum(jsonl.parent, tmp_path / "run", train_args(tmp_path, max_steps=1), tiny=True)
    assert out == tmp_path / "run" / "stage3"
    for stage in (1, 2, 3):
        assert (tmp_path / "run" / f"stage{stage}" / "model.safetensors").is_file()
