"""`tww convert SRC OUT`: a stock Qwen3-VL checkpoint folder -> a TWW checkpoint (weights, config, processor, code).

Adds `<EOQ>` and `<EOT>` to the tokenizer as special single tokens (ids 151669 / 151670 on the stock Qwen3 tokenizer).
Stock Qwen3-VL embeddings have 151,936 rows, so the ids fit and nothing is resized; rows are grown only when an id
does not fit, and never shrunk. The rows of newly added tokens are set to the mean of the trained rows (those of the
original tokenizer). No other weight is touched: a missing or mismatched weight is an error, not a re-initialisation.
"""

import json
import logging
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import AutoImageProcessor, AutoTokenizer

from .modeling.configuration_tww import TWWConfig
from .modeling.modeling_tww import TWWForConditionalGeneration
from .modeling.processing_tww import TWWProcessor, TWWVideoProcessor


logger = logging.getLogger(__name__)

STREAM_TOKENS = ("<EOQ>", "<EOT>")
_CONFIG_KEYS_TO_DROP = ("model_type", "auto_map", "architectures", "transformers_version", "_name_or_path")


def read_stock_config(src: Path) -> dict:
    """The source's config.json as a dict, refusing anything that is not a stock Qwen3-VL checkpoint."""
    config_file = src / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{src} has no config.json; pass the folder of a Qwen3-VL checkpoint (e.g. Qwen3-VL-4B-Instruct)."
        )
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type == TWWConfig.model_type:
        raise ValueError(f"{src} is already a TWW checkpoint (model_type 'tww'); nothing to convert.")
    if model_type != "qwen3_vl":
        raise ValueError(
            f"{src} holds a {model_type!r} checkpoint; tww convert takes Qwen3-VL (model_type 'qwen3_vl')."
        )
    return config


def add_stream_tokens(tokenizer) -> list[str]:
    """Adds the missing TWW boundary tokens as special single tokens, in order; returns the ones added."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in STREAM_TOKENS if token not in vocab]
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in missing], special_tokens=True)
    return missing


def _set_rows_to_trained_mean(weight: torch.Tensor, row_ids: list[int], trained_rows: int) -> None:
    with torch.no_grad():
        weight[row_ids] = weight[:trained_rows].mean(dim=0, keepdim=True).to(weight.dtype)


def load_as_tww(src: Path, config: TWWConfig) -> TWWForConditionalGeneration:
    """Loads stock weights into the TWW class (same parameter names), refusing any missing or mismatched weight."""
    model, info = TWWForConditionalGeneration.from_pretrained(
        src, config=config, dtype="auto", output_loading_info=True
    )
    problems = {key: info.get(key) for key in ("missing_keys", "mismatched_keys") if info.get(key)}
    if problems:
        raise ValueError(f"{src} does not match the Qwen3-VL architecture of its config.json: {problems}.")
    return model


def build_processor(src: Path, tokenizer) -> TWWProcessor:
    """The stock image and video settings, the extended tokenizer and the TWW stream strings."""
    video_processor = TWWVideoProcessor.from_pretrained(src) if _has_video_config(src) else TWWVideoProcessor()
    chat_template = getattr(tokenizer, "chat_template", None)
    return TWWProcessor(
        image_processor=AutoImageProcessor.from_pretrained(src),
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )


def _has_video_config(src: Path) -> bool:
    return (src / "video_preprocessor_config.json").is_file() or (src / "processor_config.json").is_file()


def convert_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Converts a stock Qwen3-VL checkpoint folder into a TWW checkpoint folder; returns `out`."""
    src, out = Path(src), Path(out)
    stock = read_stock_config(src)
    tokenizer = AutoTokenizer.from_pretrained(src)
    trained_rows = len(tokenizer)
    added = add_stream_tokens(tokenizer)
    eoq_id, eot_id = (tokenizer.convert_tokens_to_ids(token) for token in STREAM_TOKENS)

    fields = {key: value for key, value in stock.items() if key not in _CONFIG_KEYS_TO_DROP}
    model = load_as_tww(src, TWWConfig(**fields))
    rows = model.get_input_embeddings().weight.shape[0]
    if max(eoq_id, eot_id) >= rows:  # grow only when the new ids do not fit; never shrink
        model.resize_token_embeddings(max(eoq_id, eot_id) + 1, mean_resizing=False)
        logger.info("Grew the embeddings from %d to %d rows for <EOQ>/<EOT>.", rows, max(eoq_id, eot_id) + 1)
    added_ids = [tokenizer.convert_tokens_to_ids(token) for token in added]
    if added_ids:
        _set_rows_to_trained_mean(model.get_input_embeddings().weight, added_ids, trained_rows)
        if not model.config.tie_word_embeddings:
            _set_rows_to_trained_mean(model.get_output_embeddings().weight, added_ids, trained_rows)
    model.config.eoq_token_id, model.config.eot_token_id = eoq_id, eot_id

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_processor(src, tokenizer).save_pretrained(out)
    return out


__all__ = ["convert_checkpoint", "add_stream_tokens"]
