"""The pixel checker must read dataset images back almost perfectly, noise or not."""

import numpy as np
import pytest
from PIL import Image

from noiseunet.data.shapes import BACKGROUND, COLOURS, SHAPES, ShapesDataset, ShapeSpec, render
from noiseunet.evaluation import ShapeReading, judge, read_image

KEYS = ("colour", "shape", "position", "all")


def _accuracy(size: int, count: int, noise_sigma: float = 0.0, seed: int = 0) -> dict[str, float]:
    dataset = ShapesDataset(size=size, seed=seed, split="all")
    rng = np.random.default_rng(1234)
    totals = dict.fromkeys(KEYS, 0)
    for i in range(count):
        sample = dataset[i]
        pixels = np.asarray(sample["image"], dtype=np.float64)
        if noise_sigma:
            pixels = pixels + rng.normal(0.0, noise_sigma * 255.0, pixels.shape)
        verdict = judge(np.clip(pixels, 0, 255).astype(np.uint8), sample["spec"])
        for key in KEYS:
            totals[key] += verdict[key]
    return {key: totals[key] / count for key in KEYS}


@pytest.mark.parametrize("size,count", [(32, 2000), (64, 300)])
def test_clean_accuracy(size: int, count: int) -> None:
    accuracy = _accuracy(size, count)
    assert all(value >= 0.99 for value in accuracy.values()), accuracy


def test_noisy_accuracy() -> None:
    accuracy = _accuracy(32, 1000, noise_sigma=10 / 255, seed=1)
    assert all(value >= 0.95 for value in accuracy.values()), accuracy


@pytest.mark.parametrize("size", [32, 64])
def test_every_spec_nominal(size: int) -> None:
    for colour in COLOURS:
        for shape in SHAPES:
            for position in ("left", "middle", "right"):
                spec = ShapeSpec(colour, shape, position)
                image, _ = render(spec, size=size)
                assert read_image(image) == ShapeReading(colour, shape, position)


@pytest.mark.parametrize("size", [32, 64, 37])
def test_blank_image_reads_nothing(size: int) -> None:
    blank = Image.new("RGB", (size, size), BACKGROUND)
    assert read_image(blank) == ShapeReading(None, None, None)
    assert read_image(np.asarray(blank)) == ShapeReading(None, None, None)
    speck = np.asarray(blank).copy()
    speck[3, 3] = COLOURS["red"]
    assert read_image(speck) == ShapeReading(None, None, None)
    assert not any(judge(blank, ShapeSpec("red", "circle", "left")).values())


def test_pil_and_array_agree() -> None:
    sample = ShapesDataset(size=32, seed=2)[0]
    assert read_image(sample["image"]) == read_image(np.asarray(sample["image"]))
    with pytest.raises(ValueError):
        read_image(np.zeros((32, 32), dtype=np.uint8))


def test_judge_rejects_wrong_specs() -> None:
    dataset = ShapesDataset(size=32, seed=5, split="all")
    for i in range(30):
        sample = dataset[i]
        spec = sample["spec"]
        assert judge(sample["image"], spec) == dict.fromkeys(KEYS, True)
        other_colour = next(c for c in COLOURS if c != spec.colour)
        other_shape = next(s for s in SHAPES if s != spec.shape)
        other_position = next(p for p in ("left", "middle", "right") if p != spec.position)
        for wrong, key in (
            (ShapeSpec(other_colour, spec.shape, spec.position), "colour"),
            (ShapeSpec(spec.colour, other_shape, spec.position), "shape"),
            (ShapeSpec(spec.colour, spec.shape, other_position), "position"),
        ):
            verdict = judge(sample["image"], wrong)
            assert not verdict[key] and not verdict["all"]
            assert all(verdict[k] for k in ("colour", "shape", "position") if k != key)


@pytest.mark.parametrize("noise_sigma", [0.0, 10 / 255])
def test_the_new_word_diamond_is_read_among_every_shape(noise_sigma: float) -> None:
    """The fine-tuning benchmark's new word: rendered diamonds are read as diamonds (never as another shape),
    and the built-in shapes stay what they are when diamond is a candidate too."""
    from noiseunet.data.shapes import NEW_WORD_SHAPES

    every_shape = SHAPES + NEW_WORD_SHAPES
    rng = np.random.default_rng(7)
    for split, count in (("new_word", 500), ("all", 500)):
        dataset = ShapesDataset(size=32, seed=3, split=split)
        right = 0
        for i in range(count):
            sample = dataset[i]
            pixels = np.asarray(sample["image"], dtype=np.float64) + rng.normal(0, noise_sigma * 255, (32, 32, 3))
            reading = read_image(np.clip(pixels, 0, 255).astype(np.uint8), every_shape)
            right += reading == ShapeReading(*(getattr(sample["spec"], k) for k in ("colour", "shape", "position")))
        assert right / count >= (0.99 if noise_sigma == 0 else 0.95), (split, right / count)
    assert judge(render(ShapeSpec("red", "diamond", "left"))[0], ShapeSpec("red", "diamond", "left"))["all"]
