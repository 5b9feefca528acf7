"""Teachers that write notes and reasoning for real annotations, unit by unit, never shown anything later than the
unit they write; and `build_from_annotations`, behind `tww data build`.

- `OpenAITeacher`: any OpenAI-compatible chat endpoint (base URL, model, key from the environment); segment frames
  are sent as JPEG data URLs. Standard library HTTP only.
- `TransformersTeacher`: a local chat model through `transformers` (text only: it sees notes and QA, not frames).
"""

import base64
import io
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


NOTE_PROMPT = ("You watch a video stream segment by segment. Write one short memory note (1-3 sentences) for the "
               "new segment: key entities and attributes, actions, scene changes. Describe only this segment.")
ANSWER_PROMPT = ("Answer the question from the memory notes so far. Reason briefly, citing notes by their time, and "
                 "end with a final line 'Answer: {gold}'.")
_LETTER = re.compile(r"Answer:\s*([A-Za-z0-9]+)\s*$")


class TeacherError(RuntimeError):
    """A teacher that failed or replied with something unusable; the message says which and how."""


def _history_text(history: list[dict]) -> str:
    lines = []
    for unit in history:
        if unit["kind"] == "segment":
            lines.append(f"[{unit['start']:.1f}-{unit['end']:.1f}s] note: {unit['note']}")
        else:
            lines.append(f"[{unit['time']:.1f}s] question: {unit['question']} -> {unit['answer']}")
    return "\n".join(lines) or "(nothing yet)"


def _jpeg_data_url(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class OpenAITeacher:
    """Args: base_url (e.g. http://127.0.0.1:8000/v1), model, api_key_env (the variable holding the key),
    max_frames (frames sent per segment), timeout (s)."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_frames: int = 4,
                 timeout: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_frames, self.timeout = model, max_frames, timeout
        self.api_key = os.environ.get(api_key_env, "")

    def note(self, history: list[dict], segment: dict, frames: np.ndarray) -> str:
        picks = np.linspace(0, len(frames) - 1, min(self.max_frames, len(frames))).round().astype(int)
        content = [{"type": "text", "text": f"Notes so far:\n{_history_text(history)}\n\nNew segment "
                                            f"{segment['start']:.1f}-{segment['end']:.1f}s:"}]
        content += [{"type": "image_url", "image_url": {"url": _jpeg_data_url(frames[i])}} for i in picks]
        return self._chat([{"role": "system", "content": NOTE_PROMPT}, {"role": "user", "content": content}])

    def answer(self, history: list[dict], question: dict, gold: str) -> str:
        prompt = f"Notes so far:\n{_history_text(history)}\n\nQuestion at {question['time']:.1f}s: " \
                 f"{question['question']}"
        system = ANSWER_PROMPT.format(gold=gold)
        return self._chat([{"role": "system", "content": system}, {"role": "user", "content": prompt}])

    def _chat(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.2}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise TeacherError(f"The teacher endpoint {self.url} answered HTTP {error.code}: "
                               f"{error.read()[:200]!r}. Check the model name and key.") from error
        except (urllib.error.URLError, TimeoutError) as error:
            raise TeacherError(f"Cannot reach the teacher endpoint {self.url}: {error}.") from error
        try:
            text = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise TeacherError(f"The teacher endpoint {self.url} sent a malformed reply (no "
                               f"choices[0].message.content): {payload[:200]!r}.") from error
        if not isinstance(text, str) or not text.strip():
            raise TeacherError(f"The teacher endpoint {self.url} sent an empty message.")
        return text.strip()


class TransformersTeacher:
    """A local chat model (a folder or Hub id already on disk) writing from notes and QA text."""

    def __init__(self, model_path: str, max_new_tokens: int = 96):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        self.max_new_tokens = max_new_tokens

    def note(self, history: list[dict], segment: dict, frames: np.ndarray) -> str:
        return self._generate(NOTE_PROMPT, f"Notes so far:\n{_history_text(history)}\nNew segment "
                                           f"{segment['start']:.1f}-{segment['end']:.1f}s.")

    def answer(self, history: list[dict], question: dict, gold: str) -> str:
        return self._generate(ANSWER_PROMPT.format(gold=gold), f"Notes so far:\n{_history_text(history)}\n"
                                                               f"Question: {question['question']}")

    def _generate(self, system: str, user: str) -> str:
        import torch

        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def gold_answer(reply: str | None) -> str | None:
    """The `Answer: X` of an annotation's reply (the reference's gpt turn), or None."""
    match = _LETTER.search(str(reply or ""))
    return match.group(1) if match else None


def write_record(record: dict, teacher) -> dict:
    """Fills a converted record's notes and reasoning, one unit at a time, with only earlier units in view."""
    from .data import record_frames, segment_frames

    needs_frames = any(unit["kind"] == "segment" for unit in record["units"])
    frames, timestamps = record_frames(record) if needs_frames else (None, None)
    history = []
    for unit in record["units"]:
        unit = dict(unit)
        if unit["kind"] == "segment":
            segment, _ = segment_frames(frames, timestamps, unit, record)
            unit["note"] = teacher.note(history, unit, segment)
        else:
            gold = gold_answer(unit.get("answer"))
            if gold is None:
                raise TeacherError(f"{record['id']}: the question at {unit['time']}s has no 'Answer: X' to explain.")
            reasoning = teacher.answer(history, unit, gold)
            if gold_answer(reasoning) != gold:
                raise TeacherError(f"{record['id']}: the teacher's answer to the question at {unit['time']}s does "
                                   f"not end with 'Answer: {gold}'.")
            unit["answer"] = reasoning
        history.append(unit)
    return {**record, "units": history}


def build_from_annotations(annotations: str | Path, teacher, out: str | Path, progress: bool = True):
    """Reference-format (or note-less project-format) records -> a trainable JSONL in `out/`, validated; records the
    teacher or the validator rejects are reported with their reason and dropped. Returns (path, problems)."""
    from tqdm.auto import tqdm

    from .data import RecordError, load_records, validate_record
    from .synth import causality_problems

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, problems = out / "built.jsonl", []
    with path.open("w") as handle:
        for record in tqdm(load_records(annotations), desc="teacher", disable=not progress):
            try:
                written = write_record(record, teacher)
                validate_record(written)
                found = causality_problems(written)
            except (TeacherError, RecordError) as error:
                problems.append(str(error))
                continue
            if found:
                problems += [f"{written['id']}: {problem}" for problem in found]
                continue
            root = Path(record.get("_root", "."))
            if "frame_files" in written:  # the output lives elsewhere: point at the frames absolutely
                written["frames_dir"] = str((root / written.get("frames_dir", "")).resolve())
            elif "video" in written:
                written["video"] = str((root / written["video"]).resolve())
            written.pop("_root", None)
            handle.write(json.dumps(written) + "\n")
    return path, problems
