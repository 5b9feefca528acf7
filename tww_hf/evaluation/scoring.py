"""Scoring as the official harnesses do it, and their aggregations.

A TWW reply is reasoning ending in `Answer: X`; the official rules are applied to the final answer (the text after
the last `Answer:`, or the whole reply when there is none):
- StreamingBench multiple choice: the first character equals the answer letter.
- OVO-Bench backward / real-time: lenient, the gt letter occurs in the response.
- OVO-Bench REC: the digits extracted from the response equal the count.
- OVO-Bench SSR / CRR: Yes/No.
- StreamingBench proactive: the first poll answered "yes" is within +-2 s of the ground-truth time (time accuracy),
  and the output contains the ground-truth text (answer accuracy).
"""

import re
from collections import defaultdict


def final_answer(reply: str) -> str:
    """The text after the last 'Answer:' (TWW's format), else the whole reply; stripped."""
    reply = str(reply or "")
    index = reply.rfind("Answer:")
    return (reply[index + len("Answer:"):] if index >= 0 else reply).strip()


def option_texts(question: str) -> dict[str, str]:
    """{letter: text} of the `A. text` option lines of a multiple-choice question ({} when it has none)."""
    return dict(re.findall(r"^([A-Z])\. (.+?)\s*$", str(question or ""), re.MULTILINE))


def score_synthetic(question: str, reply: str, gold: str) -> bool:
    """Our own data: the final answer must be exactly the gold one (case and a final period aside). For multiple
    choice, the gold option's text counts as well as its letter or its whole line (`Answer: green`, `Answer: D`,
    `Answer: D. green`); anything else, another option's text included, is wrong."""
    said = final_answer(reply).lower().rstrip(".").strip()
    gold = gold.strip()
    text = option_texts(question).get(gold.upper())
    accepted = {gold.lower()} | ({text.lower().rstrip("."), f"{gold}. {text}".lower().rstrip(".")} if text else set())
    return said in accepted


def score_streamingbench_mcq(reply: str, answer: str) -> bool:
    text = final_answer(reply)
    return bool(text) and text[0].upper() == answer.strip().upper()


def score_ovo_mcq(reply: str, answer: str) -> bool:
    return answer.strip().upper() in final_answer(reply).upper()


def score_count(reply: str, answer: str) -> bool:
    digits = "".join(re.findall(r"\d", final_answer(reply)))
    return digits != "" and int(digits) == int(answer)


def score_yesno(reply: str, answer: str) -> bool:
    text = final_answer(reply).lower()
    said = "yes" if text.startswith("yes") else "no" if text.startswith("no") else None
    return said == answer.lower()


def score_proactive(first_yes_time: float | None, output: str, ground_truth_time: float, truth: str,
                    window: float = 2.0) -> tuple[bool, bool]:
    """(time correct, answer correct) for one proactive item."""
    on_time = first_yes_time is not None and abs(first_yes_time - ground_truth_time) <= window
    return on_time, on_time and truth.strip().lower() in str(output or "").lower()


def score_probe(probe: dict, reply: str) -> bool:
    """Correctness of one non-proactive probe (`probe` as `Probe.to_dict()`)."""
    kind, answer = probe["kind"], probe["answer"]
    if probe["benchmark"] == "synthetic":
        return score_synthetic(probe["question"], reply, answer)
    if kind == "mcq":
        lenient = probe["benchmark"] == "ovobench"
        return score_ovo_mcq(reply, answer) if lenient else score_streamingbench_mcq(reply, answer)
    if kind == "count":
        return score_count(reply, answer)
    if kind == "yesno":
        return score_yesno(reply, answer)
    raise ValueError(f"Probe {probe['id']} of kind {kind!r} is scored separately (proactive) or not at all.")


def _mean(values) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else float("nan")


def aggregate(results: list[dict]) -> dict:
    """Per task, per category and overall accuracy (%). Rows: {"probe": Probe dict, "correct": bool}.

    - StreamingBench overall: the mean over questions (every probe counts once).
    - OVO-Bench, both conventions, named: `overall_code` = mean of the three category scores, each the mean of its
      task accuracies (the official code); `overall_paper` = mean of the 12 task accuracies (OVO-Bench issue #7).
    """
    by_task, category_of, benchmarks = defaultdict(list), {}, set()
    for row in results:
        probe = row["probe"]
        by_task[probe["task"]].append(bool(row["correct"]))
        category_of[probe["task"]] = probe["category"]
        benchmarks.add(probe["benchmark"])
    tasks = {task: _mean(values) for task, values in sorted(by_task.items())}
    categories = defaultdict(list)
    for task, accuracy in tasks.items():
        categories[category_of[task]].append(accuracy)
    report = {
        "tasks": {task: {"accuracy": acc, "n": len(by_task[task]), "category": category_of[task]}
                  for task, acc in tasks.items()},
        "categories": {name: sum(v) / len(v) for name, v in sorted(categories.items())},
        "overall_per_question": _mean(bool(r["correct"]) for r in results),
    }
    if "ovobench" in benchmarks:
        report["overall_code"] = sum(report["categories"].values()) / len(report["categories"])
        report["overall_paper"] = sum(tasks.values()) / len(tasks)
    return report


def markdown_report(report: dict, title: str) -> str:
    lines = [f"# {title}", "", "| task | category | n | accuracy (%) |", "|---|---|---|---|"]
    for task, row in report["tasks"].items():
        lines.append(f"| {task} | {row['category']} | {row['n']} | {row['accuracy']:.2f} |")
    lines += ["", "| category | accuracy (%) |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in report["categories"].items()]
    lines += ["", f"- overall, per question: {report['overall_per_question']:.2f}"]
    if "overall_code" in report:
        lines += [f"- OVO-Bench overall, code convention (mean of 3 categories): {report['overall_code']:.2f}",
                  f"- OVO-Bench overall, paper convention (mean of 12 tasks): {report['overall_paper']:.2f}"]
    for key in ("output_tokens_mean", "ttft_tokens_mean", "ttft_seconds_mean", "max_lag", "missing_videos"):
        if key in report:
            lines.append(f"- {key.replace('_', ' ')}: {report[key]}")
    return "\n".join(lines) + "\n"
