"""TWWDataCollator: records -> the packed streaming training batch `[R_1..R_U, C_1..C_U]`."""

import json
from dataclasses import dataclass

import torch
from transformers.data.data_collator import DataCollatorMixin

from ..data import QUESTION, SEGMENT, record_frames, segment_frames, validate_record
from ..modeling.streaming_tww import build_streaming_mask_batch, source_position_ids, streaming_position_ids


IGNORE_INDEX = -100


def _as_record(row) -> dict:
    if "record" in row and "units" not in row:
        row = row["record"]
    return json.loads(row) if isinstance(row, str) else row


@dataclass
class PackedSample:
    """One record, tokenized. Lists of per-unit token counts define the streaming mask."""

    source_ids: list[int]
    source_types: list[int]
    target_ids: list[int]
    target_labels: list[int]
    source_lengths: list[int]
    target_lengths: list[int]
    pixel_values_videos: torch.Tensor | None
    video_grid_thw: torch.Tensor | None


@dataclass
class TWWDataCollator(DataCollatorMixin):
    """Builds the packed streaming batch TRL's `SFTTrainer` feeds to `TWWForConditionalGeneration`.

    Args:
        processor (`TWWProcessor`): tokenizer, video processor and the stream strings.
        train_on_prefixes (`bool`, defaults to False): also put the loss on the assistant header and forced prefixes.
        train_on_notes (`bool`, defaults to True): put the loss on memory notes (False: answers only).
        target_start_pos (`int`, defaults to 0): the model's `config.target_start_pos`.
        target_start_jitter (`int`, defaults to 0): training augmentation: each sample's target counter starts at
            `target_start_pos` plus a random integer in `[0, target_start_jitter]`. Source and target positions are
            decoupled (paper §6), so the distance between a note's position and its frames' carries no meaning; but
            a model trained mostly on short clips, where the two stay close, learns to find the newest frames by
            that distance and stops reading them once a long stream pulls the axes apart (README, "Why the notes
            miss entries"). A random offset takes that shortcut away. 0 (the default) changes nothing.
        pack_samples (`bool`): must stay False; records are never packed together (their streams would mix).

    Returns a dict with:
        - `input_ids` `(B, L)`: source then target tokens, right-padded with the pad id;
        - `labels` `(B, L)`: target content and boundary tokens (and the final `<|im_end|>`), else -100;
        - `attention_mask` `(B, 1, L, L)` bool: the streaming mask (deferred-boundary convention);
        - `position_ids` `(3, B, L)`: Qwen3-VL M-RoPE over the source, a 1-D counter over the target;
        - `mm_token_type_ids` `(B, L)`, `pixel_values_videos` `(patches, dim)`, `video_grid_thw` `(segments, 3)`.

    Example (a record with one segment and one question):
        `[header ts <vs> pads <ve>] [question <EOQ> <|im_end|>\\n] [<|im_start|>assistant\\n[SEG THINK]\\nFocus: note
        <EOT>] [\\n\\n[Q THINK]\\nReasoning: ... Answer: B <EOQ> <|im_end|>]`; labels cover `note <EOT>` and
        `... Answer: B <EOQ> <|im_end|>`; the `<EOT>` row sees both source units.
    """

    processor: object
    train_on_prefixes: bool = False
    train_on_notes: bool = True
    target_start_pos: int = 0
    target_start_jitter: int = 0
    pack_samples: bool = False
    return_tensors: str = "pt"

    def __post_init__(self):
        if self.pack_samples:
            raise ValueError("TWWDataCollator never packs records together (their streams would see each other); "
                             "leave packing off and use per_device_train_batch_size for throughput.")
        if not isinstance(self.target_start_jitter, int) or self.target_start_jitter < 0:
            raise ValueError(f"target_start_jitter must be an integer >= 0, got {self.target_start_jitter!r}.")

    def torch_call(self, records: list[dict]) -> dict:
        """`records`: record dicts, or dataset rows `{"record": dict or JSON string}`."""
        samples = [self.encode(_as_record(record)) for record in records]
        return self.pad(samples)

    # ---------------------------------------------------------------------------------------------- one record
    def encode(self, record: dict) -> PackedSample:
        validate_record(record)
        needs_frames = any(unit["kind"] == SEGMENT for unit in record["units"])
        frames, timestamps = record_frames(record) if needs_frames else (None, None)
        units = [self._source_unit(unit, frames, timestamps, record) for unit in record["units"]]
        units = self.processor.build_source(units)
        target_ids, target_labels, target_lengths = [], [], []
        for index, unit in enumerate(record["units"]):
            ids, labels = self._target_unit(unit, first=index == 0, last=index == len(units) - 1,
                                            patch_times=units[index].patch_times, question=units[index].text or "")
            target_ids += ids
            target_labels += labels
            target_lengths.append(len(ids))
        videos = [u for u in units if u.pixel_values_videos is not None]
        return PackedSample(
            source_ids=sum((u.input_ids[0].tolist() for u in units), []),
            source_types=sum((u.mm_token_type_ids[0].tolist() for u in units), []),
            target_ids=target_ids,
            target_labels=target_labels,
            source_lengths=[len(u) for u in units],
            target_lengths=target_lengths,
            pixel_values_videos=torch.cat([u.pixel_values_videos for u in videos]) if videos else None,
            video_grid_thw=torch.cat([u.video_grid_thw for u in videos]) if videos else None,
        )

    def _source_unit(self, unit, frames, timestamps, record):
        if unit["kind"] == SEGMENT:
            segment, times = segment_frames(frames, timestamps, unit, record)
            return self.processor.encode_segment(segment, times, start=unit["start"], end=unit["end"])
        return self.processor.encode_question(unit["question"], unit["time"])

    def _target_unit(self, unit, first: bool, last: bool, patch_times=(),
                     question: str = "") -> tuple[list[int], list[int]]:
        """Prefix + content + boundary (+ `<|im_end|>` for the last unit), and their labels."""
        processor = self.processor
        prefix = processor.target_prefix_ids(unit["kind"], first=first, patch_times=patch_times, question=question)
        content = processor.encode_text(unit["note"] if unit["kind"] == SEGMENT else unit["answer"])
        closing = [processor.boundary_token_id(unit["kind"])] + ([processor.end_token_id] if last else [])
        learn = self.train_on_notes or unit["kind"] == QUESTION
        prefix_labels = prefix if self.train_on_prefixes else [IGNORE_INDEX] * len(prefix)
        body = content + closing
        return prefix + body, prefix_labels + (body if learn else [IGNORE_INDEX] * len(body))

    # -------------------------------------------------------------------------------------------------- batch
    def pad(self, samples: list[PackedSample]) -> dict:
        pad_id = self.processor.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else 0
        length = max(len(s.source_ids) + len(s.target_ids) for s in samples)
        batch = len(samples)
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        types = torch.zeros((batch, length), dtype=torch.int)
        positions = torch.zeros((3, batch, length), dtype=torch.long)
        merge = self.processor.video_processor.merge_size
        for b, sample in enumerate(samples):
            source, n = len(sample.source_ids), len(sample.source_ids) + len(sample.target_ids)
            input_ids[b, :n] = torch.tensor(sample.source_ids + sample.target_ids)
            labels[b, source:n] = torch.tensor(sample.target_labels)
            types[b, :source] = torch.tensor(sample.source_types)
            source_positions = source_position_ids(input_ids[b : b + 1, :source], types[b : b + 1, :source],
                                                   sample.video_grid_thw, merge)
            start = self.target_start_pos
            if self.target_start_jitter:  # torch's generator: seeded per worker by the Trainer / DataLoader
                start += int(torch.randint(0, self.target_start_jitter + 1, ()))
            positions[:, b : b + 1, :n] = streaming_position_ids(source_positions, n - source, start)
        layouts = [(s.source_lengths, s.target_lengths) for s in samples]
        output = {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": build_streaming_mask_batch(layouts, length),
            "position_ids": positions,
            "mm_token_type_ids": types,
        }
        videos = [s for s in samples if s.pixel_values_videos is not None]
        if videos:
            output["pixel_values_videos"] = torch.cat([s.pixel_values_videos for s in videos])
            output["video_grid_thw"] = torch.cat([s.video_grid_thw for s in videos])
        return output
