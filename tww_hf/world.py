"""A synthetic streaming world we fully control: coloured shapes entering, moving, changing colour and leaving a
small canvas, with an exact event log, rendered to frames (and to mp4 through `tww_hf.video.write_video`).

Everything is determined by the seed. The event log is the ground truth notes and answers are checked against.
Events happen on whole seconds: with Qwen3-VL's temporal patches of 2 frames at 2 fps, each patch (and its
`<t seconds>` header) then shows one state, so an event's time is visible in the stream rather than hidden
between the two frames of a patch. (Events on the second frame of a pair, so that each change shows inside one
token, were tried and not kept: README, run 19.)
"""

from dataclasses import dataclass, field

import numpy as np


COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (200, 40, 210),  # far from blue after yuv420 chroma subsampling
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = 16  # the canvas grey level (0-255)
OBJECT_SIZE = 16  # a quarter of the 64-pixel canvas: one 16-pixel patch's worth (margins and bounces use it)
# Shapes differ in size as well as outline: at patch 32 a small vision tower reads an object's area but not its
# outline (held-out shape words: 0.75 with real frames, 0.75 with shuffled ones when all were 16 px; 0.90 / 0.70
# with these sizes, after 750 stage-1 steps), and notes that get the shape wrong name the wrong object.
SHAPE_SIZES = {"square": 22, "circle": 16, "triangle": 10}
EVENT_WEIGHTS = {"enter": 3.0, "leave": 2.0, "recolor": 2.5, "move": 1.0, "stop": 1.0}


@dataclass(frozen=True)
class Event:
    """One thing that happened. kinds: enter, leave, recolor, move, stop."""

    time: float
    kind: str
    object: int
    shape: str
    color: str
    detail: str = ""  # recolor: the new colour; move: the direction

    def describe(self) -> str:
        thing = f"{self.color} {self.shape}"
        return {
            "enter": f"a {thing} enters",
            "leave": f"the {thing} leaves",
            "recolor": f"the {thing} turns {self.detail}",
            "move": f"the {thing} starts moving {self.detail}",
            "stop": f"the {thing} stops",
        }[self.kind]


@dataclass
class WorldObject:
    id: int
    shape: str
    color: str
    x: float
    y: float
    direction: str | None = None
    present: bool = True


@dataclass
class World:
    """A generated stream: duration, canvas size, the event log, and per-frame object states. `start`: the stream
    time of the first frame (a clip that begins `start` seconds into a stream whose canvas is empty until then);
    timestamps and event times are stream times."""

    duration: float
    fps: float
    size: int
    events: list[Event]
    states: list[list[WorldObject]] = field(repr=False)
    start: float = 0.0

    @property
    def timestamps(self) -> list[float]:
        return [round(self.start + i / self.fps, 6) for i in range(len(self.states))]

    def state_at(self, time: float) -> list[WorldObject]:
        """Objects on screen at `time` (the last frame at or before it)."""
        index = min(len(self.states) - 1, max(0, int(np.floor((time - self.start) * self.fps + 1e-6))))
        return [obj for obj in self.states[index] if obj.present]

    def events_between(self, start: float, end: float) -> list[Event]:
        """Events with start < time <= end (the first segment uses start = -1 to include t = 0)."""
        return [event for event in self.events if start < event.time <= end]

    def render(self) -> np.ndarray:
        """All frames `(N, size, size, 3)` uint8."""
        return np.stack([render_frame(state, self.size) for state in self.states])


def render_frame(objects: list[WorldObject], size: int) -> np.ndarray:
    frame = np.full((size, size, 3), BACKGROUND, dtype=np.uint8)
    rows, cols = np.mgrid[0:size, 0:size]
    for obj in objects:
        if not obj.present:
            continue
        half = SHAPE_SIZES[obj.shape] / 2
        dy, dx = rows - obj.y, cols - obj.x
        if obj.shape == "square":
            inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
        elif obj.shape == "circle":
            inside = dx**2 + dy**2 <= half**2
        else:  # triangle, apex up
            inside = (dy <= half) & (dy >= -half) & (np.abs(dx) <= (dy + half) / 2)
        frame[inside] = COLORS[obj.color]
    return frame


def generate_world(seed: int, duration: float = 16.0, fps: float = 2.0, size: int = 64, event_rate: float = 0.35,
                   max_objects: int = 3, distractor_spans: list[tuple[float, float]] | None = None,
                   start: float = 0.0, event_weights: dict[str, float] | None = None) -> World:
    """Simulates `duration` seconds. On each whole second, with probability `event_rate`, one event happens (weighted
    by `EVENT_WEIGHTS`): an object enters (if fewer than `max_objects`), leaves, changes colour, starts moving or
    stops. Moving objects advance 4 px per second and bounce at the borders. `distractor_spans` add a flickering
    white circle (id -1) that questions never ask about. `start` (whole seconds) shifts every time by that much: the
    same clip, `start` seconds into the stream (`distractor_spans` are in stream time). `event_weights` replaces
    `EVENT_WEIGHTS` (the same five kinds)."""
    if start < 0 or abs(start - round(start)) > 1e-6:
        raise ValueError(f"start must be a whole number of seconds >= 0 (temporal pairs start on whole seconds), "
                         f"got {start}.")
    weights = EVENT_WEIGHTS if event_weights is None else event_weights
    if set(weights) != set(EVENT_WEIGHTS):
        raise ValueError(f"event_weights must give exactly the kinds {sorted(EVENT_WEIGHTS)}, got {sorted(weights)}.")
    rng = np.random.default_rng(seed)
    objects: list[WorldObject] = []
    events: list[Event] = []
    states: list[list[WorldObject]] = []
    used = set()
    for index in range(int(round(duration * fps))):
        time = round(start + index / fps, 6)
        on_second = abs(time - round(time)) < 1e-6
        if on_second and (rng.random() < event_rate or not any(o.present for o in objects)):
            event = _random_event(rng, objects, used, time, size, max_objects, weights)
            if event is not None:
                events.append(event)
        if on_second:  # motion also steps on whole seconds, so both frames of a temporal patch agree
            events += [Event(time, "move", o.id, o.shape, o.color, o.direction) for o in _advance(objects, size)]
        frame_objects = [WorldObject(**vars(o)) for o in objects]
        if distractor_spans and any(a <= time <= b for a, b in distractor_spans) and index % 2 == 0:
            frame_objects.append(WorldObject(-1, "circle", "white", size * 0.8, size * 0.2))
        states.append(frame_objects)
    return World(duration=duration, fps=fps, size=size, events=events, states=states, start=start)


def _random_event(rng, objects, used, time, size, max_objects, event_weights) -> Event | None:
    present = [o for o in objects if o.present]
    choices = ["enter"] if len(present) < max_objects else []
    choices += ["leave", "recolor", "move", "stop"] if present else []
    weights = np.array([event_weights[c] for c in choices])
    kind = str(rng.choice(choices, p=weights / weights.sum()))
    if kind == "enter":
        free = [(s, c) for s in SHAPES for c in COLORS if c != "white" and (s, c) not in used]
        shape, color = free[int(rng.integers(len(free)))]
        used.add((shape, color))
        margin = OBJECT_SIZE
        obj = WorldObject(len(objects), shape, color, float(rng.integers(margin, size - margin)),
                          float(rng.integers(margin, size - margin)))
        objects.append(obj)
        return Event(time, "enter", obj.id, shape, color)
    obj = present[int(rng.integers(len(present)))]
    before = Event(time, kind, obj.id, obj.shape, obj.color)
    if kind == "leave":
        obj.present = False
        return before
    if kind == "recolor":
        options = [c for c in COLORS if c not in ("white", obj.color)]
        new = str(rng.choice(options))
        obj.color = new
        return Event(time, kind, obj.id, obj.shape, before.color, new)
    if kind == "move":
        direction = str(rng.choice(list(DIRECTIONS)))
        obj.direction = direction
        return Event(time, kind, obj.id, obj.shape, obj.color, direction)
    if obj.direction is None:
        return None  # "stop" on a still object: nothing happens
    obj.direction = None
    return before


def _advance(objects: list[WorldObject], size: int) -> list[WorldObject]:
    """Moves every moving object 4 px; returns the ones that bounced (their direction reversed: a logged event)."""
    low, high, bounced = OBJECT_SIZE / 2, size - OBJECT_SIZE / 2, []
    for obj in objects:
        if obj.present and obj.direction:
            dx, dy = DIRECTIONS[obj.direction]
            obj.x, obj.y = obj.x + 4 * dx, obj.y + 4 * dy
            if not low <= obj.x <= high or not low <= obj.y <= high:  # bounce
                obj.x, obj.y = min(max(obj.x, low), high), min(max(obj.y, low), high)
                opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
                obj.direction = opposite[obj.direction]
                bounced.append(obj)
    return bounced
