"""The model plug-in: parity with stock Qwen3-VL (invariant 1), config checks, Auto classes, save/load, remote code."""

import os
import subprocess
import sys
import tempfile

import pytest
import torch
from conftest import BLOCK_TWW_HF, concat_source
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

import tww_hf
from tww_hf import TWWConfig, TWWForConditionalGeneration, TWWProcessor
from tww_hf.tiny import tiny_config


TWW_ONLY_KEYS = (
    "eoq_token_id",
    "eot_token_id",
    "target_start_pos",
    "model_type",
    "auto_map",
    "architectures",
    "transformers_version",
    "dtype",
)


@pytest.fixture(scope="module")
def stock(model):
    """Stock Qwen3-VL (its own default attention, sdpa) with the TWW model's weights."""
    fields = {k: v for k, v in model.config.to_dict().items() if k not in TWW_ONLY_KEYS}
    stock = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**fields)).eval()
    stock.load_state_dict(model.state_dict())
    assert stock.config._attn_implementation == "sdpa"
    return stock


def test_public_names():
    assert tww_hf.TWWConfig is TWWConfig
    assert tww_hf.TWWForConditionalGeneration is TWWForConditionalGeneration
    assert tww_hf.TWWProcessor is TWWProcessor


def test_default_attention_is_tww_adaptive_on_every_part(model):
    assert model.config._attn_implementation == "tww_adaptive"
    assert model.config.text_config._attn_implementation == "tww_adaptive"
    assert model.config.vision_config._attn_implementation == "tww_adaptive"


def test_explicit_attention_choice_wins():
    config = tiny_config()
    config._attn_implementation = "sdpa"
    assert TWWForConditionalGeneration(config).config.text_config._attn_implementation == "sdpa"


def test_parity_text_only(model, stock, processor):
    ids = torch.tensor([processor.encode_text("What color is the ball? The ball is red.")])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, stock(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_parity_video(model, stock, units):
    inputs = concat_source(units)
    with torch.no_grad():
        tww_logits = model(**inputs).logits
        stock_logits = stock(**inputs).logits
    assert inputs["video_grid_thw"].shape[0] == 3
    torch.testing.assert_close(tww_logits, stock_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eoq_token_id": 10**7}, "eoq_token_id"),
        ({"eot_token_id": -1}, "eot_token_id"),
        ({"eoq_token_id": 9, "eot_token_id": 9}, "distinct"),
        ({"target_start_pos": -3}, "target_start_pos"),
    ],
)
def test_config_rejects_bad_fields(overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**overrides)


def test_config_without_stream_ids_says_how_to_fix():
    with pytest.raises(ValueError, match="tww convert"):
        TWWConfig().require_stream_token_ids()


def test_auto_classes_resolve_in_process(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), TWWConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is TWWForConditionalGeneration
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path)) is TWWForConditionalGeneration


def test_save_load_round_trip(model, processor, tmp_path):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.eoq_token_id == model.config.eoq_token_id
    assert loaded.config.target_start_pos == 0
    ids = torch.tensor([processor.encode_text("hello stream")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)
    written = set(os.listdir(tmp_path))
    assert {
        "modeling_tww.py",
        "configuration_tww.py",
        "attention_tww.py",
        "cache_tww.py",
        "streaming_tww.py",
        "processing_tww.py",
    } <= written


def test_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is TWWProcessor
    assert (loaded.segment_prefix, loaded.question_prefix) == (processor.segment_prefix, processor.question_prefix)
    assert loaded.eoq_token_id == processor.eoq_token_id
    assert loaded.video_processor.size == processor.video_processor.size


REMOTE_LOAD = BLOCK_TWW_HF + """
import sys
import torch
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
other = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True)
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
ids = torch.tensor([processor.encode_text("hello stream")])
with torch.no_grad():
    logits = model(input_ids=ids).logits
torch.save(logits, sys.argv[2])
import numpy as np
frames = np.zeros((4, 64, 64, 3), dtype=np.uint8)
events = list(model.stream_generate(processor, frames, [(1.0, "What is there?")], fps=2.0, max_note_tokens=2,
                                    max_answer_tokens=2))
assert [e.kind for e in events].count("answer") == 1 and events[-1].kind == "summary", [e.kind for e in events]
print(type(model).__module__, type(other).__name__, type(processor).__name__, model.config._attn_implementation)
"""


def test_remote_code_load_without_tww_hf(model, processor, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp(prefix="tww-remote-"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(tmp_path / "ckpt"), str(tmp_path / "logits.pt")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, other, processor_class, attention = result.stdout.split()
    assert module.startswith("transformers_modules.") and module.endswith(".modeling_tww")
    assert (other, processor_class, attention) == ("TWWForConditionalGeneration", "TWWProcessor", "tww_adaptive")
    ids = torch.tensor([processor.encode_text("hello stream")])
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), model(input_ids=ids).logits, atol=0, rtol=0)
