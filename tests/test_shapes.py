"""The procedural shapes dataset: determinism, splits, pixel-exact masks, and mixtures of task families."""

import numpy as np
import pytest

from noiseunet.data import open_source
from noiseunet.data.shapes import (
    BACKGROUND,
    COLOURS,
    DEFAULT_MIXTURE,
    FAMILIES,
    HELD_OUT,
    LATER_MIXTURE,
    LATER_MIXTURE_FROM,
    POSITIONS,
    RELATIONS_FIRST,
    SHAPES,
    ShapesDataset,
    ShapeSpec,
    caption,
    evaluation_specs,
    render,
    split_specs,
)


def _same(a: dict, b: dict) -> bool:
    return (
        a["caption"] == b["caption"]
        and np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        and np.array_equal(a["mask"], b["mask"])
    )


def test_constants() -> None:
    assert len(COLOURS) == 6 and SHAPES == ("circle", "square", "triangle")
    assert POSITIONS == ("left", "middle", "right")
    assert len(HELD_OUT) == 3 and len(set(HELD_OUT)) == 3
    # Every colour and every shape keeps at least one training partner.
    train = {(s.colour, s.shape) for s in evaluation_specs(held_out=False)}
    assert {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES)
    colours = [np.array(rgb) for rgb in COLOURS.values()] + [np.array(BACKGROUND)]
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(colours) for b in colours[i + 1 :]]
    assert min(gaps) > 120


def test_determinism() -> None:
    ds = ShapesDataset(size=32, seed=7)
    assert _same(ds[5], ds[5])
    assert _same(ds[5], ShapesDataset(size=32, seed=7)[np.int64(5)])
    assert not any(_same(ds[5], ds[i]) for i in (4, 6, 1000))
    assert not _same(ds[5], ShapesDataset(size=32, seed=8)[5])


def test_length_and_bounds() -> None:
    ds = ShapesDataset()
    assert len(ds) == 2**31 - 1
    ds[len(ds) - 1]
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds[-1]
    with pytest.raises(ValueError):
        ShapesDataset(split="test")


def test_splits() -> None:
    train = ShapesDataset(size=16, split="train")
    seen = {train[i]["spec"] for i in range(3000)}
    assert not any((s.colour, s.shape) in HELD_OUT for s in seen)
    assert seen == set(evaluation_specs(held_out=False))

    held = ShapesDataset(size=16, split="held_out")
    held_seen = {held[i]["spec"] for i in range(300)}
    assert held_seen == set(evaluation_specs(held_out=True))

    everything = {ShapesDataset(size=16, split="all")[i]["spec"] for i in range(2000)}
    assert len(everything) == len(COLOURS) * len(SHAPES) * len(POSITIONS)


def test_evaluation_specs() -> None:
    seen, held = evaluation_specs(False), evaluation_specs(True)
    assert len(seen) == 45 and len(held) == 9 and not set(seen) & set(held)
    assert seen == evaluation_specs(False) and held == evaluation_specs(True)
    assert all((s.colour, s.shape) in HELD_OUT for s in held)


def test_captions() -> None:
    assert ShapeSpec("red", "circle", "left").caption == "a red circle on the left"
    assert caption(ShapeSpec("blue", "triangle", "middle")) == "a blue triangle in the middle"
    assert ShapeSpec("white", "square", "right").caption == "a white square on the right"
    ds = ShapesDataset(split="all")
    for i in range(50):
        sample = ds[i]
        assert sample["caption"] == sample["spec"].caption
        words = sample["caption"].split()
        assert words[1] == sample["spec"].colour and words[2] == sample["spec"].shape
        assert words[-1] == sample["spec"].position
    with pytest.raises(ValueError):
        ShapeSpec("orange", "circle", "left")


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_render_geometry(size: int) -> None:
    ds = ShapesDataset(size=size, split="all", seed=3)
    for i in range(150 if size <= 64 else 30):
        sample = ds[i]
        spec, mask = sample["spec"], sample["mask"]
        pixels = np.asarray(sample["image"])
        assert sample["image"].mode == "RGB" and sample["image"].size == (size, size)
        assert mask.dtype == np.uint8 and mask.shape == (size, size)
        # The mask marks exactly the pixels that differ from the background.
        assert np.array_equal(mask > 0, np.any(pixels != BACKGROUND, axis=2))
        assert set(np.unique(mask)) == {0, 1 + SHAPES.index(spec.shape)}
        assert np.all(pixels[mask > 0] == COLOURS[spec.colour])
        # Not clipped by the image border: its bounding box is square and of the right size.
        ys, xs = np.nonzero(mask)
        height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert abs(int(height) - int(width)) <= 1
        assert 0.33 * size <= width <= 0.5 * size
        third = (xs.mean() + 0.5) / size * 3
        assert POSITIONS.index(spec.position) < third < POSITIONS.index(spec.position) + 1


def test_render_without_rng_is_nominal() -> None:
    spec = ShapeSpec("yellow", "triangle", "right")
    a, mask_a = render(spec, size=64)
    b, mask_b = render(spec, size=64)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(mask_a, mask_b)
    with pytest.raises(ValueError):
        render(spec, size=8)


def test_families_and_default_mixture() -> None:
    assert list(FAMILIES) == ["single", "two_objects", "counting", "colour_binding", "relative_position", "size"]
    for split in ("train", "held_out", "all", "new_word"):
        assert FAMILIES["single"].split(split) == split_specs(split)
    assert set(DEFAULT_MIXTURE) == set(FAMILIES) and abs(sum(DEFAULT_MIXTURE.values()) - 1) < 1e-9
    assert DEFAULT_MIXTURE["single"] == max(DEFAULT_MIXTURE.values()) >= 0.5  # single objects stay learnable
    assert set(LATER_MIXTURE) == set(FAMILIES) and abs(sum(LATER_MIXTURE.values()) - 1) < 1e-9
    assert LATER_MIXTURE["single"] < DEFAULT_MIXTURE["single"]  # the other families get the later images
    assert LATER_MIXTURE["relative_position"] == max(LATER_MIXTURE.values())  # relations need the most images
    assert set(RELATIONS_FIRST) == set(FAMILIES) and abs(sum(RELATIONS_FIRST.values()) - 1) < 1e-9
    assert RELATIONS_FIRST["relative_position"] > 0.5 and min(RELATIONS_FIRST.values()) > 0  # every word seen


def test_later_mixture_switches_at_its_index_and_changes_nothing_before() -> None:
    """The default data is DEFAULT_MIXTURE until image LATER_MIXTURE_FROM, LATER_MIXTURE after; the images
    before the switch are exactly those of DEFAULT_MIXTURE alone, so shorter runs train as before."""
    start = 1000
    first = ShapesDataset(seed=3, mixture={"single": 1})
    staged = ShapesDataset(seed=3, mixture={"single": 1}, later=(start, {"single": 1, "counting": 3}))
    assert all(_same(first[i], staged[i]) for i in range(start - 20, start))
    families = [staged[i]["spec"].family for i in range(start, start + 800)]
    assert abs(families.count("counting") / len(families) - 0.75) < 0.05
    assert _same(staged[start + 5], ShapesDataset(seed=3, mixture={"single": 1, "counting": 3})[start + 5])
    default = open_source(None)
    assert default.mixture == DEFAULT_MIXTURE and default.later == (LATER_MIXTURE_FROM, LATER_MIXTURE)
    assert open_source(None, mixture={"size": 1}).later is None  # --mixture holds for the whole run
    with pytest.raises(ValueError, match="must be non-negative"):
        ShapesDataset(later=(-1, {"single": 1}))
    with pytest.raises(ValueError, match="--mixture needs"):
        ShapesDataset(later=(10, {"colour": 1}))


def test_mixture_draws_families_by_weight_and_only_training_prompts() -> None:
    ds = ShapesDataset(size=32, seed=4, mixture={"single": 3, "counting": 1})
    items = [ds[i] for i in range(800)]
    share = sum(item["spec"].family == "counting" for item in items) / len(items)
    assert abs(share - 0.25) < 0.05, share
    assert all(not item["spec"].held_out for item in items)
    assert all(item["caption"] == item["spec"].caption for item in items)
    assert _same(ds[17], ShapesDataset(size=32, seed=4, mixture={"single": 3, "counting": 1})[17])
    held = ShapesDataset(size=32, seed=4, split="held_out", mixture=DEFAULT_MIXTURE)
    assert all(held[i]["spec"].held_out for i in range(200))
    assert {held[i]["spec"].family for i in range(200)} == set(FAMILIES)


def test_one_family_mixture_draws_what_the_family_alone_draws() -> None:
    """Each sample's family comes from a stream of its own, so naming one family changes nothing."""
    for split in ("train", "all"):
        alone, mixed = ShapesDataset(seed=2, split=split), ShapesDataset(seed=2, split=split, mixture={"single": 0.5})
        assert all(_same(alone[i], mixed[i]) for i in range(50))


def test_bad_mixtures_are_refused() -> None:
    for mixture in ({"single": 1, "colour": 1}, {"single": 0}, {"counting": -1}):
        with pytest.raises(ValueError):
            ShapesDataset(mixture=mixture)
    with pytest.raises(ValueError):
        ShapesDataset(split="new_word", mixture={"single": 1, "counting": 1})  # only single objects have new words


def test_captions_cover_every_family() -> None:
    captions = ShapesDataset().captions()
    assert set(captions) == {spec.caption for family in FAMILIES.values() for spec in family.specs}
    assert "three green triangles" in captions and "a red circle on the left" in captions
