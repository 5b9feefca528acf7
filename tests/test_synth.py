"""The synthetic world and the three-stage data: determinism, frames vs event log, notes vs log, the validator."""

import json
from dataclasses import replace

import numpy as np
import pytest

from tww_hf.cli import main
from tww_hf.data import load_jsonl, validate_record
from tww_hf.evaluation.scoring import option_texts
from tww_hf.synth import (
    NOT_YET,
    TemplateTeacher,
    ask_count,
    ask_entry_color,
    ask_first,
    ask_not_yet,
    ask_realtime,
    build_record,
    causality_problems,
    render_record_video,
)
from tww_hf.world import COLORS, OBJECT_SIZE, Event, World, WorldObject, generate_world


def test_same_seed_same_world_and_record():
    assert build_record(3, 11) == build_record(3, 11)
    assert build_record(2, 11) != build_record(2, 12)
    first, again = generate_world(5), generate_world(5)
    assert first.events == again.events and np.array_equal(first.render(), again.render())


def test_rendered_frames_match_the_event_log():
    world = generate_world(3, duration=20.0)
    frames = world.render()
    checked = 0
    for index, time in enumerate(world.timestamps):
        for obj in world.state_at(time):
            if obj.id < 0 or obj.shape == "triangle":  # a triangle's centre pixel is on its edge
                continue
            pixel = frames[index, int(round(obj.y)), int(round(obj.x))]
            if all(abs(o.x - obj.x) > OBJECT_SIZE or abs(o.y - obj.y) > OBJECT_SIZE
                   for o in world.state_at(time) if o is not obj):  # not overlapped by another object
                assert tuple(pixel) == COLORS[obj.color], (time, obj)
                checked += 1
    assert checked > 10
    entered = {e.object for e in world.events if e.kind == "enter"}
    assert entered == {o.id for state in world.states for o in state if o.id >= 0}


@pytest.mark.parametrize("fps", [2.0, 4.0])
def test_each_temporal_patch_shows_one_state(fps):
    """Every change happens between two temporal pairs (frames 2k-1, 2k), never inside one, so each video token and
    its `<t seconds>` header show one state; and the log times entries, exits and colour changes at the frame where
    they first show (a stop shows only as the absence of the next step)."""
    world = generate_world(7, duration=30.0, fps=fps)
    frames = world.render()
    changed = [i for i in range(1, len(frames)) if not np.array_equal(frames[i], frames[i - 1])]
    assert len(changed) > 10 and all(i % 2 == 0 for i in changed)
    visible = {round(e.time * fps) for e in world.events if e.kind in ("enter", "leave", "recolor")}
    assert visible - {0} and visible - {0} <= set(changed)  # frame 0 has no frame before it


def test_a_late_start_is_the_same_clip_at_later_stream_times():
    early, late = generate_world(4, duration=12.0), generate_world(4, duration=12.0, start=30.0)
    assert np.array_equal(early.render(), late.render())
    assert [replace(e, time=e.time + 30.0) for e in early.events] == late.events
    assert late.timestamps == [t + 30.0 for t in early.timestamps]
    assert late.state_at(35.5) == early.state_at(5.5)
    with pytest.raises(ValueError, match="whole number of seconds"):
        generate_world(4, start=2.5)


def test_late_start_records_stream_from_their_start(tmp_path):
    from tww_hf.data import record_frames, segment_frames

    record = build_record(2, 3, late_start=True)
    start = record["world"]["start"]
    assert start > 0 and record == build_record(2, 3, late_start=True)
    assert {k: v for k, v in build_record(2, 3)["world"].items() if k != "start"} == \
        {k: v for k, v in record["world"].items() if k != "start"}  # the same clip, later
    assert causality_problems(record) == [] and record["units"][0]["start"] == start
    assert all(start <= e["time"] for e in record["events"])
    render_record_video(record, tmp_path)
    frames, times = record_frames({**record, "_root": str(tmp_path)})  # the mp4 keeps the stream times
    assert times[0] == start and np.allclose(np.diff(times), 0.5)
    first, first_times = segment_frames(frames, times, record["units"][0], record)
    assert first_times == [start, start + 0.5, start + 1.0, start + 1.5]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_records_are_valid_and_notes_agree_with_the_log(stage):
    for seed in range(10):
        record = build_record(stage, seed)
        validate_record({**record, "frames": np.zeros((1, 8, 8, 3), np.uint8), "timestamps": [0.0]})
        assert causality_problems(record) == []
        previous = -1.0
        for unit in record["units"]:
            if unit["kind"] == "segment":
                inside = [e for e in record["events"] if previous < e["time"] <= unit["end"]]
                for event in inside:
                    assert f"{event['time']:.1f}s" in unit["note"]  # every event of the segment is noted
                previous = unit["end"]
            else:
                said = option_texts(unit["question"]).get(unit["gold"], unit["gold"])  # an option's text, or as is
                assert unit["answer"].endswith(f"\nAnswer: {said}")


def test_stage_shapes():
    stage1 = [build_record(1, s) for s in range(20)]
    stage3 = [build_record(3, s) for s in range(20)]
    assert all(sum(u["kind"] == "question" for u in r["units"]) == 1 for r in stage1)
    assert min(sum(u["kind"] == "segment" for u in r["units"]) for r in stage3) >= 12
    assert all(r["world"]["distractor_spans"] for r in stage3)
    kinds = {u["question_type"] for r in stage3 for u in r["units"] if u["kind"] == "question"}
    assert {"not_yet", "backward"} <= kinds
    not_yet = next(u for r in stage3 for u in r["units"] if u.get("question_type") == "not_yet")
    letter = not_yet["gold"]
    assert f"{letter}. {NOT_YET}" in not_yet["question"]


def test_multiple_choice_answers_name_the_gold_option():
    units = [u for s in range(10) for u in build_record(3, s)["units"] if u.get("question_type") in ("realtime",
                                                                                                      "backward")]
    assert units
    for unit in units:
        options = option_texts(unit["question"])
        assert sorted(options) == list("ABCD") and unit["answer"].endswith(f"\nAnswer: {options[unit['gold']]}")
    letters = build_record(3, 0, mcq_answer="letter")
    assert all(u["answer"].endswith(f"\nAnswer: {u['gold']}") for u in letters["units"] if u["kind"] == "question")
    assert causality_problems(letters) == []
    with pytest.raises(ValueError, match="mcq_answer"):
        build_record(3, 0, mcq_answer="number")


def _hand_world() -> World:
    """0 s: a red circle enters; 1 s: a green circle enters; 2 s: the red circle turns blue; 3 s: a yellow square
    enters. From 3 s on, two circles are on screen (blue and green)."""
    events = [Event(0.0, "enter", 0, "circle", "red"), Event(1.0, "enter", 1, "circle", "green"),
              Event(2.0, "recolor", 0, "circle", "red", "blue"), Event(3.0, "enter", 2, "square", "yellow")]
    late = [WorldObject(0, "circle", "blue", 20, 20), WorldObject(1, "circle", "green", 40, 40),
            WorldObject(2, "square", "yellow", 30, 10)]
    return World(duration=4.0, fps=1.0, size=64, events=events, states=[late[:1], late[:2], late[:2], late])


def test_questions_name_one_object_and_entry_colour_needs_memory():
    world, rng = _hand_world(), np.random.default_rng(0)
    for _ in range(20):  # two circles on screen: "the circle" would be ambiguous, so only the square is asked
        question = ask_realtime(world, 3.0, rng)
        assert question.text == "What color is the square now?" and question.reasoning.endswith("yellow now.")
    # Both circles entered, so "the circle when it entered" is ambiguous too: no shape qualifies.
    assert ask_entry_color(world, 3.0, rng) is None
    single = World(4.0, 1.0, 64, [world.events[0], world.events[2]], world.states)
    question = ask_entry_color(single, 3.0, rng)
    options = option_texts(question.text + "\n" + "\n".join(question.options))
    assert question.kind == "backward" and options[question.answer] == "red"
    assert "blue" in options.values()  # the colour it shows now is always offered: the frames alone mislead
    assert question.reasoning == "The note at 0.0s says a red circle enters. So the circle was red when it entered."
    assert ask_entry_color(single, 1.0, rng) is None  # not yet recoloured: the frames still show the answer


def test_notes_carry_shapes_seen_and_the_entry_count_and_answers_read_the_latest():
    world, teacher = _hand_world(), TemplateTeacher(0)
    world.events.append(Event(4.0, "leave", 0, "circle", "blue"))
    notes = [teacher.note(world, start, end) for start, end in [(-1.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]]
    assert [n[n.index("Shapes seen"):] for n in notes] == [
        "Shapes seen: circle. Entries so far: 2.",
        "Shapes seen: circle. Entries so far: 2.",  # a recolour is not an entry
        "Shapes seen: circle, square. Entries so far: 3.",
        "Shapes seen: circle, square. Entries so far: 3."]  # nor is a leave undone
    assert "turns blue" in notes[1] and "yellow square enters" in notes[2] and "blue circle leaves" in notes[3]
    rng = np.random.default_rng(0)
    question = ask_count(world, 2.0, rng)
    assert (question.answer, question.reasoning) == ("2", "The latest note says: Entries so far: 2.")
    realtime = ask_realtime(world, 3.0, rng)  # only the square: two circles are on screen
    assert realtime.reasoning == ("The latest note says: Shapes seen: circle, square. The note at 3.0s says a yellow "
                                  "square enters. So the square is yellow now.")
    not_yet = ask_not_yet(world, 2.0, rng)
    assert not_yet.answer == "ABCD"[not_yet.options.index(f"{not_yet.answer}. {NOT_YET}")]
    assert not_yet.reasoning == ("The latest note says: Shapes seen: circle. No " + not_yet.text.split()[4]
                                 + " yet. Its color cannot be known yet.")


def test_backward_options_are_hard_negatives():
    world, rng = _hand_world(), np.random.default_rng(1)
    seen = {"red circle", "green circle", "yellow square", "red square", "red triangle", "blue circle",
            "yellow circle"}  # objects seen, the first one's colour on other shapes, seen colours on its shape
    for _ in range(20):
        question = ask_first(world, 3.0, rng, hard=True)
        options = {o.split(". ", 1)[1] for o in question.options}
        assert "red circle" in options and options <= seen
        assert options & {"red square", "red triangle"}  # colour alone never picks the first object
    # The square entered first and left; the circle entered second and turned blue: the question prefers the
    # circle, and its options hold the blue it shows now and the yellow seen on the square.
    events = [Event(0.0, "enter", 0, "square", "yellow"), Event(1.0, "enter", 1, "circle", "red"),
              Event(2.0, "recolor", 1, "circle", "red", "blue"), Event(3.0, "leave", 0, "square", "yellow")]
    question = ask_entry_color(World(4.0, 1.0, 64, events, world.states), 3.0, rng, hard=True)
    options = {o.split(". ", 1)[1] for o in question.options}
    assert question.text == "What color was the circle when it entered?"
    assert {"red", "blue", "yellow"} <= options and len(options) == 4
    # The benchmark's records ("hard") share the world with the training records ("random"); every "entered first"
    # question there offers the first object's colour on another shape.
    firsts = 0
    for seed in range(10):
        random, hard = build_record(2, seed), build_record(2, seed, negatives="hard")
        assert random["events"] == hard["events"] and causality_problems(hard) == []
        for unit in (u for u in hard["units"] if u.get("question", "").startswith("Which object entered first?")):
            first = next(e for e in hard["events"] if e["kind"] == "enter")
            texts = option_texts(unit["question"]).values()
            assert any(t.startswith(first["color"] + " ") and not t.endswith(first["shape"]) for t in texts)
            firsts += 1
    assert firsts
    with pytest.raises(ValueError, match="negatives"):
        build_record(2, 5, negatives="easy")


def test_validator_catches_planted_violations():
    record = build_record(2, 4)
    segments = [i for i, u in enumerate(record["units"]) if u["kind"] == "segment"]
    future = next(e for e in record["events"] if e["time"] > record["units"][segments[0]]["end"])
    leaked = json.loads(json.dumps(record))
    leaked["units"][segments[0]]["note"] += f" At {future['time']:.1f}s something happens."
    assert any("outside its segment" in p for p in causality_problems(leaked))
    question = next(i for i, u in enumerate(record["units"]) if u["kind"] == "question")
    early = json.loads(json.dumps(record))
    early["units"][question]["answer"] = f"The note at {record['world']['duration']:.1f}s says so.\nAnswer: A"
    assert any("after the question" in p for p in causality_problems(early))
    malformed = json.loads(json.dumps(record))
    malformed["units"][question]["answer"] = "It is red."
    assert any("Answer: X" in p for p in causality_problems(malformed))
    mcq = next(i for i, u in enumerate(record["units"]) if "\nA. " in u.get("question", ""))
    not_an_option = json.loads(json.dumps(record))
    not_an_option["units"][mcq]["answer"] = record["units"][mcq]["answer"].rsplit("\n", 1)[0] + "\nAnswer: orange"
    assert any("Answer: X" in p for p in causality_problems(not_an_option))
    miscounted = json.loads(json.dumps(record))
    miscounted["units"][segments[-1]]["note"] = miscounted["units"][segments[-1]]["note"].replace(
        "Entries so far: ", "Entries so far: 1")
    assert any("carried state does not match the log" in p for p in causality_problems(miscounted))
    unseen = json.loads(json.dumps(record))  # a shape that has not entered yet
    unseen["units"][segments[0]]["note"] = unseen["units"][segments[0]]["note"].replace("Shapes seen: ",
                                                                                        "Shapes seen: blob, ")
    assert any("carried state does not match the log" in p for p in causality_problems(unseen))
    missing = json.loads(json.dumps(record))
    missing["units"][segments[0]]["note"] = ""
    assert any("no note" in p for p in causality_problems(missing))


def test_synth_cli_writes_videos_and_validates(tmp_path, capsys):
    assert main(["data", "synth", "--stage", "2", "--num", "3", "--out", str(tmp_path), "--seed", "7"]) == 0
    records = load_jsonl(tmp_path / "stage2.jsonl")
    assert len(records) == 3 and all((tmp_path / r["video"]).is_file() for r in records)
    assert main(["data", "validate", str(tmp_path)]) == 0
    assert "3 records checked, 0 problems" in capsys.readouterr().out


def test_busy_records_show_more_objects_at_once_and_stay_valid(tmp_path):
    def crowded(busy: bool) -> float:  # share of segment ends with 2 or 3 objects on screen, stage-1 clips
        ends = []
        for seed in range(60):
            record = build_record(1, seed, busy=busy)
            world = generate_world(**record["world"])
            ends += [sum(o.id >= 0 for o in world.state_at(u["end"])) >= 2
                     for u in record["units"] if u["kind"] == "segment"]
        return float(np.mean(ends))

    assert crowded(True) > crowded(False) + 0.2
    assert "event_rate" not in build_record(1, 3)["world"]  # other records are unchanged
    record = build_record(2, 3, busy=True)
    assert record == build_record(2, 3, busy=True) and causality_problems(record) == []
    render_record_video(record, tmp_path)  # the stored world settings re-render the same clip
    validate_record({**record, "_root": str(tmp_path)})
    with pytest.raises(ValueError, match="event_weights must give exactly"):
        generate_world(0, event_weights={"enter": 1.0})
