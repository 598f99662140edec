"""The procedural shapes dataset: determinism, splits, and pixel-exact masks."""

import numpy as np
import pytest

from noiseunet.data.shapes import (
    BACKGROUND,
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    ShapesDataset,
    ShapeSpec,
    caption,
    evaluation_specs,
    render,
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
