"""The task families beyond one object: captions, held-out splits, and layouts that keep objects apart."""

import itertools

import numpy as np
import pytest

from noiseunet.data.compositions import (
    COMPOSITIONS,
    EVALUATED_PROMPTS,
    HELD_OUT_BINDINGS,
    HELD_OUT_COUNTS,
    HELD_OUT_PAIRINGS,
    HELD_OUT_RELATIONS,
    MIN_GAP,
    QUADRANT_SIDES,
    SIZE_SIDES,
    THINGS,
    BindingSpec,
    ColouredShape,
    CountSpec,
    RelationSpec,
    SizeSpec,
    TwoObjectsSpec,
)
from noiseunet.data.objects import BACKGROUND, COLOURS, HELD_OUT, SHAPES

FAMILY = {family.name: family for family in COMPOSITIONS}
RED_CIRCLE, RED_SQUARE = ColouredShape("red", "circle"), ColouredShape("red", "square")
BLUE_CIRCLE = ColouredShape("blue", "circle")
YELLOW_SQUARE, PURPLE_CIRCLE = ColouredShape("yellow", "square"), ColouredShape("purple", "circle")


def _extreme_jitters(spec, count: int, seed: int = 0) -> list[np.ndarray]:
    """Uniforms of 0 and 1 only: objects pushed against their regions' borders, at their largest or smallest."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2, spec.jitters).astype(float) for _ in range(count)]


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Background pixels between two boxes (inclusive corners) along the axis where they are furthest apart."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) - 1


def test_captions() -> None:
    assert TwoObjectsSpec(RED_CIRCLE, RED_SQUARE).caption == "a red circle and a red square"
    assert BindingSpec(YELLOW_SQUARE, PURPLE_CIRCLE).caption == "a yellow square and a purple circle"
    assert CountSpec(3, ColouredShape("green", "triangle")).caption == "three green triangles"
    assert CountSpec(1, RED_CIRCLE).caption == "one red circle"
    assert RelationSpec(RED_CIRCLE, "left of", RED_SQUARE).caption == "a red circle to the left of a red square"
    assert RelationSpec(RED_CIRCLE, "below", BLUE_CIRCLE).caption == "a red circle below a blue circle"
    assert SizeSpec("small", ColouredShape("white", "triangle")).caption == "a small white triangle"
    captions = [spec.caption for family in COMPOSITIONS for spec in family.specs]
    assert len(captions) == len(set(captions))  # no prompt in two families, nor twice in one


def test_invalid_specs_are_refused() -> None:
    for make in (lambda: ColouredShape("orange", "circle"), lambda: TwoObjectsSpec(RED_CIRCLE, RED_CIRCLE),
                 lambda: TwoObjectsSpec(RED_SQUARE, BLUE_CIRCLE), lambda: BindingSpec(RED_CIRCLE, RED_SQUARE),
                 lambda: CountSpec(5, RED_CIRCLE), lambda: CountSpec(0, RED_CIRCLE),
                 lambda: RelationSpec(RED_CIRCLE, "near", RED_SQUARE),
                 lambda: RelationSpec(RED_CIRCLE, "above", RED_CIRCLE), lambda: SizeSpec("medium", RED_CIRCLE)):
        with pytest.raises(ValueError):
            make()


def test_two_objects_and_colour_binding_split_pairs_by_whether_the_swap_differs() -> None:
    two, binding = FAMILY["two_objects"].specs, FAMILY["colour_binding"].specs
    assert all(s.first.colour == s.second.colour or s.first.shape == s.second.shape for s in two)
    assert all(s.first.colour != s.second.colour and s.first.shape != s.second.shape for s in binding)
    # Every ordered pair of distinct objects sharing a colour or a shape is a two_objects prompt; every other
    # pair is a binding prompt whenever its swap can be drawn too.
    pairs = {(s.first, s.second) for s in two} | {(s.first, s.second) for s in binding}
    for a, b in itertools.permutations(THINGS, 2):
        swap_drawable = {ColouredShape(b.colour, a.shape), ColouredShape(a.colour, b.shape)} <= set(THINGS)
        assert ((a, b) in pairs) == (a.colour == b.colour or a.shape == b.shape or swap_drawable)
    assert all(s.swapped in binding and s.swapped.swapped == s for s in binding)


def test_no_family_draws_the_single_objects_held_out_pairs() -> None:
    assert len(THINGS) == len(COLOURS) * len(SHAPES) - len(HELD_OUT)
    for family in COMPOSITIONS:
        for spec in family.specs:
            for placed in spec.layout(32, np.full(spec.jitters, 0.5)):
                assert (placed.colour, placed.shape) not in HELD_OUT, spec


def test_held_out_splits() -> None:
    for family in COMPOSITIONS:
        train, held_out = family.split("train"), family.split("held_out")
        assert len(held_out) >= EVALUATED_PROMPTS[1] and len(train) >= EVALUATED_PROMPTS[0], family.name
        assert set(train) | set(held_out) == set(family.split("all")) and not set(train) & set(held_out)
        # Held out are combinations, not words: every word of a held-out prompt is in training prompts.
        trained_words = {word for spec in train for word in spec.caption.split()}
        assert {word for spec in held_out for word in spec.caption.split()} <= trained_words, family.name
        with pytest.raises(ValueError):
            family.split("new_word")
    held = FAMILY["two_objects"].split("held_out")
    assert {frozenset((s.first, s.second)) for s in held} == HELD_OUT_PAIRINGS and len(held) == 8
    held = FAMILY["colour_binding"].split("held_out")
    assert {frozenset((s.first, s.second)) for s in held} == HELD_OUT_BINDINGS and len(held) == 8
    assert all(not s.swapped.held_out for s in held)  # the same shapes and colours, bound the other way, train
    counts = FAMILY["counting"].split("train")
    for count, shape in HELD_OUT_COUNTS:  # the count and the shape each train with other partners
        assert any(s.count == count for s in counts) and any(s.thing.shape == shape for s in counts)
    relations = {(s.first.shape, s.relation, s.second.shape) for s in FAMILY["relative_position"].split("held_out")}
    assert relations == set(HELD_OUT_RELATIONS)
    converse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    assert {(b, converse[r], a) for a, r, b in HELD_OUT_RELATIONS} == set(HELD_OUT_RELATIONS)
    sizes = {(s.size, s.thing.shape) for s in FAMILY["size"].split("held_out")}
    assert sizes == {("small", "square"), ("large", "triangle")}


def test_evaluation_samples_are_fixed() -> None:
    for family in COMPOSITIONS:
        for held_out, count in ((False, EVALUATED_PROMPTS[0]), (True, EVALUATED_PROMPTS[1])):
            specs = family.evaluation_specs(held_out)
            split = family.split("held_out" if held_out else "train")
            assert len(specs) == count and len(set(specs)) == count and set(specs) <= set(split)
            assert specs == family.evaluation_specs(held_out)
            assert specs == sorted(specs, key=split.index)  # in the family's order
    assert len({s.relation for s in FAMILY["relative_position"].evaluation_specs(False)}) == 4


@pytest.mark.parametrize("family", [f.name for f in COMPOSITIONS])
@pytest.mark.parametrize("size", [32, 64])
def test_layouts_keep_objects_apart_and_in_place(family: str, size: int) -> None:
    rng = np.random.default_rng(3)
    for spec in FAMILY[family].specs[::3]:
        for u in [rng.random(spec.jitters) for _ in range(3)] + _extreme_jitters(spec, 4):
            placed = spec.layout(size, u)
            boxes = [p.box for p in placed]
            assert all(0 <= x0 <= x1 < size and 0 <= y0 <= y1 < size for x0, y0, x1, y1 in boxes)
            assert all(_gap(a, b) >= MIN_GAP * size for a, b in itertools.combinations(boxes, 2))
            sides = [(x1 - x0 + 1) / size for x0, _, x1, _ in boxes]
            ranges = SIZE_SIDES[spec.size] if family == "size" else QUADRANT_SIDES
            assert all(ranges[0] - 0.5 / size <= side <= ranges[1] + 0.5 / size for side in sides), (spec, sides)
            if family == "counting":
                assert len(placed) == spec.count and all((p.colour, p.shape) == (spec.thing.colour, spec.thing.shape)
                                                         for p in placed)
            if family == "relative_position":
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes
                dx, dy = (bx0 + bx1 - ax0 - ax1) / 2, (by0 + by1 - ay0 - ay1) / 2  # second's centre minus first's
                along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[
                    spec.relation]
                assert along >= 11 * size / 32 and abs(across) <= 5 * size / 32, (spec, along, across)


@pytest.mark.parametrize("family", [f.name for f in COMPOSITIONS])
def test_render_paints_every_object_with_its_colour(family: str) -> None:
    rng = np.random.default_rng(5)
    for spec in FAMILY[family].specs[::7]:
        image, mask = spec.render(32, rng)
        pixels = np.asarray(image)
        assert image.size == (32, 32) and mask.shape == (32, 32) and mask.dtype == np.uint8
        assert np.array_equal(mask > 0, np.any(pixels != BACKGROUND, axis=2))
        again, _ = spec.render(32)
        assert np.array_equal(np.asarray(again), np.asarray(spec.render(32)[0]))  # no rng: repeatable
        placed = spec.layout(32, np.full(spec.jitters, 0.5))
        painted = {tuple(rgb) for rgb in pixels[mask > 0]}
        assert painted == {COLOURS[p.colour] for p in placed}
        assert set(np.unique(mask)) == {0} | {1 + SHAPES.index(p.shape) for p in placed}
