"""`tww export` (a Hub-ready folder) and `tww push` (upload it)."""

import json
import shutil
from pathlib import Path

from .card import TRAINING_FILE, load_eval_results, read_training_record, render_card


AUTO_PROCESSOR = "processing_tww.TWWProcessor"


def export_checkpoint(checkpoint: str | Path, out: str | Path, eval_file: str | Path | None = None,
                      repo_id: str | None = None, revision: str = "main", base_model: str | None = None) -> Path:
    """Writes a Hub-ready folder: safetensors weights, config with `auto_map` (AutoConfig, AutoModel,
    AutoModelForImageTextToText, AutoProcessor), every remote-code file, processor, tokenizer, generation config and
    a README.md model card."""
    from ..modeling.modeling_tww import TWWForConditionalGeneration
    from ..modeling.processing_tww import TWWProcessor

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no config.json).")
    eval_results = load_eval_results(eval_file) if eval_file else None  # fail before writing anything
    model = TWWForConditionalGeneration.from_pretrained(checkpoint)
    processor = TWWProcessor.from_pretrained(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    _add_auto_processor(out / "config.json")
    training = read_training_record(checkpoint)
    if training is not None:
        shutil.copy(checkpoint / TRAINING_FILE, out / TRAINING_FILE)
        base_model = base_model or training.get("base model")
    card = render_card(out.name, repo_id=repo_id, revision=revision, base_model=base_model,
                       eval_results=eval_results, training=training)
    card.save(out / "README.md")
    return out


def _add_auto_processor(config_file: Path) -> None:
    config = json.loads(config_file.read_text())
    config.setdefault("auto_map", {})["AutoProcessor"] = AUTO_PROCESSOR
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def push_folder(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None, api=None):
    """Uploads an exported folder with `create_repo` + `upload_folder`; refuses clearly when offline, not logged in,
    or when the folder was not exported."""
    from huggingface_hub import HfApi, constants, get_token

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} is not an exported folder (config.json and README.md); run `tww export`.")
    if constants.HF_HUB_OFFLINE:
        raise RuntimeError("The Hugging Face Hub is set offline (HF_HUB_OFFLINE=1); unset it to push.")
    if api is None and get_token() is None:
        raise RuntimeError("Not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN.")
    api = api or HfApi()
    api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             commit_message="Upload TWW checkpoint (tww push)")
