"""TWWProcessor: builds the two TWW streams (source units and target prefixes) from frames, timestamps and questions.

Shipped as remote code (relative imports only between shipped files). The video processor is torch-only: the
torchvision build that stock `Qwen3VLVideoProcessor` needs cannot be installed on CPU machines.

Source stream (what the model watches and reads), one unit per segment or question, in arrival order:

    [system + user header] <t seconds><|vision_start|><|video_pad|>*N<|vision_end|> ... question<EOQ> ... <|im_end|>\n

Target stream (what the model writes), one unit per source unit:

    <|im_start|>assistant\n[SEG THINK]\nFocus: note<EOT>\n\n[Q THINK]\nReasoning: ...\nAnswer: B<EOQ> ... <|im_end|>
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor


SEGMENT = "segment"
QUESTION = "question"


class TWWVideoProcessor(Qwen3VLVideoProcessor):
    """`Qwen3VLVideoProcessor` with its three torchvision calls replaced by plain torch (same signatures)."""

    def convert_to_rgb(self, video: torch.Tensor) -> torch.Tensor:
        # Overwritten -- torchvision-free. video: (T, C, H, W); grey -> 3 channels, RGBA -> drop alpha.
        if video.shape[-3] == 1:
            return video.expand(*video.shape[:-3], 3, *video.shape[-2:])
        return video[..., :3, :, :]

    def resize(self, videos, size, resample=None, factor=32, temporal_factor=2, cap_pixels_per_frame=None, **kwargs):
        # Overwritten -- the parent computes the target size, then calls torchvision; we interpolate in torch.
        height, width = self._target_size(videos, size, factor, temporal_factor, cap_pixels_per_frame)
        frames = videos.reshape(-1, *videos.shape[-3:]).float()
        frames = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        return frames.clamp_(0, 255).reshape(*videos.shape[:-2], height, width)

    def _target_size(self, videos, size, factor, temporal_factor, cap_pixels_per_frame) -> tuple[int, int]:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        num_frames = videos.shape[1]
        max_pixels = size.longest_edge
        if cap_pixels_per_frame:
            frame_cap = self.max_video_tokens * factor * factor
            pixels_per_frame = max(min(frame_cap, size.longest_edge // num_frames), int(size.shortest_edge * 1.05))
            max_pixels = pixels_per_frame * num_frames
        return smart_resize(
            num_frames=max(num_frames, temporal_factor),
            height=videos.shape[-2],
            width=videos.shape[-1],
            factor=factor,
            temporal_factor=temporal_factor,
            min_pixels=size.shortest_edge,
            max_pixels=max_pixels,
        )

    def rescale_and_normalize(self, images, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        # Overwritten -- torchvision-free fused rescale + normalize over the channel axis (-3).
        images = images.float()
        if do_rescale:
            images = images * rescale_factor
        if do_normalize:
            mean = torch.as_tensor(image_mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
            std = torch.as_tensor(image_std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
            images = (images - mean) / std
        return images


@dataclass
class SourceUnit:
    """One unit R_u of the source stream, ready for `TWWForConditionalGeneration.stream_read`.

    Attributes:
        kind (`str`): "segment" or "question".
        input_ids (`torch.LongTensor` of shape `(1, n)`): source tokens (header/close included if first/last).
        mm_token_type_ids (`torch.IntTensor` of shape `(1, n)`): 0 text, 2 video.
        pixel_values_videos (`torch.FloatTensor` of shape `(patches, patch_dim)`, *optional*): its patches.
        video_grid_thw (`torch.LongTensor` of shape `(1, 3)`, *optional*): `[temporal patches, h, w]`.
        start (`float`), end (`float`): stream time covered (seconds); a question has start == end == its time.
        text (`str`, *optional*): the question text.
        patch_times (`tuple` of `float`): a segment's `<t seconds>` header times, one per temporal patch.
    """

    kind: str
    input_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    start: float = 0.0
    end: float = 0.0
    text: str | None = None
    patch_times: tuple = ()

    def __len__(self) -> int:
        return self.input_ids.shape[-1]

    def model_inputs(self) -> dict:
        """Keyword arguments for `stream_read` (only the ones that are set)."""
        inputs = {"input_ids": self.input_ids, "mm_token_type_ids": self.mm_token_type_ids}
        if self.pixel_values_videos is not None:
            inputs.update(pixel_values_videos=self.pixel_values_videos, video_grid_thw=self.video_grid_thw)
        return inputs


class TWWProcessor(Qwen3VLProcessor):
    """Qwen3-VL processor plus the TWW stream format. Prompt strings are saved with the processor.

    Args:
        system_prompt (`str`): text of the system turn.
        assistant_header (`str`): first text of the target stream.
        segment_prefix (`str`): forced before every memory note.
        question_prefix (`str`): forced before every reasoning + answer.
        eoq_token (`str`), eot_token (`str`): the boundary tokens (ids come from the tokenizer).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        video_processor=None,
        chat_template=None,
        system_prompt: str = "You are a helpful assistant.",
        assistant_header: str = "<|im_start|>assistant\n",
        segment_prefix: str = "[SEG THINK]\nFocus: ",
        question_prefix: str = "\n\n[Q THINK]\nReasoning: ",
        eoq_token: str = "<EOQ>",
        eot_token: str = "<EOT>",
        **kwargs,
    ):
        self.system_prompt = system_prompt
        self.assistant_header = assistant_header
        self.segment_prefix = segment_prefix
        self.question_prefix = question_prefix
        self.eoq_token = eoq_token
        self.eot_token = eot_token
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        # Overwritten -- without torchvision the video-processor mapping holds a dummy class, so the stock isinstance
        # check rejects every real video processor, ours included.
        return None

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # Overwritten -- the stock loader fetches the video processor through AutoVideoProcessor, a torchvision-only
        # dummy on CPU machines; load ours directly, and the rest as usual.
        from transformers import AutoImageProcessor

        subfolder = kwargs.pop("subfolder", "")
        loaded = {
            "image_processor": AutoImageProcessor.from_pretrained(
                pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            ),
            "tokenizer": cls._load_tokenizer_from_pretrained(
                "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            ),
            "video_processor": TWWVideoProcessor.from_pretrained(
                pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            ),
        }
        return [loaded[name] for name in cls.get_attributes()]

    # ----------------------------------------------------------------------------------------------- token ids
    def token_id(self, token: str) -> int:
        """Id of a single special token, with a clear error if the tokenizer lacks it (never a silent split)."""
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id or not isinstance(token_id, int):
            raise ValueError(
                f"The tokenizer has no single token {token!r}. Add it (tww convert adds <EOQ>/<EOT>) or load the "
                "tokenizer saved with a TWW checkpoint."
            )
        return token_id

    @property
    def eoq_token_id(self) -> int:
        return self.token_id(self.eoq_token)

    @property
    def eot_token_id(self) -> int:
        return self.token_id(self.eot_token)

    @property
    def end_token_id(self) -> int:
        """`<|im_end|>`: ends the target stream."""
        return self.token_id("<|im_end|>")

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---------------------------------------------------------------------------------------------- source side
    @property
    def source_header(self) -> str:
        return f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n<|im_start|>user\n"

    source_close = "<|im_end|>\n"

    def segment_text(self, patch_timestamps: list[float], tokens_per_patch: int) -> str:
        """`<t seconds><|vision_start|><|video_pad|>*N<|vision_end|>` for every temporal patch."""
        patch = self.vision_start_token + self.video_token * tokens_per_patch + self.vision_end_token
        return "".join(f"{self.timestamp_text(t)}{patch}" for t in patch_timestamps)

    @staticmethod
    def timestamp_text(seconds: float) -> str:
        """The `<t seconds>` text Qwen3-VL puts before every temporal patch."""
        return f"<{seconds:.1f} seconds>"

    def encode_segment(self, frames, timestamps, start: float | None = None, end: float | None = None) -> SourceUnit:
        """Encodes one video segment into a source unit.

        Args:
            frames (`np.ndarray` or `torch.Tensor` of shape `(T, H, W, 3)` uint8, or `(T, 3, H, W)`): the frames.
            timestamps (sequence of `float`, length `T`): stream time of every frame, seconds, non-decreasing.
            start, end (`float`, *optional*): the segment's time span (defaults: first and last timestamp).
        """
        frames = _as_frames_tensor(frames)
        timestamps = [float(t) for t in timestamps]
        if len(timestamps) != frames.shape[0] or not timestamps:
            raise ValueError(
                f"encode_segment got {frames.shape[0]} frames and {len(timestamps)} timestamps; pass one timestamp "
                "(seconds) per frame and at least one frame."
            )
        if any(b < a for a, b in zip(timestamps, timestamps[1:])):
            raise ValueError(f"Frame timestamps go backwards in {timestamps}; pass them in stream order.")
        temporal = self.video_processor.temporal_patch_size
        if pad := -len(timestamps) % temporal:  # odd frame counts: repeat the last frame (and its time)
            frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
            timestamps = timestamps + [timestamps[-1]] * pad
        video = self.video_processor(
            videos=[frames], do_sample_frames=False, return_tensors="pt", cap_pixels_per_frame=True
        )
        grid = video["video_grid_thw"]
        tokens_per_patch = int(grid[0, 1] * grid[0, 2]) // self.video_processor.merge_size**2
        patch_times = [sum(timestamps[i : i + temporal]) / temporal for i in range(0, len(timestamps), temporal)]
        input_ids = self.encode_text(self.segment_text(patch_times, tokens_per_patch))
        return SourceUnit(
            kind=SEGMENT,
            input_ids=torch.tensor([input_ids]),
            mm_token_type_ids=self._mm_token_types(input_ids),
            pixel_values_videos=video["pixel_values_videos"],
            video_grid_thw=grid,
            start=timestamps[0] if start is None else float(start),
            end=timestamps[-1] if end is None else float(end),
            patch_times=tuple(patch_times),
        )

    def encode_question(self, text: str, time: float = 0.0) -> SourceUnit:
        """Encodes a question into a source unit: its text (video placeholders stripped) followed by `<EOQ>`."""
        text = text.replace("<video>\n", "").replace("<video>", "").strip()
        if not text:
            raise ValueError("A question's text is empty; pass the question as a non-empty string.")
        input_ids = self.encode_text(text) + [self.eoq_token_id]
        return SourceUnit(
            kind=QUESTION,
            input_ids=torch.tensor([input_ids]),
            mm_token_type_ids=self._mm_token_types(input_ids),
            start=float(time),
            end=float(time),
            text=text,
        )

    def with_header(self, unit: SourceUnit) -> SourceUnit:
        """The unit with the system/user header in front (the first unit of a stream carries it)."""
        return self._extend(unit, before=self.encode_text(self.source_header))

    def with_close(self, unit: SourceUnit) -> SourceUnit:
        """The unit with the user-turn close appended (the last unit of a stream carries it)."""
        return self._extend(unit, after=self.encode_text(self.source_close))

    def build_source(self, units: list[SourceUnit]) -> list[SourceUnit]:
        """Header on the first unit, user-turn close on the last; returns new units (inputs are not modified)."""
        if not units:
            raise ValueError("A TWW stream needs at least one unit (a segment or a question).")
        units = list(units)
        units[0] = self.with_header(units[0])
        units[-1] = self.with_close(units[-1])
        return units

    def _extend(self, unit: SourceUnit, before: list[int] = (), after: list[int] = ()) -> SourceUnit:
        ids = list(before) + unit.input_ids[0].tolist() + list(after)
        types = [0] * len(before) + unit.mm_token_type_ids[0].tolist() + [0] * len(after)
        return SourceUnit(
            **{**unit.__dict__, "input_ids": torch.tensor([ids]), "mm_token_type_ids": torch.tensor([types])}
        )

    def _mm_token_types(self, input_ids: list[int]) -> torch.Tensor:
        ids = torch.tensor([input_ids])
        return torch.where(ids == self.video_token_id, 2, torch.where(ids == self.image_token_id, 1, 0)).int()

    # ---------------------------------------------------------------------------------------------- target side
    def target_prefix(self, kind: str, first: bool = False, patch_times=(), question: str = "") -> str:
        """Forced text before a target unit: the assistant header (first unit) and the note/answer prefix.

        A `segment_prefix` containing `{times}` gets the segment's patch headers there (`patch_times`, e.g.
        `<2.2 seconds><3.2 seconds>`): the same tokens as in the source, so a note can find its own segment by
        content. A `question_prefix` containing `{question}` likewise repeats the question being answered. Source
        and target positions are decoupled, so position alone cannot tell a small model which unit is the newest;
        large pretrained models do without it (the default prefixes have neither).
        """
        if kind not in (SEGMENT, QUESTION):
            raise ValueError(f"Unknown unit kind {kind!r}; expected 'segment' or 'question'.")
        prefix = self.segment_prefix if kind == SEGMENT else self.question_prefix
        if kind == SEGMENT and "{times}" in prefix:
            prefix = prefix.replace("{times}", "".join(self.timestamp_text(t) for t in patch_times))
        if kind == QUESTION and "{question}" in prefix:
            prefix = prefix.replace("{question}", question)
        return (self.assistant_header if first else "") + prefix

    def target_prefix_ids(self, kind: str, first: bool = False, patch_times=(), question: str = "") -> list[int]:
        return self.encode_text(self.target_prefix(kind, first, patch_times, question))

    def boundary_token_id(self, kind: str) -> int:
        """`<EOT>` closes a note (segment unit), `<EOQ>` closes an answer (question unit)."""
        return self.eot_token_id if kind == SEGMENT else self.eoq_token_id


def _as_frames_tensor(frames) -> torch.Tensor:
    """(T, H, W, C) or (T, C, H, W) array/tensor -> (T, C, H, W) tensor, with a clear error for anything else."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"Frames must be a 4-D array (T, H, W, 3) or (T, 3, H, W); got shape {shape}.")
    if frames.shape[-1] in (1, 3, 4) and frames.shape[1] not in (1, 3, 4):
        frames = frames.permute(0, 3, 1, 2)
    if frames.shape[1] not in (1, 3, 4):
        raise ValueError(f"Frames have {frames.shape[1]} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA).")
    return frames.contiguous()


TWWVideoProcessor.register_for_auto_class("AutoVideoProcessor")
TWWProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["TWWProcessor", "TWWVideoProcessor", "SourceUnit"]
