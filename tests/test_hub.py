"""Model cards, `tww export` and `tww push` (offline: a mocked HfApi, and the offline refusal)."""

import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml
from conftest import BLOCK_TWW_HF
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

from tww_hf.cli import main
from tww_hf.hub_cards.card import EvalFileError, load_eval_results, render_card
from tww_hf.hub_cards.export import export_checkpoint, push_folder


RESULTS = {"results": [
    {"benchmark": "StreamingBench", "dataset_type": "mjuicem/StreamingBench", "split": "test",
     "setting": "multi-turn", "metric": "accuracy", "value": 57.4},
    {"benchmark": "OVO-Bench", "setting": "multi-turn", "metric": "accuracy", "value": 51.8},
]}


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


def test_card_metadata_round_trips_offline(eval_file, tmp_path):
    card = render_card("tww-tiny", repo_id="me/tww-tiny", revision="v1", base_model="Qwen/Qwen3-VL-4B-Instruct",
                       eval_results=load_eval_results(eval_file), training={"stage": 3, "learning rate": 1e-5})
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.pipeline_tag == "video-text-to-text" and loaded.data.library_name == "transformers"
    assert loaded.data.base_model == "Qwen/Qwen3-VL-4B-Instruct" and "tww" in loaded.data.tags
    values = {(r.dataset_name, r.metric_value) for r in loaded.data.eval_results}
    assert values == {("StreamingBench", 57.4), ("OVO-Bench", 51.8)}
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == "StreamingBench"
    text = loaded.text
    assert 'revision="v1"' in text and "trust_remote_code=True" in text and "stream_generate" in text
    assert "| learning rate | 1e-05 |" in text and "Premature commitment" in text and "transformers" in text


@pytest.mark.parametrize("content, message", [
    ("not json", "Cannot read"),
    (json.dumps({"rows": []}), "`results` list"),
    (json.dumps({"rows": {"TWW multi-round": {"tasks": {}}}}), "rows\\['TWW multi-round'\\] lacks `tasks`"),
    (json.dumps({"results": [{"benchmark": "X", "value": 1}]}), "results\\[0\\] lacks metric"),
    (json.dumps({"results": [{"benchmark": "X", "metric": "acc", "value": "high"}]}), "must be a number"),
])
def test_malformed_eval_file_is_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(EvalFileError, match=message):
        load_eval_results(path)


FRESH_PROCESS = BLOCK_TWW_HF + """
import sys
import numpy as np
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
frames = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
events = list(model.stream_generate(processor, frames, [(1.5, "What is there?")], fps=2.0, max_note_tokens=3,
                                    max_answer_tokens=3))
print(type(config).__name__, type(model).__name__, [e.kind for e in events if e.kind in ("note", "answer")])
"""


def test_export_loads_and_streams_in_a_fresh_process(model, processor, eval_file, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "export", eval_file=eval_file, repo_id="me/tww-tiny")
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "generation_config.json", "processor_config.json",
            "tokenizer.json", "README.md", "modeling_tww.py", "engine_tww.py", "processing_tww.py"} <= files
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]
    assert set(auto_map) >= {"AutoConfig", "AutoModel", "AutoModelForImageTextToText", "AutoProcessor"}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp(prefix="tww-export-"))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out)], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("TWWConfig TWWForConditionalGeneration") and "'answer'" in result.stdout
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == 57.4


def test_export_refuses_a_bad_eval_file_before_writing(model, processor, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "bad.json").write_text("{}")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "out"), "--eval", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "out").exists()


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/me/tww-tiny/commit/abc"


def exported(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    return folder


def test_push_calls_the_hub_api(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    api = FakeApi()
    push_folder(exported(tmp_path), "me/tww-tiny", private=True, revision="v1", api=api)
    assert api.calls[0] == ("create_repo", "me/tww-tiny", {"private": True, "repo_type": "model", "exist_ok": True})
    assert api.calls[1] == ("create_branch", "me/tww-tiny", {"branch": "v1", "exist_ok": True})
    upload = api.calls[2][1]
    assert upload["repo_id"] == "me/tww-tiny" and upload["revision"] == "v1"
    assert upload["folder_path"] == str(tmp_path / "export")


def test_push_refuses_offline_unauthenticated_and_unexported(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    folder = exported(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(folder), "me/tww-tiny"]) == 2
    assert "offline" in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(RuntimeError, match="Not logged in"):
        push_folder(folder, "me/tww-tiny")
    with pytest.raises(FileNotFoundError, match="tww export"):
        push_folder(tmp_path, "me/tww-tiny")
