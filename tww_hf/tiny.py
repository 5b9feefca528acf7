"""Tiny TWW models for tests, benchmarks and CPU demos: a byte-level BPE tokenizer with every Qwen special token the
processor needs, a 2-layer config (text hidden 64, vision depth 1-2) and a processor, all built offline in well under a
second.
"""

from functools import lru_cache

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .modeling.configuration_tww import TWWConfig
from .modeling.processing_tww import TWWProcessor, TWWVideoProcessor


# The special tokens a TWW processor uses, in Qwen's order, then the two TWW boundaries.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<EOQ>",
    "<EOT>",
]

# Text the tiny BPE learns merges from: the stream format itself, so prompts tokenize into few pieces.
_CORPUS = [
    "You are a helpful assistant.",
    "[SEG THINK]\nFocus: ",
    "\n\n[Q THINK]\nReasoning: ",
    "\nAnswer: A\nAnswer: B\nAnswer: C\nAnswer: D",
    "system\n",
    "user\n",
    "assistant\n",
    "<0.5 seconds> <1.0 seconds> <12.5 seconds> <123.0 seconds>",
    "What color is the ball? Which object appeared first? How many times did the red square move?",
    "a red circle moves left. a blue square appears. the green triangle is still. nothing has changed.",
]

TINY_VOCAB_SIZE = 512
# Qwen2/Qwen3's pre-tokenizer split (their tokenizer.json): every digit is its own piece, and so is the space before
# a number, so `<24.0 seconds>` and `At 24.0s` share the digit tokens `2` `4`.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
              r"\s+(?!\S)|\s+")


@lru_cache(maxsize=2)
def _tiny_tokenizer_json(stream_tokens: bool) -> str:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - 32,
        special_tokens=SPECIAL_TOKENS if stream_tokens else SPECIAL_TOKENS[:-2],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def tiny_tokenizer(stream_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer (< 512 ids) holding every special token TWW needs as single tokens.

    `stream_tokens=False` leaves out `<EOQ>`/`<EOT>`, like a stock Qwen3-VL tokenizer (for `tww convert` tests).
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json(stream_tokens)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    if stream_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<EOQ>", "<EOT>"]})
    return tokenizer


def train_domain_tokenizer(texts, vocab_size: int = 1024, split_digits: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learned from `texts` (e.g. the synthetic world's notes and questions), with every
    special token TWW needs (Qwen's vision/chat tokens, `<EOQ>`, `<EOT>`) as single tokens.

    `split_digits`: pre-tokenize as Qwen does (`QWEN_SPLIT`: one token per digit). Without it, BPE learns whole
    numbers, and `24` in a `<24.0 seconds>` header and ` 24` in a note are unrelated tokens: a small model then has
    to learn the header -> note-time mapping once per number, and only learns it for the times it trains on most."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts) + _CORPUS, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    )
    wrapped.add_special_tokens({"additional_special_tokens": ["<EOQ>", "<EOT>"]})
    return wrapped


def tiny_config(tokenizer=None, vision_depth: int = 1, hidden_size: int = 64, num_layers: int = 2,
                vision_hidden_size: int = 32, patch_size: int = 16, rope_theta: float = 1e4,
                **overrides) -> TWWConfig:
    """A TWW config small enough for CPU tests; special ids are read from `tokenizer` (default: `tiny_tokenizer()`).
    `hidden_size` / `num_layers` / `vision_hidden_size` scale the model up for benchmarks and the demo model
    (head_dim stays 16); `patch_size` must match the video processor's. `rope_theta`: 1e4 keeps test models'
    positions sharp; Qwen3-VL itself uses 5e6."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _CONFIG_TOKENS.items()}
    text_config = dict(
        vocab_size=max(TINY_VOCAB_SIZE, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 16,
        num_key_value_heads=max(1, hidden_size // 32),
        head_dim=16,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": rope_theta,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = dict(
        depth=vision_depth,
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_heads=vision_hidden_size // 16,
        patch_size=patch_size,
        temporal_patch_size=2,
        spatial_merge_size=2,
        out_hidden_size=hidden_size,
        num_position_embeddings=16,
        deepstack_visual_indexes=[0],
    )
    kwargs = dict(text_config=text_config, vision_config=vision_config, **ids)
    kwargs.update(overrides)
    return TWWConfig(**kwargs)


_CONFIG_TOKENS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "eoq_token_id": "<EOQ>",
    "eot_token_id": "<EOT>",
}


def tiny_video_processor(**overrides) -> TWWVideoProcessor:
    """Small frames -> few patches: at most 64x64 pixels per frame (1 to 4 merged tokens per temporal patch)."""
    settings = dict(size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64 * 256}, max_video_tokens=4)
    settings.update(overrides)
    return TWWVideoProcessor(**settings)


def tiny_processor(tokenizer=None, **video_overrides) -> TWWProcessor:
    """A TWW processor around the tiny tokenizer and a small-frame video processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    return TWWProcessor(
        image_processor=Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        video_processor=tiny_video_processor(**video_overrides),
    )


def tiny_model(seed: int = 0, processor=None, **config_overrides):
    """A randomly initialised tiny `TWWForConditionalGeneration` (fp32, eval mode) matching `processor`'s tokenizer."""
    import torch

    from .modeling.modeling_tww import TWWForConditionalGeneration

    tokenizer = processor.tokenizer if processor is not None else None
    torch.manual_seed(seed)
    return TWWForConditionalGeneration(tiny_config(tokenizer, **config_overrides)).eval()
