"""Judge whether a shapes image obeys its prompt, for every task family, from the objects its pixels show.

``instances.read_instances`` finds the objects; each family's judge compares them with what the prompt
names and returns one bool per attribute and "all" for the whole prompt:

==================  ==============================================================================
family              keys (besides "all")
==================  ==============================================================================
single              colour, shape, position: of the largest object (stray blobs are ignored)
size                colour, shape, size: of the largest object
two_objects         count (exactly two objects), first, second (each named object is one of them)
colour_binding      shapes, colours (exactly two objects, with the named shapes, and with the named
                    colours, however paired), binding (each colour on its own shape)
counting            count (exactly n objects), colour, shape (every object has them)
relative_position   count (exactly two objects), first, second (each named object is one of them),
                    relation (the first stands where the prompt says, relative to the second)
==================  ==============================================================================

A relation is read on the dominant axis of the offset between the two centroids: "left of" when the
second object is further right of the first than it is above or below it, and so on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from noiseunet.data.compositions import (
    BindingSpec,
    ColouredShape,
    CountSpec,
    PromptSpec,
    RelationSpec,
    SizeSpec,
    TwoObjectsSpec,
)
from noiseunet.data.objects import SHAPES
from noiseunet.data.shapes import POSITIONS, ShapeSpec

from .instances import Instance, read_instances


@dataclass(frozen=True)
class ShapeReading:
    """What the checker sees of a single-object image; ``None`` where an attribute cannot be determined."""

    colour: str | None
    shape: str | None
    position: str | None


def read_image(image: Image.Image | np.ndarray, shapes: tuple[str, ...] = SHAPES) -> ShapeReading:
    """Read the colour, shape and position (third of the width) of the largest object in an RGB image.

    ``image`` is a PIL image or an HxWx3 array of 0..255 values (uint8), of any size; ``shapes`` as in
    ``read_instances``.
    """
    instances = read_instances(image, shapes)
    if not instances:
        return ShapeReading(None, None, None)
    largest = instances[0]
    return ShapeReading(largest.colour, largest.shape, POSITIONS[min(int(largest.centre[0] * 3), 2)])


def relation(first: Instance, second: Instance) -> str:
    """Where ``first`` stands relative to ``second``: the dominant axis of the offset between centroids."""
    dx, dy = second.centre[0] - first.centre[0], second.centre[1] - first.centre[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def _verdict(**checks: bool) -> dict[str, bool]:
    checks["all"] = all(checks.values())
    return checks


def _named(instances: list[Instance], thing: ColouredShape) -> list[Instance]:
    """The instances that are ``thing``."""
    return [i for i in instances if (i.colour, i.shape) == (thing.colour, thing.shape)]


def _single(image: Image.Image | np.ndarray, spec: ShapeSpec) -> dict[str, bool]:
    reading = read_image(image, SHAPES if spec.shape in SHAPES else (*SHAPES, spec.shape))
    return _verdict(colour=reading.colour == spec.colour, shape=reading.shape == spec.shape,
                    position=reading.position == spec.position)


def _size(image: Image.Image | np.ndarray, spec: SizeSpec) -> dict[str, bool]:
    largest = next(iter(read_instances(image)), None)
    if largest is None:
        return _verdict(colour=False, shape=False, size=False)
    return _verdict(colour=largest.colour == spec.thing.colour, shape=largest.shape == spec.thing.shape,
                    size=largest.size == spec.size)


def _two_objects(image: Image.Image | np.ndarray, spec: TwoObjectsSpec) -> dict[str, bool]:
    found = read_instances(image)
    return _verdict(count=len(found) == 2, first=bool(_named(found, spec.first)),
                    second=bool(_named(found, spec.second)))


def _colour_binding(image: Image.Image | np.ndarray, spec: BindingSpec) -> dict[str, bool]:
    found = read_instances(image)
    named = (spec.first, spec.second)
    return _verdict(shapes=Counter(i.shape for i in found) == Counter(t.shape for t in named),
                    colours=Counter(i.colour for i in found) == Counter(t.colour for t in named),
                    binding=Counter((i.colour, i.shape) for i in found) == Counter((t.colour, t.shape) for t in named))


def _counting(image: Image.Image | np.ndarray, spec: CountSpec) -> dict[str, bool]:
    found = read_instances(image)
    return _verdict(count=len(found) == spec.count,
                    colour=bool(found) and all(i.colour == spec.thing.colour for i in found),
                    shape=bool(found) and all(i.shape == spec.thing.shape for i in found))


def _relative_position(image: Image.Image | np.ndarray, spec: RelationSpec) -> dict[str, bool]:
    found = read_instances(image)
    first, second = _named(found, spec.first), _named(found, spec.second)
    placed = len(first) == len(second) == 1 and relation(first[0], second[0]) == spec.relation
    return _verdict(count=len(found) == 2, first=bool(first), second=bool(second), relation=placed)


#: Each family's judge, by the name its specs carry.
JUDGES: dict[str, Callable[[Image.Image | np.ndarray, PromptSpec], dict[str, bool]]] = {
    "single": _single, "size": _size, "two_objects": _two_objects, "colour_binding": _colour_binding,
    "counting": _counting, "relative_position": _relative_position,
}


def judge(image: Image.Image | np.ndarray, spec: PromptSpec) -> dict[str, bool]:
    """Whether ``image`` obeys ``spec`` (a prompt spec of any family): one bool per attribute its family
    checks, and "all" for the whole prompt."""
    return JUDGES[spec.family](image, spec)
