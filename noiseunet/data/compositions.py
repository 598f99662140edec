"""Task families of the built-in data beyond one object, GenEval-style, generated and checked exactly.

GenEval (Ghosh et al. 2023) scores text-to-image models on a few kinds of prompt -- two objects, counting,
colour attribution, relative position -- with an object detector. Here the images are drawn by rule, so the
pixel checker (``noiseunet.evaluation``) reads them back exactly, and the same families both train a model
and test it. Each family holds out some combinations that training never shows, to test whether a model
composes what it only learned apart:

==================  =============================================  ==========================================
family              prompt                                         held out (never trained)
==================  =============================================  ==========================================
two_objects         "a red circle and a red square"                ``HELD_OUT_PAIRINGS``: 4 pairs of objects
counting            "three green triangles" (one to four)          ``HELD_OUT_COUNTS``: two triangles, three
                                                                   circles, four squares (any colour)
colour_binding      "a yellow square and a purple circle"          ``HELD_OUT_BINDINGS``: 4 bindings whose
                                                                   colour swap is trained
relative_position   "a red circle to the left of a white square"   ``HELD_OUT_RELATIONS``: a triangle left of
                                                                   a square, a circle above a triangle
size                "a small white triangle", "a large blue        ``HELD_OUT_SIZES``: small squares, large
                    circle"                                        triangles
==================  =============================================  ==========================================

two_objects and colour_binding both name two distinct objects with their colours. They split every such
pair by one question: is the prompt with the two colours swapped a different scene? When the objects share
a colour or a shape ("a red circle and a red square", "a red circle and a blue circle") the swap changes
nothing, so the prompt only asks for both objects: that is two_objects, scored on the count and on each
object being there. When they differ in both ("a yellow square and a purple circle"), the swap is another
valid prompt with the same shapes and the same colours ("a purple square and a yellow circle"), and the
image is right only if each colour is on its own shape: that is colour_binding, scored on shapes, colours
and binding apart, so that attribute leakage (right shapes, right colours, wrong pairs) shows as such. The
two families never share a prompt, and each held-out binding's swap is a training prompt.

Objects come from ``THINGS`` only: the colour-shape pairs the single-object family trains on, so that no
family ever shows the pairs of ``objects.HELD_OUT``.

Layout, and why 32x32 suffices: in a scene of several objects each object has its own quadrant of the image
and keeps ``MIN_GAP / 2`` inside the quadrant's border, so two objects are never closer than ``MIN_GAP`` (2
pixels at 32x32) and the checker separates them as connected components. Objects are then 9 to 13 pixels
wide at 32x32, and the checker reads every shape exactly from 9 pixels up (a triangle of 7 or 8 loses its
tip to the checker's 3x3 opening and no longer tapers enough), so the families keep the main job's 32x32
resolution, and its CPU speed. A relation puts its two objects in one row (left of, right of)
or one column (above, below) of quadrants: their centres are then at least 11 pixels apart along the named
axis and at most 5 across it, so the relation a checker reads (the dominant axis of the offset) is
unambiguous. A sized object has the whole image to itself: small ones are 28-34% of the image side (9-11 pixels),
large ones 50-56% (16-18 pixels), so the checker's threshold halfway between has a wide berth either side.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from PIL import Image

from .objects import COLOURS, HELD_OUT, SHAPES, Placed, paint

#: Least distance between two objects of a scene, as a fraction of the image side (2 pixels at 32x32).
MIN_GAP = 1 / 16
#: Side of an object in a quadrant, as a fraction of the image side (9-13 pixels at 32x32).
QUADRANT_SIDES = (0.28, 0.40)
#: Side of a sized object, as a fraction of the image side, per size word.
SIZE_SIDES: dict[str, tuple[float, float]] = {"small": (0.28, 0.34), "large": (0.50, 0.56)}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four")  # counts 1 to 4: one object per quadrant
#: Prompts evaluation samples from each family of this module: (seen, held out).
EVALUATED_PROMPTS = (12, 8)

_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_QUADRANTS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column)
_ARRANGEMENT = 4  # uniforms that choose the quadrants
_PER_OBJECT = 3  # uniforms that choose an object's side, x and y


@dataclass(frozen=True)
class ColouredShape:
    """One object as a prompt names it, e.g. "red circle"."""

    colour: str
    shape: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS or self.shape not in SHAPES:
            raise ValueError(f"unknown colour or shape in {self!r}")

    def __str__(self) -> str:
        return f"{self.colour} {self.shape}"


#: Every object the compositional families draw: the colour-shape pairs training shows, in a fixed order.
THINGS: tuple[ColouredShape, ...] = tuple(
    ColouredShape(c, s) for c, s in itertools.product(COLOURS, SHAPES) if (c, s) not in HELD_OUT)


def _pairs(*pairs: tuple[tuple[str, str], tuple[str, str]]) -> frozenset[frozenset[ColouredShape]]:
    return frozenset(frozenset(ColouredShape(*thing) for thing in pair) for pair in pairs)


#: Pairs of objects (sharing a colour or a shape) two_objects never shows together; two share a colour,
#: two a shape, and every object here appears in other training pairs.
HELD_OUT_PAIRINGS = _pairs((("yellow", "circle"), ("yellow", "triangle")), (("white", "square"), ("white", "triangle")),
                           (("purple", "circle"), ("white", "circle")), (("green", "square"), ("purple", "square")))
#: Bindings colour_binding never shows; the same shapes in the same colours, swapped, are trained.
HELD_OUT_BINDINGS = _pairs((("yellow", "square"), ("purple", "circle")), (("white", "triangle"), ("green", "square")),
                           (("red", "circle"), ("white", "square")), (("blue", "circle"), ("purple", "triangle")))
#: (count, shape) counting never shows, in any colour; every count and shape is trained with others.
HELD_OUT_COUNTS: tuple[tuple[int, str], ...] = ((2, "triangle"), (3, "circle"), (4, "square"))
#: (first shape, relation, second shape) relative_position never shows, in any colours: two scenes, each
#: with its converse, so the scene is unseen however it is described.
HELD_OUT_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("triangle", "left of", "square"), ("square", "right of", "triangle"),
    ("circle", "above", "triangle"), ("triangle", "below", "circle"))
#: (size, shape) the size family never shows, in any colour.
HELD_OUT_SIZES: tuple[tuple[str, str], ...] = (("small", "square"), ("large", "triangle"))


def _margin(size: int) -> int:
    """Pixels an object keeps inside its region's border: half the least gap, rounded up."""
    return max(1, math.ceil(size * MIN_GAP / 2))


def _place(thing: ColouredShape, sides: tuple[float, float], region: tuple[int, int, int, int], size: int,
           u: np.ndarray) -> Placed:
    """``thing`` inside ``region`` (x0, y0, x1, y1 in pixels, ends excluded), ``_margin`` from its border:
    ``u[0]`` picks its side within ``sides`` (fractions of ``size``), ``u[1]``, ``u[2]`` where it stands
    (0: against the left / top, 1: against the right / bottom)."""
    x0, y0, x1, y1 = region
    margin = _margin(size)
    room_x, room_y = x1 - x0 - 2 * margin, y1 - y0 - 2 * margin
    side = min(room_x, room_y, max(3, round(size * (sides[0] + (sides[1] - sides[0]) * u[0]))))
    left = x0 + margin + round(u[1] * (room_x - side))
    top = y0 + margin + round(u[2] * (room_y - side))
    return Placed(thing.colour, thing.shape, (left, top, left + side - 1, top + side - 1))


def _in_quadrants(things: Sequence[ColouredShape], quadrants: Sequence[tuple[int, int]], size: int,
                  u: np.ndarray) -> list[Placed]:
    """``things[k]`` in quadrant ``quadrants[k]`` (row, column), its side and place from its own uniforms."""
    half = size // 2
    placed = []
    for k, (thing, (row, column)) in enumerate(zip(things, quadrants)):
        region = (column * half, row * half, size if column else half, size if row else half)
        start = _ARRANGEMENT + _PER_OBJECT * k
        placed.append(_place(thing, QUADRANT_SIDES, region, size, u[start:start + _PER_OBJECT]))
    return placed


def _shuffled_quadrants(u: np.ndarray) -> list[tuple[int, int]]:
    """The four quadrants in the random order the first uniforms give (identity when they tie)."""
    return [_QUADRANTS[i] for i in np.argsort(u[:_ARRANGEMENT], kind="stable")]


class Scene(ABC):
    """What the specs of this module share besides the ``PromptSpec`` contract: a layout drawn from
    ``jitters`` uniforms, so that tests can pass the extreme ones (0 and 1) and see the closest placements."""

    family: ClassVar[str]
    jitters: ClassVar[int] = _ARRANGEMENT + _PER_OBJECT * len(_QUADRANTS)

    @abstractmethod
    def layout(self, size: int, u: np.ndarray) -> list[Placed]:
        """Where each object goes in a ``size``x``size`` image, from ``jitters`` uniforms ``u`` in [0, 1]."""

    def render(self, size: int = 32, rng: np.random.Generator | None = None) -> tuple[Image.Image, np.ndarray]:
        """The image and its mask (as ``objects.paint``); without ``rng``, every uniform is 0.5 (repeatable)."""
        u = rng.random(self.jitters) if rng is not None else np.full(self.jitters, 0.5)
        return paint(self.layout(size, u), size)


@dataclass(frozen=True)
class TwoObjectsSpec(Scene):
    """Two distinct objects that share a colour or a shape, so that swapping their colours changes nothing."""

    first: ColouredShape
    second: ColouredShape
    family: ClassVar[str] = "two_objects"

    def __post_init__(self) -> None:
        if self.first == self.second or self.swappable:
            raise ValueError(f"{self.family} needs two distinct objects sharing a colour or a shape: {self!r}")

    @property
    def swappable(self) -> bool:
        """Whether swapping the colours gives another scene (the objects differ in colour and in shape)."""
        return self.first.colour != self.second.colour and self.first.shape != self.second.shape

    @property
    def caption(self) -> str:
        return f"a {self.first} and a {self.second}"

    @property
    def things(self) -> tuple[tuple[str, str], ...]:
        return (self.first.colour, self.first.shape), (self.second.colour, self.second.shape)

    @property
    def held_out(self) -> bool:
        return frozenset((self.first, self.second)) in HELD_OUT_PAIRINGS

    def layout(self, size: int, u: np.ndarray) -> list[Placed]:
        return _in_quadrants((self.first, self.second), _shuffled_quadrants(u), size, u)


@dataclass(frozen=True)
class BindingSpec(TwoObjectsSpec):
    """Two objects differing in colour and in shape, whose colour swap is also a valid prompt."""

    family: ClassVar[str] = "colour_binding"

    def __post_init__(self) -> None:
        if not self.swappable:
            raise ValueError(f"{self.family} needs two objects differing in colour and shape: {self!r}")

    @property
    def swapped(self) -> BindingSpec:
        """The same shapes with the colours exchanged: what leaking attributes would draw."""
        return BindingSpec(ColouredShape(self.second.colour, self.first.shape),
                           ColouredShape(self.first.colour, self.second.shape))

    @property
    def held_out(self) -> bool:
        return frozenset((self.first, self.second)) in HELD_OUT_BINDINGS


@dataclass(frozen=True)
class CountSpec(Scene):
    """``count`` (1 to 4) identical objects, each in a quadrant of its own."""

    count: int
    thing: ColouredShape
    family: ClassVar[str] = "counting"

    def __post_init__(self) -> None:
        if not 1 <= self.count <= len(NUMBERS):
            raise ValueError(f"count must be in 1..{len(NUMBERS)}, got {self.count}")

    @property
    def caption(self) -> str:
        return f"{NUMBERS[self.count - 1]} {self.thing}{'s' if self.count > 1 else ''}"

    @property
    def things(self) -> tuple[tuple[str, str], ...]:
        return ((self.thing.colour, self.thing.shape),)

    @property
    def held_out(self) -> bool:
        return (self.count, self.thing.shape) in HELD_OUT_COUNTS

    def layout(self, size: int, u: np.ndarray) -> list[Placed]:
        return _in_quadrants((self.thing,) * self.count, _shuffled_quadrants(u), size, u)


@dataclass(frozen=True)
class RelationSpec(Scene):
    """Two distinct objects, the first ``relation`` the second: "a red circle to the left of a white square"."""

    first: ColouredShape
    relation: str
    second: ColouredShape
    family: ClassVar[str] = "relative_position"

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS or self.first == self.second:
            raise ValueError(f"{self.family} needs a relation of {RELATIONS} between distinct objects: {self!r}")

    @property
    def caption(self) -> str:
        return f"a {self.first} {_PHRASES[self.relation]} a {self.second}"

    @property
    def things(self) -> tuple[tuple[str, str], ...]:
        return (self.first.colour, self.first.shape), (self.second.colour, self.second.shape)

    @property
    def held_out(self) -> bool:
        return (self.first.shape, self.relation, self.second.shape) in HELD_OUT_RELATIONS

    def layout(self, size: int, u: np.ndarray) -> list[Placed]:
        line = min(int(u[0] * 2), 1)  # which row (left of / right of) or column (above / below)
        first_at = 0 if self.relation in ("left of", "above") else 1
        if self.relation in ("left of", "right of"):
            quadrants = [(line, first_at), (line, 1 - first_at)]
        else:
            quadrants = [(first_at, line), (1 - first_at, line)]
        return _in_quadrants((self.first, self.second), quadrants, size, u)


@dataclass(frozen=True)
class SizeSpec(Scene):
    """One object, small or large, anywhere in the image."""

    size: str
    thing: ColouredShape
    family: ClassVar[str] = "size"
    jitters: ClassVar[int] = _PER_OBJECT

    def __post_init__(self) -> None:
        if self.size not in SIZE_SIDES:
            raise ValueError(f"size must be one of {tuple(SIZE_SIDES)}, got {self.size!r}")

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.thing}"

    @property
    def things(self) -> tuple[tuple[str, str], ...]:
        return ((self.thing.colour, self.thing.shape),)

    @property
    def held_out(self) -> bool:
        return (self.size, self.thing.shape) in HELD_OUT_SIZES

    def layout(self, size: int, u: np.ndarray) -> list[Placed]:
        return [_place(self.thing, SIZE_SIDES[self.size], (0, 0, size, size), size, u)]


class PromptSpec(Protocol):
    """What a family's prompt specs share (``shapes.ShapeSpec`` and the specs above)."""

    family: ClassVar[str]

    @property
    def caption(self) -> str: ...

    @property
    def held_out(self) -> bool: ...

    @property
    def things(self) -> tuple[tuple[str, str], ...]:
        """(colour, shape) of each distinct object the caption names, in its order (data/grounding.py)."""

    def render(self, size: int = 32, rng: np.random.Generator | None = None) -> tuple[Image.Image, np.ndarray]: ...


def sample(specs: Sequence[PromptSpec], count: int) -> list[PromptSpec]:
    """A fixed sample of ``count`` specs, in their order: those whose captions have the lowest SHA-256. It
    depends on nothing but the captions (no random generator whose stream a library version could change),
    and unlike evenly spaced picks it does not align with the period of a family's ordered product."""
    chosen = set(sorted((s.caption for s in specs), key=lambda c: hashlib.sha256(c.encode()).hexdigest())[:count])
    return [s for s in specs if s.caption in chosen]


@dataclass(frozen=True)
class Family:
    """A kind of prompt: every prompt spec of it, in a fixed order, and how many the evaluation samples."""

    name: str
    specs: tuple[PromptSpec, ...]
    evaluated: tuple[int, int] | None = EVALUATED_PROMPTS  # (seen, held out); None: every prompt
    new_word: tuple[PromptSpec, ...] = ()  # prompts of shapes the data never shows, for fine-tuning

    def split(self, split: str) -> list[PromptSpec]:
        """The specs of ``split``: "train" (not held out), "held_out", "all", or "new_word"."""
        if split == "all":
            return list(self.specs)
        if split in ("train", "held_out"):
            return [s for s in self.specs if s.held_out == (split == "held_out")]
        if split == "new_word" and self.new_word:
            return list(self.new_word)
        raise ValueError(f"the {self.name} family has no split {split!r}")

    def evaluation_specs(self, held_out: bool) -> list[PromptSpec]:
        """The fixed prompts evaluation scores: seen (held_out=False) or held out, in a fixed order."""
        specs = self.split("held_out" if held_out else "train")
        return specs if self.evaluated is None else sample(specs, self.evaluated[held_out])


def _swap_drawable(a: ColouredShape, b: ColouredShape) -> bool:
    """Whether both objects of the colour swap are ``THINGS`` (neither is a held-out colour-shape pair)."""
    return {ColouredShape(b.colour, a.shape), ColouredShape(a.colour, b.shape)} <= set(THINGS)


#: The families of several objects (or of a sized one), in the order reports list them.
COMPOSITIONS: tuple[Family, ...] = (
    Family("two_objects", tuple(TwoObjectsSpec(a, b) for a, b in itertools.permutations(THINGS, 2)
                                if a.colour == b.colour or a.shape == b.shape)),
    Family("counting", tuple(CountSpec(n, t) for n in range(1, len(NUMBERS) + 1) for t in THINGS)),
    Family("colour_binding", tuple(BindingSpec(a, b) for a, b in itertools.permutations(THINGS, 2)
                                   if a.colour != b.colour and a.shape != b.shape and _swap_drawable(a, b))),
    Family("relative_position", tuple(RelationSpec(a, r, b) for r in RELATIONS
                                      for a, b in itertools.permutations(THINGS, 2))),
    Family("size", tuple(SizeSpec(s, t) for s in SIZE_SIDES for t in THINGS)),
)
