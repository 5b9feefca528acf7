"""The teacher path for real annotations: an OpenAI-compatible server on loopback (a real HTTP server, not a mock),
including a server error and a malformed reply, and `tww data build` end to end."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import write_reference_record

from tww_hf.cli import main
from tww_hf.data import load_jsonl, validate_record
from tww_hf.teachers import OpenAITeacher, TeacherError, build_from_annotations


class ChatHandler(BaseHTTPRequestHandler):
    """Speaks /v1/chat/completions; `server.mode` is ok, error or malformed. Records every request body."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, self.headers.get("Authorization"), body))
        if self.server.mode == "error":
            self._send(500, b'{"error": "overloaded"}')
            return
        if self.server.mode == "malformed":
            self._send(200, b'{"choices": []}')
            return
        system = body["messages"][0]["content"]
        gold = re.search(r"Answer: (\w+)", system)
        text = f"The notes show it.\nAnswer: {gold.group(1)}" if gold else "A square moves across the screen."
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode())

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    httpd.mode, httpd.requests = "ok", []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def annotations(tmp_path):
    """A reference-format record: frames beside the JSON folder, two timed questions with gold answers."""
    conversations = [{"from": "human", "timestamps": 2.0, "value": "<video>\nWhat moves?\nA. a square\nB. x"},
                     {"from": "gpt", "value": "A square.\nAnswer: A"},
                     {"from": "human", "timestamps": 4.0, "value": "Where?\nA. up\nB. right"},
                     {"from": "gpt", "value": "Right.\nAnswer: B"}]
    return write_reference_record(tmp_path, conversations)


def test_build_writes_notes_and_reasoning_unit_by_unit(server, annotations, tmp_path, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", "secret")
    teacher = OpenAITeacher(f"http://127.0.0.1:{server.server_port}/v1", "teacher-model", api_key_env="TEACHER_KEY")
    path, problems = build_from_annotations(annotations, teacher, tmp_path / "out", progress=False)
    assert problems == []
    (record,) = load_jsonl(path)
    validate_record(record)
    assert [u["kind"] for u in record["units"]] == ["segment", "question", "segment", "question"]
    assert record["units"][1]["answer"].endswith("Answer: A") and record["units"][3]["answer"].endswith("Answer: B")
    paths = {p for p, _, _ in server.requests}
    assert paths == {"/v1/chat/completions"} and all(auth == "Bearer secret" for _, auth, _ in server.requests)
    first_note = server.requests[0][2]["messages"][1]["content"]
    assert first_note[0]["text"].startswith("Notes so far:\n(nothing yet)")  # nothing later is shown
    assert any(part["type"] == "image_url" for part in first_note)
    second_question = server.requests[3][2]["messages"][1]["content"]
    assert "Where?" in second_question and "What moves?" in second_question


@pytest.mark.parametrize("mode, message", [("error", "HTTP 500"), ("malformed", "malformed reply")])
def test_teacher_failures_drop_the_record_with_the_reason(server, annotations, tmp_path, mode, message):
    server.mode = mode
    teacher = OpenAITeacher(f"http://127.0.0.1:{server.server_port}/v1", "teacher-model")
    path, problems = build_from_annotations(annotations, teacher, tmp_path / "out", progress=False)
    assert len(problems) == 1 and message in problems[0]
    assert path.read_text() == ""
    with pytest.raises(TeacherError, match=message):
        teacher.answer([], {"time": 1.0, "question": "q"}, "A")


def test_data_build_cli(server, annotations, tmp_path, capsys):
    url = f"http://127.0.0.1:{server.server_port}/v1"
    assert main(["data", "build", "--teacher", "openai", "--base-url", url, "--model", "m",
                 "--annotations", str(annotations), "--out", str(tmp_path / "built")]) == 0
    assert "Wrote 1 records" in capsys.readouterr().out
    assert main(["data", "validate", str(tmp_path / "built" / "built.jsonl")]) == 0
    assert main(["data", "build", "--teacher", "openai", "--annotations", str(annotations), "--out", "x"]) == 2


def test_local_transformers_teacher(annotations, tmp_path):
    """A tiny random local chat model writes notes; its answers miss the gold letter, so the record is dropped with
    that reason (never kept)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tww_hf.teachers import TransformersTeacher
    from tww_hf.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                               "{% endfor %}<|im_start|>assistant\n")
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=16)).save_pretrained(
        tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    teacher = TransformersTeacher(str(tmp_path / "teacher"), max_new_tokens=8)
    note = teacher.note([], {"start": 0.0, "end": 1.0}, None)
    assert isinstance(note, str)
    path, problems = build_from_annotations(annotations, teacher, tmp_path / "out", progress=False)
    assert len(problems) == 1 and "does not end with 'Answer: A'" in problems[0]
