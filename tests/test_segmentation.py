"""SegmentationUNet: sizes, shared blocks, training on shapes and on a folder, the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from noiseunet.model.resnet import ResnetBlock
from noiseunet.segmentation import SegmentationUNet
from noiseunet.segmentation.train import SegmentationConfig, evaluate_segmentation, predict_masks, train_segmentation

TINY = dict(block_out_channels=(32, 32), layers_per_block=1)


@pytest.mark.parametrize("upsampling", ["nearest", "transposed"])
@pytest.mark.parametrize("size", [(32, 32), (33, 17), (7, 9)])
def test_output_has_the_input_size(upsampling, size):
    model = SegmentationUNet(num_classes=3, block_out_channels=(32, 32, 32), upsampling=upsampling)
    assert model(torch.randn(2, 3, *size)).shape == (2, 3, *size)


def test_built_from_the_noise_unet_blocks_without_conditioning():
    model = SegmentationUNet(**TINY)
    resnets = [m for m in model.modules() if isinstance(m, ResnetBlock)]
    assert resnets and all(r.time_emb_proj is None for r in resnets)
    assert not any("attn" in name for name, _ in model.named_parameters())


def test_learns_the_shapes_and_evaluates(tmp_path):
    run = train_segmentation(SegmentationConfig(output_dir=str(tmp_path / "run"), block_out_channels=(32, 32),
                                                max_steps=80, max_minutes=None, batch_size=16, resolution=32,
                                                mixed_precision="no", log_every=5))
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 16 and np.mean(losses[-3:]) < 0.5 * losses[0]
    result = evaluate_segmentation(run, max_images=64)
    assert result["pixel_accuracy"] > 0.9 and result["mean_iou"] > 0.4
    assert json.loads((run / "evaluation.json").read_text())["mean_iou"] == result["mean_iou"]


def test_folder_data_binary_and_predict(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.zeros((20, 24), np.uint8)
        mask[4:12, 5 + i:15 + i] = 1
        image = np.where(mask[..., None] > 0, 200, 30).astype(np.uint8) + rng.integers(0, 20, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(image).save(data / "images" / f"{i}.jpg")
        Image.fromarray(mask).save(data / "masks" / f"{i}.png")
    run = train_segmentation(SegmentationConfig(output_dir=str(tmp_path / "run"), data=str(data), resolution=16,
                                                block_out_channels=(32, 32), max_steps=3, max_minutes=None,
                                                batch_size=2, loss="dice", mixed_precision="no"))
    assert SegmentationUNet.from_pretrained(run / "model").config.num_classes == 2
    written = predict_masks(run, [str(data / "images" / "0.jpg")], tmp_path / "out")
    mask = np.asarray(Image.open(written[0]))
    assert mask.shape == (20, 24) and set(np.unique(mask)) <= {0, 1}
    assert Image.open(written[1]).size == (24, 20)


def test_missing_mask_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "cat.png")
    from noiseunet.segmentation.data import SegmentationFolder

    with pytest.raises(FileNotFoundError, match="no mask for cat"):
        SegmentationFolder(tmp_path)


def test_evaluation_counts_every_image_of_a_folder_exactly_once(tmp_path):
    """10 images in batches of 4: 4 + 4 + 2, none repeated (padding by cycling once counted some twice)."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(10):
        mask = np.zeros((12, 12), np.uint8)
        mask[2:6 + i % 4, 3:9] = 1
        Image.fromarray(np.where(mask[..., None] > 0, 220, 20).astype(np.uint8).repeat(3, -1)).save(data / "images" / f"{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"{i}.png")
    run = train_segmentation(SegmentationConfig(output_dir=str(tmp_path / "run"), data=str(data), resolution=12,
                                                block_out_channels=(32, 32), max_steps=2, max_minutes=None,
                                                batch_size=2, mixed_precision="no"))
    result = evaluate_segmentation(run, str(data), batch_size=4)
    assert result["images"] == 10
    from noiseunet.segmentation.data import SegmentationFolder, evaluation_batches

    seen = [masks for _, masks in evaluation_batches(SegmentationFolder(data), 10, 4, None)]
    assert [len(m) for m in seen] == [4, 4, 2]
    counted = sum(int(m.numel()) for m in seen)
    assert counted == 10 * 12 * 12  # the confusion matrix's total is every pixel of every image, once
