# /// script
# dependencies = ["tww-hf[train,video]"]
# ///
"""Streaming SFT of a TWW model with TRL (one stage of the three-stage recipe).

Single process (CPU try-out with a tiny random model):

    python trainer/scripts/sft_tww.py --data_path data/stage1.jsonl --tiny --output_dir out/stage1 \\
        --max_steps 10 --use_cpu

Eight GPUs (the paper's set-up: global batch 128 = 8 GPUs x 2 per device x 8 accumulation steps, bf16, ZeRO-3):

    accelerate launch --config_file trainer/configs/deepspeed_zero3.yaml trainer/scripts/sft_tww.py \\
        --data_path data/stage1.jsonl --model_name_or_path checkpoints/tww-4b --output_dir out/stage1 \\
        --stage 1 --per_device_train_batch_size 2 --gradient_accumulation_steps 8 --num_train_epochs 1

LoRA instead of full fine-tuning: add `--lora_r 64`. Stage 2 starts from stage 1's output, stage 3 from stage 2's
(`tww train --curriculum` chains them).
"""

from dataclasses import dataclass, field

from trl import TrlParser

from tww_hf.trainer.sft import TWWSFTConfig, build_trainer, load_model_for_training, save_checkpoint
from tww_hf.trainer.stages import load_dataset


@dataclass
class ScriptArguments:
    data_path: str = field(metadata={"help": "JSONL of TWW records, or a folder of stage1/2/3.jsonl."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "TWW checkpoint to start from."})
    tiny: bool = field(default=False, metadata={"help": "Start from a tiny random TWW model (CPU try-out)."})


def main(script_args: ScriptArguments, training_args: TWWSFTConfig) -> None:
    model, processor = load_model_for_training(script_args.model_name_or_path, script_args.tiny)
    dataset = load_dataset(script_args.data_path, training_args.stage)
    trainer = build_trainer(model, processor, dataset, training_args)
    trainer.train()
    save_checkpoint(trainer, processor, training_args.output_dir, base_model=script_args.model_name_or_path)


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, TWWSFTConfig))
    script_args, training_args = parser.parse_args_and_config()
    main(script_args, training_args)
