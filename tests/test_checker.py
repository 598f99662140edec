"""The pixel checker must read dataset images of every task family back perfectly, noise or not."""

import numpy as np
import pytest
from PIL import Image

from noiseunet.data.compositions import (
    BindingSpec,
    ColouredShape,
    CountSpec,
    RelationSpec,
    SizeSpec,
    TwoObjectsSpec,
)
from noiseunet.data.objects import Placed, paint
from noiseunet.data.shapes import (
    BACKGROUND,
    COLOURS,
    FAMILIES,
    SHAPES,
    ShapesDataset,
    ShapeSpec,
    render,
)
from noiseunet.evaluation import ShapeReading, judge, read_image, read_instances
from noiseunet.evaluation.checker import relation

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


COMPOSITIONS = [name for name in FAMILIES if name != "single"]


def _noisy(image, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0.0, noise_sigma * 255.0, (*image.size[::-1], 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("family", COMPOSITIONS)
@pytest.mark.parametrize("size,noise_sigma,count", [(32, 0.0, 400), (32, 10 / 255, 400), (64, 10 / 255, 100)])
def test_every_family_is_read_exactly(family: str, size: int, noise_sigma: float, count: int) -> None:
    """Rendered images of every family, held-out prompts included, are judged right on every attribute."""
    dataset = ShapesDataset(size=size, seed=11, split="all", mixture={family: 1})
    rng = np.random.default_rng(0)
    for i in range(count):
        sample = dataset[i]
        verdict = judge(_noisy(sample["image"], rng, noise_sigma), sample["spec"])
        assert all(verdict.values()), (sample["caption"], verdict)


@pytest.mark.parametrize("family", COMPOSITIONS)
def test_the_closest_placements_are_read_exactly(family: str) -> None:
    """Every prompt of the family, rendered with extreme jitters (objects against their regions' borders, as
    close to each other as the renderer allows, largest or smallest), clean and noisy."""
    rng = np.random.default_rng(1)
    for spec in FAMILIES[family].specs:
        u = rng.integers(0, 2, spec.jitters).astype(float)
        image, _ = paint(spec.layout(32, u), 32)
        for noise_sigma in (0.0, 10 / 255):
            verdict = judge(_noisy(image, rng, noise_sigma), spec)
            assert all(verdict.values()), (spec.caption, u, verdict)


def test_instances_are_read_with_size_and_place() -> None:
    things = [Placed("red", "circle", (1, 1, 10, 10)), Placed("blue", "triangle", (20, 2, 30, 12)),
              Placed("white", "square", (2, 14, 18, 30))]
    image, _ = paint(things, 32)
    found = read_instances(image)
    assert [(i.colour, i.shape, i.size) for i in found] == [("white", "square", "large"), ("red", "circle", "small"),
                                                            ("blue", "triangle", "small")]
    assert found[0].centre == pytest.approx((10.5 / 32, 22.5 / 32)) and found[0].area == 17 * 17
    assert relation(found[1], found[2]) == "left of" and relation(found[2], found[1]) == "right of"
    assert relation(found[1], found[0]) == "above" and relation(found[0], found[1]) == "below"
    assert read_instances(Image.new("RGB", (32, 32), BACKGROUND)) == []


def test_judges_name_what_is_wrong() -> None:
    """Each family's judge fails the attribute that is wrong, and only that one."""
    red_circle, red_square, blue_circle = (ColouredShape("red", "circle"), ColouredShape("red", "square"),
                                           ColouredShape("blue", "circle"))
    yellow_square, purple_circle = ColouredShape("yellow", "square"), ColouredShape("purple", "circle")

    def wrong(image, spec) -> set[str]:
        return {key for key, right in judge(image, spec).items() if not right}

    image, _ = RelationSpec(red_circle, "left of", blue_circle).render(32)
    assert wrong(image, RelationSpec(red_circle, "left of", blue_circle)) == set()
    assert wrong(image, RelationSpec(red_circle, "right of", blue_circle)) == {"relation", "all"}
    assert wrong(image, RelationSpec(blue_circle, "left of", red_circle)) == {"relation", "all"}
    assert wrong(image, RelationSpec(red_circle, "above", red_square)) == {"second", "relation", "all"}
    assert wrong(image, TwoObjectsSpec(red_circle, blue_circle)) == set()
    assert wrong(image, TwoObjectsSpec(red_circle, red_square)) == {"second", "all"}

    binding = BindingSpec(yellow_square, purple_circle)
    image, _ = binding.render(32)
    assert wrong(image, binding) == set()
    assert wrong(image, binding.swapped) == {"binding", "all"}  # the right shapes and colours, bound wrongly

    image, _ = CountSpec(3, red_circle).render(32)
    assert wrong(image, CountSpec(3, red_circle)) == set()
    assert wrong(image, CountSpec(2, red_circle)) == wrong(image, CountSpec(4, red_circle)) == {"count", "all"}
    assert wrong(image, CountSpec(3, blue_circle)) == {"colour", "all"}
    assert wrong(image, CountSpec(3, red_square)) == {"shape", "all"}
    assert wrong(image, TwoObjectsSpec(red_circle, blue_circle)) == {"count", "second", "all"}

    image, _ = SizeSpec("large", red_square).render(32)
    assert wrong(image, SizeSpec("large", red_square)) == set()
    assert wrong(image, SizeSpec("small", red_square)) == {"size", "all"}
    assert wrong(Image.new("RGB", (32, 32), BACKGROUND), SizeSpec("small", red_square)) == {
        "colour", "shape", "size", "all"}
