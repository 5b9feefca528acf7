"""The TWW training recipe on TRL: `TWWSFTConfig`, a minimal `SFTTrainer` subclass, LoRA, and the stage runner.

Paper defaults (App. B): AdamW, peak LR 1e-5, warmup 3 %, weight decay 0.1, bf16 on GPU, full fine-tuning; three
stages run in sequence (single-round -> multi-round -> long-range), each from the previous stage's checkpoint.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer

from ..modeling.modeling_tww import TWWForConditionalGeneration
from .collator import TWWDataCollator


logger = logging.getLogger(__name__)

LANGUAGE_MODEL_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class TWWSFTConfig(SFTConfig):
    """`SFTConfig` with the paper's defaults and the streaming collator's switches."""

    stage: int = field(default=1, metadata={"help": "Training stage (1 single-round, 2 multi-round, 3 long-range).",
                                            "choices": [1, 2, 3]})
    train_on_prefixes: bool = field(default=False, metadata={"help": "Also learn the header and forced prefixes."})
    train_on_notes: bool = field(default=True, metadata={"help": "Learn memory notes (False: answers only)."})
    target_start_jitter: int = field(default=0, metadata={"help": "Start each sample's target positions up to this "
                                                                  "many positions late (random), so the model cannot "
                                                                  "locate its frames by the cross-stream distance."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the language model (0: full fine-tuning)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    vision_lr_scale: float = field(default=1.0, metadata={"help": "Learning rate of the vision tower relative to "
                                                                  "learning_rate (no weight decay there when != 1); "
                                                                  "0 freezes it."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (paper: 1e-5)."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Warm-up fraction (paper: 3 %)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (paper: 0.1)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: the collator reads "
                                                                         "the raw record columns."})
    max_length: int | None = field(default=None, metadata={"help": "No truncation: it would cut video placeholders."})
    report_to: str = field(default="none", metadata={"help": "Where to log (none, tensorboard, wandb, ...)."})
    dataset_kwargs: dict | None = field(default_factory=lambda: {"skip_prepare_dataset": True},
                                        metadata={"help": "TRL dataset options; the collator prepares records."})

    def __post_init__(self):
        if self.packing:
            raise ValueError("TWW records cannot be packed together (their streams would see each other); set "
                             "packing=False and raise per_device_train_batch_size instead.")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: TWWDataCollator needs the record columns.")
        if self.bf16 is None:  # the paper trains in bf16 on GPU; left unset, transformers autocasts CPU runs too
            self.bf16 = not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()


class TWWSFTTrainer(SFTTrainer):
    """SFTTrainer whose `num_tokens` metric counts real tokens (TRL sums `attention_mask`, which is 4-D here), with
    an optional separate learning rate for the vision tower (`vision_lr_scale`)."""

    def create_optimizer(self, model=None):
        # Overwritten -- a vision tower trained from scratch at the language model's rate collapses to a constant
        # output within a few dozen steps (the merger learns a large bias; the text model then ignores video); a
        # lower vision rate keeps its features informative. Default 1.0 keeps the stock optimizer.
        scale = self.args.vision_lr_scale
        if scale == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        vision = [p for n, p in named if ".visual." in f".{n}"]
        decay = set(self.get_decay_parameter_names(model))
        groups = [
            {"params": [p for n, p in named if ".visual." not in f".{n}" and n in decay],
             "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in named if ".visual." not in f".{n}" and n not in decay], "weight_decay": 0.0},
            {"params": vision, "weight_decay": 0.0, "lr": self.args.learning_rate * scale},
        ]
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_class([g for g in groups if g["params"]], **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Overwritten -- TRL counts tokens as attention_mask.sum(): L² entries of our streaming mask per sample.
        mode = "train" if self.model.training else "eval"
        before = self._total_train_tokens
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if mode == "train":
            pad_id = self.processing_class.tokenizer.pad_token_id
            local = (inputs["input_ids"] != pad_id).sum()
            self._total_train_tokens = before + self.accelerator.gather_for_metrics(local).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return result


def lora_config(model, rank: int, alpha: int = 32):
    """LoRA on the language model's linear layers; the `<EOQ>`/`<EOT>` embedding rows are trained as well (they
    are untrained in a converted base model)."""
    from peft import LoraConfig

    eoq, eot = model.config.require_stream_token_ids()
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LANGUAGE_MODEL_LINEAR,
                      trainable_token_indices={"embed_tokens": [eoq, eot]}, task_type="CAUSAL_LM")


def build_trainer(model, processor, train_dataset, args: TWWSFTConfig, eval_dataset=None, callbacks=None):
    """A `TWWSFTTrainer` wired with the streaming collator, the processor and (if `args.lora_r`) LoRA."""
    collator = TWWDataCollator(processor, train_on_prefixes=args.train_on_prefixes,
                               train_on_notes=args.train_on_notes,
                               target_start_pos=model.config.target_start_pos,
                               target_start_jitter=args.target_start_jitter)
    return TWWSFTTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=lora_config(model, args.lora_r, args.lora_alpha) if args.lora_r else None,
        callbacks=callbacks,
    )


def save_checkpoint(trainer, processor, output_dir: str | Path, base_model: str | None = None) -> Path:
    """Saves a loadable checkpoint (weights with LoRA merged, config with `auto_map`, remote code, processor), the
    run's training record and its model card; writing happens on the main process only."""
    from ..hub_cards.card import render_card, write_training_record

    output_dir, base_model = Path(output_dir), str(base_model) if base_model else None
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if trainer.accelerator.is_main_process:
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        training = write_training_record(output_dir, trainer.args, len(trainer.train_dataset), _hardware(trainer))
        training["base model"] = base_model or "tiny random TWW model"
        render_card(output_dir.name, base_model=base_model, training=training).save(output_dir / "README.md")
    trainer.accelerator.wait_for_everyone()
    return output_dir


def _hardware(trainer) -> str:
    device = trainer.args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"{trainer.accelerator.num_processes} x {name}"


def load_model_for_training(source: str | None, tiny: bool, processor=None):
    """(model, processor): a checkpoint folder, or a tiny random TWW model when `tiny`."""
    if tiny:
        from ..tiny import tiny_model, tiny_processor

        processor = processor or tiny_processor()
        return tiny_model(seed=0, processor=processor).train(), processor
    if source is None:
        raise ValueError("Pass --from CHECKPOINT (a TWW checkpoint; `tww convert` makes one) or --tiny.")
    from transformers import AutoProcessor

    model = TWWForConditionalGeneration.from_pretrained(source)
    return model, AutoProcessor.from_pretrained(source, trust_remote_code=True)
