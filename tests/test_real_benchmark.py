"""scripts/real_benchmark.py on a hand-made fake of the three emoji npm tarballs (no network), and the
retrieval judge and measures of noiseunet.evaluation.retrieval on images whose answers are known."""

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from noiseunet.evaluation.retrieval import (
    JUDGES,
    distinctness,
    near_copy_threshold,
    retrieval_ranks,
)
from noiseunet.training.config import MANY_CONCEPTS_GUIDANCE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import real_benchmark as rb

# (name, category, vendors that draw it, colour): two are left out, by category and by a missing vendor.
EMOJI = [
    ("GRINNING FACE", "Smileys & Emotion", rb.VENDORS, (250, 200, 40)),
    ("HAMMER", "Objects", rb.VENDORS, (120, 90, 60)),
    ("RED APPLE", "Food & Drink", rb.VENDORS, (220, 30, 30)),
    ("ROCKET", "Travel & Places", ("google", "twitter"), (90, 90, 200)),
    ("SOCCER BALL", "Activities", rb.VENDORS, (30, 30, 30)),
    ("AUTOMOBILE", "Travel & Places", rb.VENDORS, (200, 40, 160)),
]
KEPT = ["grinning face", "hammer", "soccer ball", "automobile"]


def emoji_drawing(index: int, colour: tuple[int, int, int], vendor: int) -> Image.Image:
    """A transparent 64 px drawing: each concept its own colour and shape, each vendor a slightly different
    size, as artists draw the same thing differently."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    box = (8 + 2 * vendor, 8 + 2 * vendor, 56 - vendor, 56 - vendor)
    [draw.ellipse, draw.rectangle, draw.pieslice, draw.chord][index % 4](box, fill=(*colour, 255), **(
        {"start": 30, "end": 330} if index % 4 >= 2 else {}))
    return image


def fake_tarballs(cache: Path) -> None:
    """emoji-datasource-<vendor>-16.0.0.tgz as npm pack writes them: package/emoji.json, the 64 px PNGs of
    the emoji the vendor draws, and a sprite sheet the benchmark must not extract."""
    emoji = [{"name": name, "image": f"{1000 + i:x}.png", "category": category, "short_name": name.lower(),
              **{f"has_img_{v}": v in vendors for v in rb.VENDORS}}
             for i, (name, category, vendors, _) in enumerate(EMOJI)]
    cache.mkdir(parents=True, exist_ok=True)
    for v, vendor in enumerate(rb.VENDORS):
        files = {"package/emoji.json": json.dumps(emoji).encode(), f"package/img/{vendor}/sheets/64.png": b"sheet"}
        for i, (_, _, vendors, colour) in enumerate(EMOJI):
            if vendor in vendors:
                buffer = io.BytesIO()
                emoji_drawing(i, colour, v).save(buffer, format="PNG")
                files[f"package/img/{vendor}/64/{emoji[i]['image']}"] = buffer.getvalue()
        with tarfile.open(cache / f"emoji-datasource-{vendor}-{rb.VERSION}.tgz", "w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def cache(tmp_path):
    fake_tarballs(tmp_path / "cache")
    rb.fetch(tmp_path / "cache")
    return tmp_path / "cache"


def test_fetch_keeps_the_four_categories_drawn_by_all_three_vendors(cache):
    assert [c.caption for c in rb.concepts(cache)] == KEPT
    kept_images = {c.image for c in rb.concepts(cache)}
    for vendor in rb.VENDORS:
        assert {p.name for p in (cache / vendor / "64").iterdir()} == kept_images  # no apple, no rocket, no sheet
    assert not list(cache.glob("*.tgz"))  # extracted, then dropped
    rb.fetch(cache)  # a complete cache needs neither npm nor the tarballs


def test_facebook_drawings_are_never_in_the_training_folder(cache, tmp_path):
    train, references = rb.build_folders(cache, tmp_path / "work", resolution=16)
    names, captions, training = rb.read_folder(train)
    reference_names, reference_captions, reference_images = rb.read_folder(references)
    assert sorted(captions) == sorted(KEPT * 2) and reference_captions == KEPT
    assert all(name.split("-")[0] in rb.TRAIN_VENDORS for name in names)
    assert all(name.startswith("facebook-") for name in reference_names)
    assert training.shape == (8, 16, 16, 3) and reference_images.shape == (4, 16, 16, 3)
    assert np.all(training[:, 0, 0] == 1.0)  # transparency composited on white
    distances = np.abs(training[:, None] - reference_images[None]).max(axis=(2, 3, 4))
    assert distances.min() > 0.1  # no training image is a Facebook drawing


def test_missing_npm_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SystemExit) as stop:
        rb.fetch(tmp_path / "empty-cache")
    message = str(stop.value.code)
    assert "npm is not on PATH" in message and "\n" not in message


def test_failing_npm_is_a_one_line_error_with_its_reason(tmp_path, monkeypatch):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    npm = bin_folder / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error code E404' >&2\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_folder))
    with pytest.raises(SystemExit) as stop:
        rb.fetch(tmp_path / "cache")
    assert str(stop.value.code) == ("real_benchmark: npm pack emoji-datasource-google@16.0.0 failed: "
                                    "npm error 404 Not Found")


@pytest.mark.parametrize("judge", list(JUDGES))
def test_every_reference_retrieves_itself_first(cache, tmp_path, judge):
    _, references = rb.build_folders(cache, tmp_path / "work", resolution=32)
    _, _, images = rb.read_folder(references)
    features = JUDGES[judge](images)
    assert list(retrieval_ranks(features, features, np.arange(len(images)))) == [1, 1, 1, 1]
    assert list(retrieval_ranks(features, features, np.array([1, 2, 3, 0]))) != [1, 1, 1, 1]


def test_ties_count_against_the_query():
    same = np.zeros((3, 4))
    assert list(retrieval_ranks(same, same, np.arange(3))) == [3, 3, 3]


def test_measures_on_hand_made_images(cache, tmp_path):
    train, references = rb.build_folders(cache, tmp_path / "work", resolution=32)
    _, training_captions, training = rb.read_folder(train)
    _, captions, refs = rb.read_folder(references)

    perfect = rb.score(refs, captions, refs, training, training_captions)  # the references themselves
    assert perfect["top1"] == perfect["top5"] == 1.0 and perfect["distinct"]["distinct"]
    assert perfect["near_copies"] < 1.0 and perfect["chance"] == {"top1": 0.25, "top5": 1.0}

    shuffled = rb.score(refs[[1, 2, 3, 0]], captions, refs, training, training_captions)  # every concept wrong
    assert shuffled["top1"] == 0.0 and shuffled["top5"] == 1.0  # only 4 concepts: all are in the top 5

    copies = training[: len(captions)]  # the Google drawings, in concept order
    assert rb.score(copies, captions, refs, training, training_captions)["near_copies"] == 1.0

    one_picture = rb.score(np.repeat(refs[:1], 4, axis=0), captions, refs, training, training_captions)
    assert not one_picture["distinct"]["distinct"] and one_picture["distinct"]["same_pairs"] == 6
    assert rb.format_row({"budget": 10, "steps": 700, **one_picture}) == (
        f"| 10 min | defaults | 700 | {one_picture['top1']:.2%} | 100.00% | {one_picture['top1']:.0%} | "
        f"{one_picture['near_copies']:.1%} | no (6 same pairs; closest: {captions[0]} / {captions[1]}) |")
    assert rb.format_row({"budget": 10, "steps": 700, "options": "--text-width 256", **one_picture}).startswith(
        "| 10 min | `--text-width 256` | 700 |")


def test_near_copy_threshold_is_a_low_quantile_of_same_concept_distances():
    rng = np.random.default_rng(0)
    a, b = rng.random((10, 8, 8, 3)), rng.random((10, 8, 8, 3))
    images, captions = np.concatenate([a, b]), [f"c{i}" for i in range(10)] * 2
    pairs = np.sqrt(((a - b) ** 2).mean(axis=(1, 2, 3)))
    assert near_copy_threshold(images, captions) == pytest.approx(np.quantile(pairs, 0.05))
    with pytest.raises(ValueError, match="two images"):
        near_copy_threshold(a, [f"c{i}" for i in range(10)])


def test_distinctness_counts_pairs_closer_than_the_threshold():
    rng = np.random.default_rng(0)
    images = rng.random((20, 8, 8, 3))
    report = distinctness(images, 0.1)
    assert report["prompts"] == 20 and report["same_pairs"] == 0 and report["distinct"] and report["min_distance"] > 0.3
    images[5] = images[3] + 0.01  # one prompt drew another's picture
    report = distinctness(images, 0.1)
    assert report["same_pairs"] == 1 and not report["distinct"] and report["min_distance"] == pytest.approx(0.01)
    assert report["closest"] == [3, 5]


def test_training_with_options_measures_a_run_built_with_them(cache, tmp_path):
    train, references = rb.build_folders(cache, tmp_path / "work", resolution=16)
    options = ["--model", "tiny", "--text-width", "48", "--batch-size", "4"]
    (row,) = rb.train_and_measure(train, references, tmp_path / "work", [1], 16, 2, rb.DEFAULT_JUDGE, options)
    run = tmp_path / "work" / "run-1min-model-tiny-text-width-48-batch-size-4"
    assert json.loads((run / "text_encoder" / "config.json").read_text())["hidden_size"] == 48
    assert row["steps"] == 2 and row["options"] == " ".join(options) and row["concepts"] == len(KEPT)
    assert json.loads((run / "real_benchmark.json").read_text())["top1"] == row["top1"]
    assert rb.format_row(row).startswith("| 1 min | `--model tiny --text-width 48 --batch-size 4` | 2 |")

    # A --resolution among the options trains and samples at that size; the judge stays at the benchmark's.
    options = ["--model", "tiny", "--batch-size", "4", "--resolution", "8"]
    (small,) = rb.train_and_measure(train, references, tmp_path / "work", [1], 16, 2, rb.DEFAULT_JUDGE, options)
    assert json.loads((tmp_path / "work" / "run-1min-model-tiny-batch-size-4-resolution-8" / "unet" / "config.json")
                      .read_text())["sample_size"] == 8
    assert small["ceiling"] == row["ceiling"] and small["concepts"] == len(KEPT)

    # The run saved the guidance its trainer picks for folder data, and was measured with it; another guidance
    # is measured beside that report, not over it, and says which it used.
    default_report = (run / "real_benchmark.json").read_text()
    unguided = rb.measure(run, train, references, guidance_scale=1.0)
    assert unguided["guidance_scale"] == 1.0 and json.loads(default_report)["guidance_scale"] == MANY_CONCEPTS_GUIDANCE
    assert json.loads((run / "real_benchmark-guidance-1.json").read_text()) == json.loads(json.dumps(unguided))
    assert (run / "real_benchmark.json").read_text() == default_report and (run / "real_benchmark-guidance-1.png").exists()
