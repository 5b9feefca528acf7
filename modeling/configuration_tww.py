"""TWWConfig: Qwen3-VL's config plus the three fields the streaming method needs.

Shipped as remote code: only `transformers` imports are absolute; nothing from `tww_hf`.
"""

from huggingface_hub.dataclasses import strict
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLConfig


@strict
class TWWConfig(Qwen3VLConfig):
    r"""
    Configuration of a Think-While-Watching model: a Qwen3-VL model that reads a video stream into a source KV cache
    and writes memory notes and answers into a separate target stream (arXiv 2603.11896).

    Args:
        eoq_token_id (`int`, *optional*):
            Id of `<EOQ>`, which ends every question in the source stream and every answer in the target stream.
            `None` until the tokenizer has the token (`tww convert` sets it); streaming refuses to run without it.
        eot_token_id (`int`, *optional*):
            Id of `<EOT>`, which ends every memory note in the target stream.
        target_start_pos (`int`, *optional*, defaults to 0):
            First rotary position of the target stream. Target positions are a 1-D counter over every target token,
            independent of how much video has been read.

    Example:

    ```python
    >>> from tww_hf import TWWConfig, TWWForConditionalGeneration
    >>> config = TWWConfig(eoq_token_id=151669, eot_token_id=151670)
    >>> model = TWWForConditionalGeneration(config)
    ```
    """

    model_type = "tww"

    eoq_token_id: int | None = None
    eot_token_id: int | None = None
    target_start_pos: int = 0

    def validate_stream_token_ids(self):
        """Part of `@strict` validation: the TWW fields must be usable ids and a non-negative offset."""
        vocab_size = self.get_text_config(decoder=True).vocab_size
        for name in ("eoq_token_id", "eot_token_id"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value < vocab_size):
                raise ValueError(
                    f"TWWConfig.{name}={value!r} is not an id inside the vocabulary [0, {vocab_size}). "
                    f"Set it from the tokenizer: tokenizer.convert_tokens_to_ids('<{name[:3].upper()}>')."
                )
        if self.eoq_token_id is not None and self.eoq_token_id == self.eot_token_id:
            raise ValueError(
                f"TWWConfig.eoq_token_id and eot_token_id are both {self.eoq_token_id}; <EOQ> and <EOT> must be "
                "distinct tokens."
            )
        if not isinstance(self.target_start_pos, int) or self.target_start_pos < 0:
            raise ValueError(f"TWWConfig.target_start_pos must be an integer >= 0, got {self.target_start_pos!r}.")

    def require_stream_token_ids(self) -> tuple[int, int]:
        """Returns `(eoq_token_id, eot_token_id)`, raising a clear error when either is unset."""
        if self.eoq_token_id is None or self.eot_token_id is None:
            raise ValueError(
                "This checkpoint has no <EOQ>/<EOT> ids in its config (eoq_token_id / eot_token_id are None). "
                "Convert a stock Qwen3-VL checkpoint with `tww convert SRC OUT`, or set both ids from the tokenizer."
            )
        return self.eoq_token_id, self.eot_token_id


TWWConfig.register_for_auto_class()

__all__ = ["TWWConfig"]
