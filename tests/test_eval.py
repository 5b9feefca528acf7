"""Evaluation: official scoring on hand-computed cases, probe expansion, an end-to-end run on videos rendered from the
synthetic world, resume, missing videos, and a 2-process run."""

import json
import os
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from tww_hf.cli import main
from tww_hf.evaluation.adapters import dry_run_summary, load_probes
from tww_hf.evaluation.runner import EvalRun, merge_report
from tww_hf.evaluation.scoring import (
    aggregate,
    final_answer,
    option_texts,
    score_count,
    score_ovo_mcq,
    score_proactive,
    score_streamingbench_mcq,
    score_synthetic,
    score_yesno,
)
from tww_hf.video import write_video
from tww_hf.world import generate_world


OPTIONS = ["A. red", "B. green", "C. blue", "D. yellow"]
SB_REAL = [
    {"time": "[0:00:00 - 0:00:10]", "video_path": "./videos/a.mp4", "video_categories": "x",
     "questions": [{"task_type": "Object Recognition", "question": "What color?", "time_stamp": "00:00:03",
                    "answer": "B", "options": OPTIONS, "required_ability": "x"},
                   {"task_type": "Counting", "question": "How many?", "time_stamp": "00:00:06", "answer": "C",
                    "options": str(OPTIONS), "required_ability": "x"}]},
    {"time": "[0:00:00 - 0:00:10]", "video_path": "./videos/b.mp4", "video_categories": "x",
     "questions": [{"task_type": "Object Recognition", "question": "What now?", "time_stamp": "00:00:04",
                    "answer": "A", "options": OPTIONS, "required_ability": "x"}]},
]
SB_SQA = [[{"time": "[0:00:00 - 0:00:08]", "video_path": "./videos/a.mp4", "video_categories": "x",
            "questions": [{"task_type": "Sequential Question Answering", "question": f"Turn {i}?",
                           "time_stamp": f"00:00:0{2 + 2 * i}", "answer": "A", "options": OPTIONS}]}
           for i in range(3)]]
SB_PROACTIVE = [{"time": "[0:00:00 - 0:00:10]", "video_path": "./videos/b.mp4", "video_categories": "x",
                 "questions": [{"task_type": "Proactive Output", "question": 'When a square appears, output "square".',
                                "time_stamp": "00:00:02", "ground_truth_time_stamp": "00:00:04",
                                "ground_truth_output": "square"}]}]
OVO = [
    {"id": "0", "task": "EPM", "video": "videos/a.mp4", "realtime": "5", "question": "What entered?",
     "answer": "green", "options": ["red", "green", "blue", "yellow"], "gt": 1},
    {"id": "1", "task": "REC", "video": "videos/b.mp4", "activity": "moving",
     "test_info": [{"realtime": 3, "count": 1}, {"realtime": 5, "count": 2}, {"realtime": 7, "count": 2}]},
    {"id": "2", "task": "SSR", "video": "videos/a.mp4", "tutorial": "t", "all_steps": ["s"],
     "test_info": [{"realtime": 2, "step": "s", "type": 0}, {"realtime": 6, "step": "s", "type": 1}]},
    {"id": "3", "task": "CRR", "video": "videos/missing.mp4", "question": "q", "answer": "a", "ask_time": 1,
     "clue_time": 3, "test_info": [{"realtime": 1, "type": 0}, {"realtime": 4, "type": 1}]},
]


@pytest.fixture
def bench_dir(tmp_path):
    """Fixture annotations, and their videos rendered from the synthetic world (c.mp4 / missing.mp4 absent)."""
    for name, data in (("real.json", SB_REAL), ("sqa.json", SB_SQA), ("proactive.json", SB_PROACTIVE),
                       ("ovo.json", OVO)):
        (tmp_path / name).write_text(json.dumps(data))
    (tmp_path / "videos").mkdir()
    for seed, name in enumerate(("a.mp4", "b.mp4")):
        world = generate_world(seed, duration=10.0, fps=2.0)
        write_video(tmp_path / "videos" / name, world.render(), fps=2.0)
    return tmp_path


def test_scoring_hand_computed():
    assert final_answer("It was green.\nAnswer: B") == "B" and final_answer("B. green") == "B. green"
    assert score_streamingbench_mcq("reasoning\nAnswer: B", "B") and not score_streamingbench_mcq("The B", "B")
    assert score_streamingbench_mcq("b) green", "B")  # first character, case-insensitive
    assert score_ovo_mcq("I think (B) green", "B") and not score_ovo_mcq("green", "B")  # letter anywhere
    assert score_count("Answer: 3 times", "3") and score_count("there were 12", "12") and not score_count("two", "2")
    assert score_yesno("Yes, it is.", "yes") and score_yesno("reason\nAnswer: no", "no")
    assert not score_yesno("Maybe", "no")
    assert score_proactive(5.0, "It is a square", 4.0, "square") == (True, True)
    assert score_proactive(6.5, "square", 4.0, "square") == (False, False)  # outside +-2 s
    assert score_proactive(None, "", 4.0, "square") == (False, False)


def test_synthetic_scoring_accepts_the_gold_option_by_letter_or_text():
    question = "What color is the square now?\n" + "\n".join(OPTIONS)  # B. green
    for reply in ("So it is green.\nAnswer: green", "Answer: B", "Answer: b. Green.", "Answer: green."):
        assert score_synthetic(question, reply, "B"), reply
    for reply in ("Answer: red", "Answer: A", "Answer: green or red", "It is green.", "Answer: B. red"):
        assert not score_synthetic(question, reply, "B"), reply
    assert score_synthetic("How many?", "Answer: 3", "3") and not score_synthetic("How many?", "Answer: 3", "4")
    assert score_synthetic("Has a red square appeared?", "Answer: Yes", "yes")


def test_aggregations_both_ovo_conventions():
    rows = []
    for task, category, outcomes in (("EPM", "Backward Tracing", [1, 1, 0, 0]), ("ASI", "Backward Tracing", [1]),
                                     ("OCR", "Real-Time Visual Perception", [1, 0]),
                                     ("REC", "Forward Active Responding", [0, 0, 0, 1])):
        rows += [{"probe": {"task": task, "category": category, "benchmark": "ovobench"}, "correct": bool(o)}
                 for o in outcomes]
    report = aggregate(rows)
    assert report["tasks"]["EPM"]["accuracy"] == 50.0 and report["tasks"]["REC"]["accuracy"] == 25.0
    assert report["categories"]["Backward Tracing"] == 75.0  # mean of its tasks (50, 100), not of probes
    assert report["overall_code"] == pytest.approx((75.0 + 50.0 + 25.0) / 3)
    assert report["overall_paper"] == pytest.approx((50 + 100 + 50 + 25) / 4)
    assert report["overall_per_question"] == pytest.approx(100 * 5 / 11)


def test_probe_expansion_on_fixtures(bench_dir):
    sb = load_probes("streamingbench", [bench_dir / f for f in ("real.json", "sqa.json", "proactive.json")])
    assert len(sb) == 3 + 3 + 1
    assert sb[1].question.endswith("Respond with only the letter of the correct option.") and sb[1].answer == "C"
    assert [p.time for p in sb if p.task.startswith("Sequential")] == [2.0, 4.0, 6.0]
    assert sb[-1].kind == "proactive" and sb[-1].extra["ground_truth_time"] == 4.0
    ovo = load_probes("ovobench", [bench_dir / "ovo.json"])
    assert dry_run_summary(ovo)["tasks"] == {
        "CRR": {"category": "Forward Active Responding", "probes": 2, "videos": 1},
        "EPM": {"category": "Backward Tracing", "probes": 1, "videos": 1},
        "REC": {"category": "Forward Active Responding", "probes": 3, "videos": 1},
        "SSR": {"category": "Forward Active Responding", "probes": 2, "videos": 1},
    }
    assert ovo[0].answer == "B" and ovo[2].answer == "2" and ovo[4].answer == "no"


def test_dry_run_cli(bench_dir, capsys):
    assert main(["eval", "ovobench", "--annotations", str(bench_dir / "ovo.json"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["probes"] == 8


def make_run(model, processor, bench_dir, out, **kwargs):
    probes = [p.to_dict() for p in load_probes("ovobench", [bench_dir / "ovo.json"])]
    return EvalRun(model, processor, probes, bench_dir, out, fps=2.0, progress=False, max_note_tokens=2,
                   max_answer_tokens=3, **kwargs)


def test_end_to_end_one_pass_with_missing_video(model, processor, bench_dir, tmp_path, monkeypatch):
    streams = []
    original = model.stream_generate
    monkeypatch.setattr(model, "stream_generate", lambda *a, **k: streams.append(a[1]) or original(*a, **k))
    make_run(model, processor, bench_dir, tmp_path / "out").run()
    report = merge_report(tmp_path / "out", "ovo")
    assert len(streams) == 2  # one pass per readable video, every probe answered in it
    assert report["probes_scored"] == 6 and set(report["tasks"]) == {"EPM", "REC", "SSR"}
    assert report["missing_videos"] and "videos/missing.mp4" in report["missing_videos"][0]
    assert "overall_code" in report and "overall_paper" in report and report["ttft_tokens_mean"] > 0
    assert "(mean of 12 tasks)" in (tmp_path / "out" / "report.md").read_text()


def test_resume_after_interruption(model, processor, bench_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    make_run(model, processor, bench_dir, out).run()
    results = out / "results.rank0.jsonl"
    lines = results.read_text().splitlines()
    results.write_text(lines[0] + "\n" + lines[1][:20])  # interrupted mid-write after one probe
    asked = []
    original = model.stream_generate
    monkeypatch.setattr(model, "stream_generate", lambda *a, **k: asked.append(len(a[2])) or original(*a, **k))
    make_run(model, processor, bench_dir, out).run()
    assert sum(asked) == 5  # only the probes without a complete result ran again
    assert merge_report(out, "ovo")["probes_scored"] == 6


def test_single_round_offline_and_proactive(model, processor, bench_dir, tmp_path):
    for protocol in ("single-round", "offline"):
        make_run(model, processor, bench_dir, tmp_path / protocol, protocol=protocol).run()
        assert merge_report(tmp_path / protocol, protocol)["probes_scored"] == 6
    probes = [p.to_dict() for p in load_probes("streamingbench", [bench_dir / "proactive.json"])]
    EvalRun(model, processor, probes, bench_dir, tmp_path / "pro", fps=2.0, progress=False, max_note_tokens=2,
            max_answer_tokens=2).run()
    (row,) = [json.loads(line) for line in (tmp_path / "pro" / "results.rank0.jsonl").read_text().splitlines()]
    assert row["protocol"] == "proactive-polling" and "first_yes_time" in row and "on_time" in row
    report = merge_report(tmp_path / "pro", "proactive")
    assert "proactive_time_accuracy" in report


def test_sqa_gold_context_is_opt_in(model, processor, bench_dir, tmp_path):
    probes = [p.to_dict() for p in load_probes("streamingbench", [bench_dir / "sqa.json"])]
    plain = EvalRun(model, processor, probes, bench_dir, tmp_path / "a", progress=False)
    leaky = EvalRun(model, processor, probes, bench_dir, tmp_path / "b", progress=False, sqa_gold_context=True)
    assert plain.question_text(probes[2], probes) == probes[2]["question"]
    assert leaky.question_text(probes[2], probes).count("Answer: A") == 2


@pytest.mark.slow
def test_two_process_run(bench_dir, tmp_path):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "tww_hf.cli", "eval", "ovobench", "--annotations",
         str(bench_dir / "ovo.json"), "--videos", str(bench_dir), "--out", str(tmp_path / "out"), "--fps", "2",
         "--max-note-tokens", "2", "--max-answer-tokens", "2"],
        capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((tmp_path / "out" / f"results.rank{rank}.jsonl").is_file() for rank in (0, 1))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["probes_scored"] == 6


def test_synthetic_eval_rows(model, processor, tmp_path, monkeypatch):
    from tww_hf.evaluation.synthetic import EVAL_SEED_OFFSET, ROWS, run_synthetic_eval, synthetic_probes

    probes = synthetic_probes(2, seed=5, folder=tmp_path / "videos")
    assert probes and all(p["id"].split("/")[0].endswith(f"{EVAL_SEED_OFFSET + 5:06d}") or
                          p["id"].split("/")[0].endswith(f"{EVAL_SEED_OFFSET + 6:06d}") for p in probes)
    # Each stream is cut into its own stage's segments, as in training (stage 2: 2 s, stage 3: 4 s).
    assert {p["category"]: p["extra"]["segment_seconds"] for p in probes} == {"stage 2": 2.0, "stage 3": 4.0}
    original, segmenters = model.stream_generate, []
    monkeypatch.setattr(model, "stream_generate",
                        lambda *a, **k: segmenters.append(k["segmenter"]) or original(*a, **k))
    result = run_synthetic_eval(model, processor, num=2, seed=5, out=tmp_path / "out", max_note_tokens=2,
                                max_answer_tokens=2, progress=False)
    aligned = [s for s in segmenters if hasattr(s, "max_seconds")]  # offline streams use one segment
    assert sorted({(s.max_seconds, s.recut_seconds) for s in aligned}) == [(2.0, 2.0), (4.0, 4.0)]
    assert set(result["rows"]) == set(ROWS)
    for report in result["rows"].values():
        assert report["probes_scored"] == result["probes"] == len(probes)
    no_notes, full = result["rows"]["no-notes"], result["rows"]["TWW multi-round"]
    assert no_notes["output_tokens_mean"] < full["output_tokens_mean"]  # notes left empty
    assert (tmp_path / "out" / "results.md").read_text().count("|") > 20
    assert (tmp_path / "out" / "results.png").is_file()


class _Oracle(torch.nn.Module):
    """Predicts the true next token everywhere (`after_answer=None`), or only right after "Answer:" (`True`), or
    everywhere except there (`False`); elsewhere it predicts a wrong token. Independent of `answer_spans`: it finds
    "Answer:" by looking back at the input ids."""

    def __init__(self, config, answer_ids: list[int], after_answer: bool | None):
        super().__init__()
        self.config, self.answer_ids, self.after_answer = config, answer_ids, after_answer
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, **_):
        batch, length = input_ids.shape
        vocab = int(input_ids.max()) + 2
        following = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)
        width = len(self.answer_ids)
        at_answer = torch.zeros_like(input_ids, dtype=torch.bool)
        for i in range(width - 1, length):
            at_answer[:, i] = (input_ids[:, i - width + 1: i + 1] == torch.tensor(self.answer_ids)).all(-1)
        right = torch.ones_like(at_answer) if self.after_answer is None else at_answer == self.after_answer
        predicted = torch.where(right, following, following + 1)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(predicted, vocab).float())


@pytest.mark.parametrize("after_answer", [None, True, False])
def test_teacher_forced_answers_scores_the_final_answer_tokens(model, processor, tmp_path, after_answer):
    from tww_hf.evaluation.forced import forced_notes_table, forced_table, teacher_forced_answers, teacher_forced_notes
    from tww_hf.evaluation.synthetic import synthetic_probes

    probes = synthetic_probes(3, seed=2, folder=tmp_path)
    expected = Counter(p["task"] for p in probes)
    said = [option_texts(p["question"]).get(p["answer"], p["answer"]) for p in probes]  # what the answer line says
    multi_token = {p["task"] for p, text in zip(probes, said) if len(processor.encode_text(" " + text)) > 1}
    oracle = _Oracle(model.config, processor.encode_text("Answer:"), after_answer)
    result = teacher_forced_answers(oracle, processor, num=3, seed=2, batch_size=2)
    assert {kind: row["questions"] for kind, row in result.items()} == dict(expected)
    for kind, row in result.items():
        if after_answer is None or (after_answer and kind not in multi_token):  # only the 1st token is after it
            assert row["accuracy"] == 100.0, kind
        elif after_answer is False:
            assert row["accuracy"] == 0.0, kind
    assert "| question type |" in forced_table(result, 3, 2)
    if after_answer is not False:  # an oracle right everywhere / only after "Answer:" (never inside a note)
        notes = teacher_forced_notes(oracle, processor, num=3, seed=2, batch_size=2)
        assert notes and all(row["notes"] > 0 for row in notes.values())
        scores = [row[kind] for row in notes.values() for kind in ("colour", "shape", "number") if kind in row]
        assert scores and set(scores) == {100.0 if after_answer is None else 0.0}
        assert "| segment ends |" in forced_notes_table(notes, 3, 2)


def test_cli_teacher_forced_on_the_demo_model(capsys):
    assert main(["eval", "synthetic", "--teacher-forced", "--num", "2", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    answers, notes = result["answers"], result["notes_by_time"]
    assert answers and all(0.0 <= row["accuracy"] <= 100.0 and row["questions"] > 0 for row in answers.values())
    assert notes and all(0.0 <= row[k] <= 100.0 for row in notes.values() for k in ("colour", "shape", "number")
                         if k in row)


def test_synthetic_eval_runs_only_the_rows_asked_for(model, processor, tmp_path):
    from tww_hf.evaluation.synthetic import ROWS, run_synthetic_eval, select_rows

    assert select_rows(None) == ROWS
    assert list(select_rows(["no-notes", "TWW multi-round"])) == ["TWW multi-round", "no-notes"]  # table order
    with pytest.raises(ValueError, match="unknown synthetic eval row.*'fast'.*choose from"):
        select_rows(["multi-round", "fast"])
    result = run_synthetic_eval(model, processor, num=1, seed=3, max_note_tokens=2, max_answer_tokens=2,
                                progress=False, rows=["single-round"])
    assert list(result["rows"]) == ["TWW single-round"]
    assert result["rows"]["TWW single-round"]["probes_scored"] == result["probes"] > 0
    # The same JSON goes on a model card (`tww export --eval`): one entry per question type, plus overall.
    from tww_hf.hub_cards.card import load_eval_results

    (tmp_path / "synthetic.json").write_text(json.dumps(result))
    entries, row = load_eval_results(tmp_path / "synthetic.json"), result["rows"]["TWW single-round"]
    expected = {f"accuracy ({task})": round(score["accuracy"], 1) for task, score in row["tasks"].items()}
    expected["accuracy"] = round(row["overall_per_question"], 1)
    assert {e["metric"]: e["value"] for e in entries} == expected
    assert {e["setting"] for e in entries} == {"TWW single-round"} and "seed 3, 1 streams" in entries[0]["benchmark"]


def test_note_checks_on_a_hand_worked_stream():
    from tww_hf.evaluation.notes import check_notes
    from tww_hf.world import Event

    events = [Event(0.0, "enter", 0, "circle", "red"), Event(2.0, "enter", 1, "square", "blue"),
              Event(3.0, "recolor", 0, "circle", "red", "green"), Event(5.0, "enter", 2, "circle", "white")]
    notes = ["0.0s: a red circle enters. Shapes seen: circle. Entries so far: 1.",  # right
             "At 3.0s the red circle turns green (4.0s). Shapes seen: circle. Entries so far: 1.",  # misses the square
             "A white circle enters (5.0s). Shapes seen: circle. Entries so far: 2."]  # adds up, one short
    checks = check_notes(notes, [1.5, 3.5, 5.5], events)
    assert [c["entries"] for c in checks] == [True, False, True]
    assert [c["adds_up"] for c in checks] == [True, True, True]
    assert [c["count"] for c in checks] == [True, False, False]
    assert [c["count_low"] for c in checks] == [False, True, True]
    assert [c["shapes"] for c in checks] == [True, False, False]  # the square is missing from the list too
    assert not any(c["count_high"] for c in checks)
    assert [c["times"] for c in checks] == [True, False, True]  # 4.0s is after its segment's end, 3.5s
    assert [(c["happened"], c["found"]) for c in checks] == [(1, 1), (1, 0), (1, 1)]  # entry recall 2 of 3
    no_count = check_notes(["Nothing happens."], [1.5], events)[0]
    assert not (no_count["count"] or no_count["count_low"] or no_count["adds_up"])


def test_cli_note_checks_on_the_demo_model(capsys):
    assert main(["eval", "synthetic", "--notes", "--num", "2", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"stage 2", "stage 3"}
    for row in result.values():
        assert row["notes"] > 0 and all(0.0 <= row[c] <= 100.0 for c in ("count", "shapes", "entries", "adds_up"))
        assert row["count"] + row["count_low"] + row["count_high"] <= 100.0 + 1e-9
        assert row["entries_total"] > 0 and 0.0 <= row["entry_recall"] <= 100.0
