"""Data sources, preprocessing, and the resumable, shardable training stream."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from noiseunet.data import ImageCaptionFolder, ShapesDataset, open_source
from noiseunet.data.loader import TrainingStream, training_batches
from noiseunet.data.transforms import mentions_left_or_right, preprocess, to_rgb


def write_folder(root, captions, size=(40, 30), metadata="jsonl"):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, caption in enumerate(captions):
        Image.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": caption})
    if metadata == "jsonl":
        (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    else:
        (root / "metadata.csv").write_text("file_name,text\n" + "".join(f"{r['file_name']},{r['text']}\n" for r in rows))
    return root


@pytest.mark.parametrize("metadata", ["jsonl", "csv"])
def test_folder_source(tmp_path, metadata):
    source = open_source(str(write_folder(tmp_path / "d", ["a cat", "a dog"], metadata=metadata)))
    assert isinstance(source, ImageCaptionFolder) and len(source) == 2
    assert source[1]["caption"] == "a dog" and source[1]["image"].size == (40, 30)


def test_folder_without_caption_column_names_file_and_row(tmp_path):
    root = write_folder(tmp_path / "d", ["a cat"])
    with pytest.raises(ValueError, match=r"metadata.jsonl: row 1 has no 'caption' column"):
        ImageCaptionFolder(root, caption_column="caption")


def test_saved_hf_dataset_source(tmp_path):
    import datasets

    images = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 255)]
    datasets.Dataset.from_dict({"img": images, "caption": ["black", "white"]}).save_to_disk(tmp_path / "hf")
    source = open_source(str(tmp_path / "hf"), image_column="img", caption_column="caption")
    assert len(source) == 2 and source[1]["caption"] == "white"
    assert np.asarray(source[1]["image"].convert("RGB")).min() == 255


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_every_image_mode_becomes_rgb(mode):
    image = Image.new("RGB", (10, 6), (200, 100, 50))
    image = image.convert(mode) if mode != "I;16" else Image.fromarray(np.full((6, 10), 40000, np.uint16))
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (10, 6)


def test_preprocess_resizes_crops_and_scales():
    image = Image.fromarray(np.tile(np.linspace(0, 255, 60, dtype=np.uint8), (30, 1)))  # grey horizontal ramp
    x = preprocess(image, 16)
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1
    assert x[0, 0, 0] < x[0, 0, -1]  # left still darker than right
    outcomes = [preprocess(image, 16, flip=True, rng=np.random.default_rng(seed)) for seed in range(10)]
    assert any(torch.equal(t, x) for t in outcomes)  # some seeds keep the image,
    assert any(torch.equal(t, x.flip(-1)) for t in outcomes)  # others mirror it
    assert all(torch.equal(t, x) or torch.equal(t, x.flip(-1)) for t in outcomes)


def test_captions_with_sides_are_never_flipped():
    assert mentions_left_or_right("a red circle on the left") and mentions_left_or_right("Right, a cat")
    assert not mentions_left_or_right("a leftover sandwich")
    stream = TrainingStream(ShapesDataset(size=32), 32, flip=True, caption_dropout=0.0)  # single objects
    for position in range(20):
        item = stream[position]
        spec = stream.source[position]["spec"]
        centre = (item["pixel_values"] > -0.5).any(0).nonzero()[:, 1].float().mean() / 32
        assert {"left": centre < 1 / 3, "middle": 1 / 3 <= centre < 2 / 3, "right": centre >= 2 / 3}[spec.position]


def test_stream_is_a_function_of_seed_and_position_and_drops_captions():
    stream = TrainingStream(open_source("shapes", 32), 32, seed=3, caption_dropout=0.5)
    again = TrainingStream(open_source("shapes", 32), 32, seed=3, caption_dropout=0.5)
    for position in (0, 7, 123456):
        assert torch.equal(stream[position]["pixel_values"], again[position]["pixel_values"])
        assert stream[position]["caption"] == again[position]["caption"]
    dropped = sum(stream[p]["caption"] == "" for p in range(200))
    assert 60 < dropped < 140


def test_finite_sources_are_shuffled_per_epoch_and_cover_everything(tmp_path):
    source = open_source(str(write_folder(tmp_path / "d", [f"c{i}" for i in range(5)])))
    stream = TrainingStream(source, 8, seed=0, caption_dropout=0.0)
    epochs = [[stream[e * 5 + i]["caption"] for i in range(5)] for e in range(3)]
    assert all(sorted(epoch) == [f"c{i}" for i in range(5)] for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1


def test_two_processes_read_what_one_process_with_double_batch_reads():
    stream = TrainingStream(open_source("shapes", 16), 16, caption_dropout=0.0)
    single = iter(training_batches(stream, batch_size=4, start=8))
    rank0 = iter(training_batches(stream, batch_size=2, start=8, rank=0, world=2))
    rank1 = iter(training_batches(stream, batch_size=2, start=8, rank=1, world=2))
    for _ in range(3):
        whole, a, b = next(single), next(rank0), next(rank1)
        assert whole["captions"] == a["captions"] + b["captions"]
        assert torch.equal(whole["pixel_values"], torch.cat([a["pixel_values"], b["pixel_values"]]))


def test_loader_workers_do_not_change_the_batches():
    stream = TrainingStream(open_source("shapes", 16), 16)
    plain = iter(training_batches(stream, batch_size=3))
    workers = iter(training_batches(stream, batch_size=3, num_workers=2))
    for _ in range(4):
        assert next(plain)["captions"] == next(workers)["captions"]
