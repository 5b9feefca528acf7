"""TWWForConditionalGeneration: Qwen3-VL that reads a video stream into a source cache and writes into a target stream.

A thin subclass. With no streaming inputs it *is* `Qwen3VLForConditionalGeneration` (same weights, same logits). What
it adds:
  - `attn_implementation="tww_adaptive"` by default on the text and vision parts (routing by shape and mask);
  - `stream_read` / `stream_write`: the two streaming primitives over a `StreamingDynamicCache`, with positions passed
    explicitly (source: Qwen3-VL M-RoPE continued chunk by chunk; target: a 1-D counter), never `self.rope_deltas`;
  - the packed training forward needs nothing new: pass the 4-D streaming mask and the streaming position ids.

Stream state lives in the cache object; the model holds none.
"""

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLForConditionalGeneration

from .attention_tww import ATTENTION_NAME, set_attention_backend
from .cache_tww import SourceSnapshot, StreamingDynamicCache
from .configuration_tww import TWWConfig
from .engine_tww import StreamSession
from .engine_tww import stream_generate as _stream_generate
from .streaming_tww import target_position_ids


class TWWForConditionalGeneration(Qwen3VLForConditionalGeneration):
    config_class = TWWConfig
    _supports_attention_backend = True

    def __init__(self, config: TWWConfig):
        # Set before super().__init__ so the setter propagates to the text and vision sub-configs; an explicit user
        # choice (e.g. attn_implementation="sdpa") is kept.
        if config._attn_implementation is None:
            config._attn_implementation = ATTENTION_NAME
        super().__init__(config)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Overwritten -- one `_auto_class` per class is all transformers records; add the other Auto classes that
        # should resolve to this model when loaded with trust_remote_code.
        if self._auto_class is not None:
            target = f"modeling_tww.{type(self).__name__}"
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            for auto_class in ("AutoModelForImageTextToText", "AutoModelForMultimodalLM"):
                auto_map.setdefault(auto_class, target)
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- streaming
    def new_stream_cache(self) -> StreamingDynamicCache:
        """An empty `StreamingDynamicCache` for one stream of this model."""
        return StreamingDynamicCache(self.config)

    def source_position_ids(self, cache: StreamingDynamicCache, input_ids, mm_token_type_ids, video_grid_thw=None):
        """M-RoPE positions of a source chunk, continuing the stream: Qwen3-VL's `get_rope_index` over the chunk,
        shifted to start at the cache's next source position (largest so far + 1). Shape `(3, batch, n)`."""
        positions, _ = self.model.get_rope_index(input_ids, mm_token_type_ids, video_grid_thw=video_grid_thw)
        return positions + cache.next_source_position

    @torch.no_grad()
    def stream_read(
        self,
        cache: StreamingDynamicCache,
        input_ids: torch.LongTensor,
        mm_token_type_ids: torch.IntTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        **kwargs,
    ) -> SourceSnapshot:
        """Reads one source unit into `cache` (vision encoding and DeepStack for this chunk only); no logits.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, n)`): the unit's source tokens.
            mm_token_type_ids (`torch.IntTensor` of shape `(batch, n)`, *optional*): 0 text, 2 video.
            pixel_values_videos, video_grid_thw: the unit's video patches and grid, if it is a segment.

        Returns:
            `SourceSnapshot`: the source after this unit; pass it to `stream_write` for this unit's output.
        """
        if mm_token_type_ids is None:
            mm_token_type_ids = torch.zeros_like(input_ids, dtype=torch.int)
        position_ids = self.source_position_ids(cache, input_ids, mm_token_type_ids, video_grid_thw)
        self.model(
            input_ids=input_ids,
            mm_token_type_ids=mm_token_type_ids,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            position_ids=position_ids,
            past_key_values=cache.source_view(),
            use_cache=True,
            **kwargs,
        )
        cache.next_source_position = int(position_ids.max()) + 1
        snapshot = cache.snapshot()
        cache.unit_snapshots.append(snapshot)
        return snapshot

    @torch.no_grad()
    def stream_write(
        self,
        cache: StreamingDynamicCache,
        input_ids: torch.LongTensor,
        snapshot: SourceSnapshot | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> torch.Tensor:
        """Feeds target tokens; they attend to `snapshot`'s source prefix and every earlier target token.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, n)`): target tokens (forced prefix, boundary, content).
            snapshot (`SourceSnapshot`, *optional*): the source prefix this unit may see (default: all read so far).
            logits_to_keep (`int`): 0 for all rows, k for the last k.

        Returns:
            `torch.FloatTensor` of shape `(batch, n or k, vocab)`: next-token logits.
        """
        n = input_ids.shape[1]
        position_ids = target_position_ids(cache.next_target_position, n, input_ids.shape[0], input_ids.device)
        outputs = self(
            input_ids=input_ids,
            position_ids=position_ids,
            past_key_values=cache.target_view(snapshot),
            use_cache=True,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        cache.next_target_position += n
        return outputs.logits

    def stream_generate(self, processor, video=None, questions=(), overlap: bool = True, realtime: bool = False,
                        segmenter=None, generation_config=None, **kwargs):
        """Watches `video` and answers `questions` while it streams; yields typed events.

        Args:
            processor (`TWWProcessor`): the checkpoint's processor.
            video: a path or URL (decoded with PyAV), an array `(N, H, W, 3)` (with `fps=` or `timestamps=`), or an
                iterable of `(frame, seconds)`.
            questions: `[(seconds, text), ...]`; each is asked after every frame at or before its time.
            overlap (`bool`): keep reading while writing (TWW); False is the interleaved baseline. Greedy output is
                identical in both modes.
            realtime (`bool`): pace input at its timestamps against the wall clock (live); False runs flat out.
            segmenter: `FixedSegmenter(4.0)` by default; also `SceneChangeSegmenter`, `QuestionAlignedSegmenter`.
            generation_config (`GenerationConfig`, *optional*): sampling settings (greedy by default).
            **kwargs: `fps` (resample to this rate; by default files decode at 1 frame/s and an array with
                `timestamps` keeps every frame), `timestamps`, `drop_after_last_question`, `max_note_tokens`,
                `max_answer_tokens`, `max_total_tokens`, `min_note_tokens`, `min_answer_tokens`, `do_sample`,
                `temperature`, `top_k`, `top_p`, `seed`.

        Yields:
            `StreamEvent`s: `segment`, `question`, `note`, `answer_token`, `answer`, `error`, then one `summary`.
        """
        yield from _stream_generate(self, processor, video, questions, overlap=overlap, realtime=realtime,
                                    segmenter=segmenter, generation_config=generation_config, **kwargs)

    def start_stream(self, processor, segmenter=None, overlap: bool = True, generation_config=None, **kwargs):
        """A live `StreamSession`: `push_frames(frames, timestamps)`, `ask(text)`, `events()`, `close()`."""
        return StreamSession(self, processor, segmenter=segmenter, overlap=overlap,
                             generation_config=generation_config, **kwargs)

    @staticmethod
    def set_attention_backend(name: str | None) -> None:
        """Forces the `tww_adaptive` kernel ("flash", "xformers", "sdpa_efficient", "sdpa", "eager"; None = auto).
        Process-wide, like `torch.backends` flags; a forced backend that cannot run raises."""
        set_attention_backend(name)


TWWForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = ["TWWForConditionalGeneration"]
