"""Prior preservation: --prior-data mixes a second source into fine-tuning at --prior-share of every epoch."""

import json
import subprocess
import sys
from collections import Counter

import pytest
from test_training import tiny_config

from noiseunet.data import ImageCaptionFolder, ShapesDataset
from noiseunet.data.export import save_shapes_folder
from noiseunet.data.mixture import PriorMixture
from noiseunet.training import TrainConfig, train
from noiseunet.training.run import open_batches


def captioned_folder(root, count, split="new_word", seed=5):
    """``count`` rendered images of a split (default: the diamonds the built-in data never shows)."""
    return save_shapes_folder(root, count, size=16, seed=seed, split=split)


def epoch_captions(config: TrainConfig, items: int) -> list[str]:
    batches = open_batches(config)
    captions = []
    while len(captions) < items:
        captions += next(batches)["captions"]
    return captions[:items]


def test_prior_items_make_their_share_of_every_epoch(tmp_path):
    """12 diamonds and the built-in shapes at share 0.25: 4 prior items, so an epoch of 16 holds every diamond
    once and 4 shapes; the draw of prior items is seeded."""
    data = captioned_folder(tmp_path / "new", 12)
    config = TrainConfig(output_dir=str(tmp_path / "out"), data=str(data), prior_data="shapes", prior_share=0.25,
                         resolution=16, batch_size=4, caption_dropout=0.0)
    captions = epoch_captions(config, 16)
    new = [c for c in captions if "diamond" in c]
    assert len(new) == 12 and Counter(new) == Counter(ImageCaptionFolder(data).captions(range(12)))
    assert len(captions) - len(new) == 4
    shapes = ShapesDataset(size=16)
    first = PriorMixture(ImageCaptionFolder(data), shapes, 0.25, seed=0).prior_indices
    assert first == PriorMixture(ImageCaptionFolder(data), shapes, 0.25, seed=0).prior_indices
    assert first != PriorMixture(ImageCaptionFolder(data), shapes, 0.25, seed=1).prior_indices


def test_a_small_prior_is_repeated_to_its_share(tmp_path):
    data = ImageCaptionFolder(captioned_folder(tmp_path / "new", 12))
    prior = ImageCaptionFolder(captioned_folder(tmp_path / "prior", 3, split="train"))
    mixture = PriorMixture(data, prior, 0.5)
    assert len(mixture) == 24 and Counter(mixture.prior_indices) == {0: 4, 1: 4, 2: 4}
    assert [mixture[i]["caption"] for i in range(12, 15)] == prior.captions(mixture.prior_indices[:3])
    assert "diamond" in mixture.validation_prompts(4)[0]
    with pytest.raises(IndexError):
        mixture[24]


def test_prior_problems_and_options_are_named(tmp_path):
    data = captioned_folder(tmp_path / "new", 4)
    prior = captioned_folder(tmp_path / "prior", 3, split="train")
    (prior / "0001.png").unlink()
    base = dict(output_dir=str(tmp_path / "out"), data=str(data), resolution=16, batch_size=2)
    with pytest.raises(ValueError, match=r"bad sample\(s\), first: prior .*0001.png \(row 2\): file not found"):
        open_batches(TrainConfig(**base, prior_data=str(prior), on_bad_sample="error"))
    with pytest.raises(FileNotFoundError, match="^--prior-data ./missing: no such folder$"):
        open_batches(TrainConfig(**base, prior_data="./missing"))
    with pytest.raises(ValueError, match=r"^--prior-share needs --prior-data$"):
        TrainConfig(**base, prior_share=0.5)
    with pytest.raises(ValueError, match=r"^prior_share \(--prior-share\) must be in \(0, 1\); got 1.0$"):
        TrainConfig(**base, prior_data="shapes", prior_share=1.0)


def test_images_a_base_generated_are_a_prior_for_its_fine_tune(tmp_path):
    """`noiseunet sample --out-dir` writes a captioned folder, and a fine-tune trains on it beside new images."""
    base = train(tiny_config(tmp_path / "base", max_steps=1, report_to="none"))
    prior = tmp_path / "generated"
    subprocess.run([sys.executable, "-m", "noiseunet", "sample", str(base), "a red circle on the left",
                    "a blue square on the right", "--num-images", "2", "--steps", "2", "--device", "cpu",
                    "--out", str(tmp_path / "grid.png"), "--out-dir", str(prior)], check=True, capture_output=True)
    rows = [json.loads(line) for line in (prior / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a red circle on the left"] * 2 + ["a blue square on the right"] * 2
    assert all((prior / r["file_name"]).is_file() for r in rows)
    data = captioned_folder(tmp_path / "new", 4)
    tuned = train(TrainConfig(output_dir=str(tmp_path / "tuned"), pretrained=str(base), data=str(data),
                              prior_data=str(prior), resolution=16, batch_size=4, max_steps=2, max_minutes=None,
                              mixed_precision="no", report_to="none", checkpoint_every=1000))
    assert json.loads((tuned / "train_summary.json").read_text())["steps"] == 2
    assert json.loads((tuned / "train_config.json").read_text())["prior_data"] == str(prior)
