"""Three-stage streaming CoT data on the synthetic world, written by a deterministic teacher from the event log.

- Stage 1: short clips, one question (real-time, short backward, or asked before its evidence exists).
- Stage 2: short clips, several questions whose answers reuse earlier evidence, a few asked before their evidence
  exists.
- Stage 3: long streams with distractor segments, questions about events far back, and questions asked before their
  evidence exists (the right answer says it cannot be known yet).

Every record is in the trainer's JSONL format (`tww_hf/data.py`) plus `events` (the exact log) and `world` (how to
regenerate it), which the causality validator checks notes and reasoning against.
"""

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .evaluation.scoring import option_texts
from .world import COLORS, SHAPES, Event, World, generate_world


NOT_YET = "It has not appeared yet"
MCQ_ANSWERS = ("option", "letter")
NEGATIVES = ("random", "hard")
STAGES = {
    1: dict(duration=(2.0, 8.0), segment=2.0, questions=(1, 1), distractors=False, premature=0.25, late_start=64),
    2: dict(duration=(12.0, 20.0), segment=2.0, questions=(2, 4), distractors=False, premature=0.2, late_start=52),
    3: dict(duration=(48.0, 72.0), segment=4.0, questions=(3, 5), distractors=True, premature=0.3, late_start=0),
}
ENTRIES_SO_FAR = "Entries so far: {n}."
# `build_record(busy=True)`: a training world with more arrivals and fewer departures. The default world puts one
# object on screen in 73 % of the 2 s segments of stage-1 clips (2 or 3 objects in 21 %), while a minute-long
# benchmark stream has 2 or 3 in 68 % of its segments; these settings give 60 % in stage-1 clips.
BUSY_WORLD = dict(event_rate=0.7, event_weights={"enter": 8.0, "leave": 1.5, "recolor": 2.5, "move": 1.0, "stop": 1.0})
SHAPES_SEEN = "Shapes seen: {shapes}."
_EVENT_TEMPLATES = ("At {t:.1f}s {what}.", "{t:.1f}s: {what}.", "{What} ({t:.1f}s).")


@dataclass
class Question:
    time: float
    text: str
    options: list[str] | None
    answer: str  # the gold answer: a letter, yes/no, or a number
    kind: str  # realtime, backward, count, presence, not_yet
    reasoning: str


# ------------------------------------------------------------------------------------------------------ teacher
class TemplateTeacher:
    """Writes notes and reasoning from the event log alone, never looking past the unit it writes."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def note(self, world: World, start: float, end: float) -> str:
        """What happened in (start, end], then the state carried from note to note (`carried_state`)."""
        events = world.events_between(start, end)
        return f"{self._what_happened(world, events, end)} {carried_state(world.events, end)}"

    def _what_happened(self, world: World, events: list[Event], end: float) -> str:
        if events:
            return " ".join(self._sentence(e) for e in events)
        objects = [o for o in world.state_at(end) if o.id >= 0]
        if not objects:
            return "The screen is empty; nothing happens."
        things = ", ".join(f"a {o.color} {o.shape}" + (f" moving {o.direction}" if o.direction else "")
                           for o in objects)
        return f"On screen: {things}; nothing changes."

    def _sentence(self, event: Event) -> str:
        template = _EVENT_TEMPLATES[int(self.rng.integers(len(_EVENT_TEMPLATES)))]
        what = event.describe()
        return template.format(t=event.time, what=what, What=what[0].upper() + what[1:])


def carried_state(events: list[Event], time: float) -> str:
    """What every note ends with: the shapes that have entered by `time` and how many objects
    (`Shapes seen: circle, square. Entries so far: 3.`).

    Both only grow, so the writer copies the previous note's and adds this segment's entries; questions about the
    whole past read the latest note. Without it the demo model had to search every note: a count answer had to
    cite each entry (26 % on held-out counts), and a "color of the square now" answer had to find whether any note
    named a square, which it got wrong both ways (README)."""
    entries = [e for e in events if e.kind == "enter" and e.time <= time + 1e-6]
    shapes = ", ".join(dict.fromkeys(e.shape for e in entries)) or "none"
    return f"{SHAPES_SEEN.format(shapes=shapes)} {ENTRIES_SO_FAR.format(n=len(entries))}"


def _latest_shapes(world: World, time: float) -> str:
    """The `Shapes seen: ...` sentence of the latest note at `time` (questions are asked at segment ends)."""
    return carried_state(world.events, time).split(" Entries")[0]


# ---------------------------------------------------------------------------------------------------- questions
def _history(world: World, time: float) -> list[Event]:
    return [e for e in world.events if e.time <= time]


def _mcq(rng, correct: str, pool: list[str], always: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """Four options: `correct`, every distinct option of `always`, and random distractors from `pool`."""
    fixed = [a for a in dict.fromkeys(always) if a != correct]
    distractors = [p for p in dict.fromkeys(pool) if p != correct and p not in fixed]
    rng.shuffle(distractors)
    options = [correct] + fixed + distractors[: 3 - len(fixed)]
    rng.shuffle(options)
    return [f"{'ABCD'[i]}. {o}" for i, o in enumerate(options)], "ABCD"[options.index(correct)]


def _seen_colors(events: list[Event]) -> list[str]:
    """Every colour `events` show on screen (entry colours and recolour targets), in order of first appearance."""
    return list(dict.fromkeys(c for e in events for c in (e.color, e.detail if e.kind == "recolor" else "") if c))


def _hard_first(rng, hard: list[str], easy: list[str], exclude: tuple[str, ...], n: int) -> list[str]:
    """`n` distinct distractors not in `exclude`: random ones from `hard` first, then from `easy`."""
    hard, easy = list(dict.fromkeys(hard)), list(dict.fromkeys(easy))
    rng.shuffle(hard)
    rng.shuffle(easy)
    return [o for o in dict.fromkeys(hard + easy) if o not in exclude][:n]


def _cite(events: list[Event]) -> str:
    return " ".join(f"The note at {e.time:.1f}s says {e.describe()}." for e in events) or "No note reports a change."


def ask_realtime(world: World, time: float, rng) -> Question | None:
    present = [o for o in world.state_at(time) if o.id >= 0]
    # Two objects of one shape can be on screen at once; "the circle" must name exactly one of them.
    objects = [o for o in present if sum(p.shape == o.shape for p in present) == 1]
    if not objects:
        return None
    target = objects[int(rng.integers(len(objects)))]
    # Real-time and not-yet questions share one wording and the not-yet option: neither gives the other away.
    options, letter = _mcq(rng, target.color, list(COLORS), always=(NOT_YET,))
    evidence = [e for e in _history(world, time) if e.object == target.id][-2:]
    reasoning = (f"The latest note says: {_latest_shapes(world, time)} {_cite(evidence)} "
                 f"So the {target.shape} is {target.color} now.")
    return Question(time, f"What color is the {target.shape} now?", options, letter, "realtime", reasoning)


def ask_first(world: World, time: float, rng, hard: bool = False) -> Question | None:
    entered = [e for e in _history(world, time) if e.kind == "enter"]
    if len(entered) < 2:
        return None
    first = entered[0]
    correct = f"{first.color} {first.shape}"
    if hard:
        # The other objects seen so far, and always the first object's colour on another shape: knowing which
        # colours appeared, without which object had which, is not enough.
        same_color = [f"{first.color} {s}" for s in SHAPES if s != first.shape]
        trap = same_color[int(rng.integers(len(same_color)))]
        negatives = [f"{e.color} {e.shape}" for e in entered] + same_color
        negatives += [f"{c} {first.shape}" for c in _seen_colors(entered)]
        easy = [f"{c} {first.shape}" for c in COLORS if c != "white"]
        options, letter = _mcq(rng, correct, _hard_first(rng, negatives, easy, (correct, trap), 2), always=(trap,))
    else:
        pool = [f"{e.color} {e.shape}" for e in entered] + [f"{c} {s}" for s in SHAPES for c in list(COLORS)[:4]]
        options, letter = _mcq(rng, correct, pool)
    reasoning = f"{_cite(entered[:2])} The earliest entry is the {first.color} {first.shape}."
    return Question(time, "Which object entered first?", options, letter, "backward", reasoning)


def ask_entry_color(world: World, time: float, rng, hard: bool = False) -> Question | None:
    """A backward question whose answer the frames no longer show: the colour a shape had when it entered, asked
    after that object changed colour or left. Only shapes that entered once so far, so "the circle" is one object.
    `hard`: prefer a later object to the first one, and draw distractors from the colours seen first."""
    history = _history(world, time)
    entered = [e for e in history if e.kind == "enter"]
    once = [e for e in entered if sum(f.shape == e.shape for f in entered) == 1]
    gone_or_changed = {e.object for e in history if e.kind in ("recolor", "leave")}
    candidates = [e for e in once if e.object in gone_or_changed]
    if not candidates:
        return None
    # Prefer an object that entered after the first: at the first entry it is alone on screen, and "the colour of
    # whatever came first" would answer without knowing which object is the circle.
    if hard:
        candidates = [e for e in candidates if e is not entered[0]] or candidates
    entry = candidates[int(rng.integers(len(candidates)))]
    later = [e for e in history if e.object == entry.object and e.kind == "recolor"]
    trap = (later[-1].detail,) if later else ()  # the colour it shows now (or last showed): the visible answer
    pool = [c for c in COLORS if c != "white"]
    if hard:  # colours seen in the stream (on other objects) first
        pool = _hard_first(rng, _seen_colors(history), pool, (entry.color, *trap), 3 - len(trap))
    options, letter = _mcq(rng, entry.color, pool, always=trap)
    reasoning = f"{_cite([entry])} So the {entry.shape} was {entry.color} when it entered."
    return Question(time, f"What color was the {entry.shape} when it entered?", options, letter, "backward", reasoning)


def ask_count(world: World, time: float, rng) -> Question | None:
    """Answered from the latest note's running count (every note ends with `Entries so far: N.`)."""
    entered = sum(e.kind == "enter" for e in _history(world, time))
    reasoning = f"The latest note says: {ENTRIES_SO_FAR.format(n=entered)}"
    return Question(time, "How many objects have entered so far?", None, str(entered), "count", reasoning)


def ask_presence(world: World, time: float, rng) -> Question | None:
    seen = {(e.color, e.shape) for e in _history(world, time) if e.kind in ("enter", "recolor")}
    seen |= {(e.detail, e.shape) for e in _history(world, time) if e.kind == "recolor"}
    color, shape = str(rng.choice(list(COLORS)[:5])), str(rng.choice(SHAPES))
    answer = "yes" if (color, shape) in seen else "no"
    matching = [e for e in _history(world, time) if e.shape == shape][:2]
    reasoning = f"{_cite(matching)} A {color} {shape} {'has' if answer == 'yes' else 'has not'} appeared."
    return Question(time, f"Has a {color} {shape} appeared so far?", None, answer, "presence", reasoning)


def ask_not_yet(world: World, time: float, rng) -> Question | None:
    """A question about a shape that has not appeared by `time`: the right answer is that it cannot be known yet."""
    seen = {e.shape for e in _history(world, time)}
    unseen = [s for s in SHAPES if s not in seen]
    if not unseen:
        return None
    shape = unseen[int(rng.integers(len(unseen)))]
    options, letter = _mcq(rng, NOT_YET, list(COLORS))
    # A full stop, not ", so": the demo model drifted from ", so" into a note's wording.
    reasoning = f"The latest note says: {_latest_shapes(world, time)} No {shape} yet. Its color cannot be known yet."
    return Question(time, f"What color is the {shape} now?", options, letter, "not_yet", reasoning)


ASKERS = {1: (ask_realtime, ask_entry_color, ask_count, ask_presence),
          2: (ask_realtime, ask_first, ask_entry_color, ask_count, ask_presence),
          3: (ask_realtime, ask_first, ask_entry_color, ask_count, ask_presence)}


# ------------------------------------------------------------------------------------------------------ records
def build_record(stage: int, seed: int, size: int = 64, fps: float = 2.0, mcq_answer: str = "option",
                 negatives: str = "random", late_start: bool = False, busy: bool = False) -> dict:
    """One record of `stage` from `seed` (the same seed always gives the same record).

    `late_start`: the clip begins a random whole number of seconds into the stream (up to the stage's
    `late_start`; the canvas is empty until then), so its `<t seconds>` headers and note times are those of a
    minute-long stream. Training data uses it: with clips that always start at 0 s, the demo model (most of whose
    steps are stage-1 clips of at most 8 s) never learned to match the later times of the note prefix to the
    source's headers, and from about 10 s into a stream its notes, even teacher-forced, named times outside their
    segment and colours it was not looking at (README). The benchmark's streams start at 0 s.

    `busy`: the world is `BUSY_WORLD` (more arrivals, fewer departures), so that short training clips show two or
    three objects at once as often as minute-long streams do. The benchmark uses the default world.

    `negatives`: how backward questions pick their distractors. "random" (training data) draws them at random;
    "hard" (the benchmark, `tww eval synthetic`) draws other objects and colours seen in the stream, always offers
    the first object's colour on another shape, and asks entry colours of later objects rather than the first one,
    so that a model cannot answer from which colours it saw without knowing which object had which.

    `mcq_answer`: how a multiple-choice answer line names the chosen option: "option" (its text, `Answer: green`,
    the default) or "letter" (`Answer: D`). `gold` is the letter either way, and the synthetic scorer accepts both.
    The option text is the default because the letter needs a content -> letter lookup that the from-scratch demo
    model never learned in its CPU budget (README, "Synthetic evaluation and the demo model")."""
    if mcq_answer not in MCQ_ANSWERS:
        raise ValueError(f"mcq_answer must be one of {MCQ_ANSWERS}, got {mcq_answer!r}.")
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}.")
    spec, rng = STAGES[stage], np.random.default_rng([stage, seed])
    duration = float(rng.uniform(*spec["duration"]) // spec["segment"] * spec["segment"])
    # Its own generator, so that records without a late start stay the same.
    start = float(np.random.default_rng([stage, seed, 1]).integers(0, spec["late_start"] + 1)) if late_start else 0.0
    distractors = ([(start + duration * 0.3, start + duration * 0.3 + spec["segment"])] if spec["distractors"]
                   else None)
    # Only busy records store the world's event settings, so that other records stay byte for byte the same.
    busy_world = BUSY_WORLD if busy else {}
    world = generate_world(seed * 7 + stage, duration=duration, fps=fps, size=size, distractor_spans=distractors,
                           start=start, **busy_world)
    questions = _questions(world, stage, rng, hard=negatives == "hard")
    units, teacher, previous = [], TemplateTeacher(seed), -1.0
    times = world.timestamps
    for end in segment_ends(world, spec["segment"]):
        frame_times = [t for t in times if previous < t <= end]
        units.append({"kind": "segment", "start": frame_times[0], "end": end,
                      "note": teacher.note(world, previous, end)})
        for question in (q for q in questions if q.time == end):
            units.append(_question_unit(question, mcq_answer))
        previous = end
    return {"id": f"synth-s{stage}-{seed:06d}", "stage": stage, "fps": fps, "units": units,
            "events": [asdict(e) for e in world.events],
            "world": {"seed": seed * 7 + stage, "duration": duration, "fps": fps, "size": size,
                      "distractor_spans": distractors, "start": start, **busy_world}}


def segment_ends(world: World, segment: float) -> list[float]:
    """The stream times at which `world`'s segments of `segment` seconds end (each one's last frame)."""
    return [float(round(world.start + t, 6)) for t in np.arange(segment - 1 / world.fps, world.duration, segment)]


def _questions(world: World, stage: int, rng, hard: bool = False) -> list[Question]:
    spec = STAGES[stage]
    ends = segment_ends(world, spec["segment"])
    count = int(rng.integers(spec["questions"][0], spec["questions"][1] + 1))
    candidates = ends[1:] if len(ends) > 1 else ends
    times = sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False).tolist())
    questions = []
    for time in times:
        premature = rng.random() < spec["premature"]
        askers = (ask_not_yet,) if premature else ASKERS[stage]
        for asker in rng.permutation(len(askers)):
            ask = askers[int(asker)]
            options = {"hard": True} if hard and ask in (ask_first, ask_entry_color) else {}
            question = ask(world, float(time), rng, **options)
            if question is not None:
                questions.append(question)
                break
    return questions


def _question_unit(question: Question, mcq_answer: str = "option") -> dict:
    text = question.text + ("\n" + "\n".join(question.options) if question.options else "")
    said = question.answer
    if question.options and mcq_answer == "option":
        said = option_texts(text)[question.answer]
    return {"kind": "question", "time": question.time, "question": text, "question_type": question.kind,
            "answer": f"{question.reasoning}\nAnswer: {said}", "gold": question.answer}


def render_record_video(record: dict, out_dir: str | Path) -> Path:
    """Regenerates the record's world, renders it and writes `clips/<id>.mp4` under `out_dir`; sets `video`."""
    from .video import write_video

    world = generate_world(**{k: v for k, v in record["world"].items()})
    path = Path(out_dir) / "clips" / f"{record['id']}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, world.render(), fps=world.fps, start=world.start)
    record["video"] = str(path.relative_to(out_dir))
    return path


# ---------------------------------------------------------------------------------------------------- validator
TIME_MENTION = re.compile(r"(\d+(?:\.\d+)?)s\b")
_ANSWER = re.compile(r"\nAnswer: ([^\n]+)$")


def causality_problems(record: dict) -> list[str]:
    """Everything that breaks the streaming format or causality: one output per unit (checked by the trainer's
    validator), notes only about their own segment, reasoning citing only what arrived before the question,
    well-formed answers. With an event log, note events are checked against it."""
    problems, previous_end = [], -1.0
    events = [Event(**e) for e in record.get("events", [])]
    for index, unit in enumerate(record.get("units", [])):
        where = f"units[{index}]"
        if unit.get("kind") == "segment":
            problems += _note_problems(unit, previous_end, events, where)
            previous_end = float(unit["end"])
        elif unit.get("kind") == "question":
            answer = str(unit.get("answer") or "")
            if not _well_formed(answer, str(unit.get("question") or "")):
                problems.append(f"{where}: the answer does not end with 'Answer: X' (an option's letter or text, "
                                "yes/no or a number).")
            late = [float(t) for t in TIME_MENTION.findall(answer) if float(t) > float(unit["time"]) + 1e-6]
            if late:
                problems.append(f"{where}: the reasoning cites {late[0]}s, after the question at {unit['time']}s.")
    return problems


def _well_formed(answer: str, question: str) -> bool:
    found = _ANSWER.search(answer)
    if found is None:
        return False
    said, options = found.group(1), option_texts(question)
    if options:
        return said in options or said in options.values()
    return said in ("yes", "no") or said.isdigit()


def _note_problems(unit: dict, previous_end: float, events: list[Event], where: str) -> list[str]:
    note, end = str(unit.get("note") or ""), float(unit["end"])
    if not note.strip():
        return [f"{where}: the segment has no note."]
    problems = []
    for time in (float(t) for t in TIME_MENTION.findall(note)):
        if not previous_end < time <= end + 1e-6:
            problems.append(f"{where}: the note mentions {time}s, outside its segment ({previous_end}, {end}].")
    if events:
        own = {e.describe() for e in events if previous_end < e.time <= end}
        later = [e for e in events if e.time > end and e.describe() in note and e.describe() not in own]
        if later:
            problems.append(f"{where}: the note reports '{later[0].describe()}', which happens later "
                            f"({later[0].time}s).")
        state = carried_state(events, end)
        if ("Entries so far" in note or "Shapes seen" in note) and not note.endswith(state):
            problems.append(f"{where}: the note's carried state does not match the log, which gives '{state}' "
                            f"at {end}s.")
    return problems


def synthesize(stage: int, num: int, out: str | Path, seed: int = 0, progress: bool = True, size: int = 64,
               fps: float = 2.0, mcq_answer: str = "option", negatives: str = "random",
               late_start: bool = False, busy: bool = False) -> tuple[Path, list[str]]:
    """Writes `num` validated records of `stage` to `out/stage{stage}.jsonl` (videos under `out/clips/`); records
    that fail validation are reported and dropped. Returns the file and the problems found. `mcq_answer`,
    `negatives`, `late_start` and `busy`: see `build_record`."""
    import json

    from tqdm.auto import tqdm

    from .data import RecordError, validate_record

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, problems, kept = out / f"stage{stage}.jsonl", [], 0
    with path.open("w") as handle:
        for index in tqdm(range(num), desc=f"stage {stage}", disable=not progress):
            record = build_record(stage, seed + index, size=size, fps=fps, mcq_answer=mcq_answer, negatives=negatives,
                                  late_start=late_start, busy=busy)
            render_record_video(record, out)
            found = causality_problems(record)
            try:
                validate_record({**record, "_root": str(out)})
            except RecordError as error:
                found.append(str(error))
            if found:
                problems += [f"{record['id']}: {problem}" for problem in found]
                continue
            handle.write(json.dumps(record) + "\n")
            kept += 1
    return path, problems
