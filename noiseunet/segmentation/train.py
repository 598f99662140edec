"""Train, evaluate and apply a SegmentationUNet: ``noiseunet segment train | evaluate | predict``."""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from accelerate.utils import set_seed
from PIL import Image

from ..files import from_pretrained, replacing_folder_entries, save_image, write_json
from ..options import check_choices
from ..runtime import RunLog, make_accelerator
from .data import SHAPES_CLASSES, SegmentationFolder, batches, evaluation_batches, open_segmentation_source, to_tensors
from .losses import IGNORE_INDEX, LOSSES
from .metrics import confusion_matrix, scores
from .model import SegmentationUNet

# Overlay colours per class index (background transparent).
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], dtype=np.uint8)


@dataclass
class SegmentationConfig:
    output_dir: str = "runs/segment"
    data: str | None = None  # None = the built-in shapes
    num_classes: int | None = None  # None = from the data (4 for shapes; folders: largest mask value + 1)
    resolution: int = 32
    loss: Literal["ce", "dice", "iou", "ce+dice"] = "ce+dice"
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    upsampling: Literal["nearest", "transposed"] = "nearest"
    batch_size: int = 32
    learning_rate: float = 2e-3
    max_steps: int | None = None
    max_minutes: float | None = 5.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    log_every: int = 25

    def __post_init__(self) -> None:
        check_choices(self)


def count_classes(source) -> int:
    if not isinstance(source, SegmentationFolder):
        return len(SHAPES_CLASSES)
    largest = 0
    for _, mask_path in source.pairs:
        values = np.unique(np.asarray(Image.open(mask_path)))
        largest = max(largest, int(values[values != IGNORE_INDEX].max(initial=0)))
    return largest + 1


def train_segmentation(config: SegmentationConfig) -> Path:
    """Train until ``max_steps`` or ``max_minutes``; writes OUTPUT/model (save_pretrained) and metrics.jsonl."""
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(config.mixed_precision)
    set_seed(config.seed)
    source = open_segmentation_source(config.data, config.resolution, config.seed)
    num_classes = config.num_classes or count_classes(source)
    model = SegmentationUNet(num_classes=num_classes, block_out_channels=tuple(config.block_out_channels),
                             layers_per_block=config.layers_per_block, upsampling=config.upsampling)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = LOSSES[config.loss]
    max_steps = config.max_steps or math.inf
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    log = RunLog(output, config.batch_size, config.log_every, max_steps, budget, 0, True)
    data, step = batches(source, config.batch_size, config.resolution, seed=config.seed), 0
    model.train()
    while step < max_steps and log.elapsed < budget:
        images, masks = (t.to(accelerator.device) for t in next(data))
        with accelerator.autocast():
            logits = model(images)
        loss = loss_fn(logits.float(), masks)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log.step(step, loss.detach(), config.learning_rate)
    log.close()
    with replacing_folder_entries(output) as staging:
        accelerator.unwrap_model(model).save_pretrained(staging / "model")
    summary = {**asdict(config), "num_classes": num_classes, "steps": step, "minutes": log.elapsed / 60,
               "images_seen": step * config.batch_size}
    write_json(output / "train_summary.json", summary)
    print(f"trained {step} steps in {log.elapsed / 60:.1f} min -> {output / 'model'}")
    return output


def evaluate_segmentation(run_dir: str | Path, data: str | None = None, max_images: int = 512,
                          batch_size: int = 64) -> dict:
    """Confusion-matrix metrics on ``data`` (default: built-in shapes images training never drew), every
    image counted once (the first ``max_images``); writes RUN/evaluation.json."""
    run_dir = Path(run_dir)
    model = from_pretrained(SegmentationUNet, run_dir / "model").eval()
    trained = json.loads((run_dir / "train_summary.json").read_text())
    source = open_segmentation_source(data, trained["resolution"], trained["seed"], split="eval")
    count = min(max_images, len(source))
    confusion = torch.zeros(model.config.num_classes, model.config.num_classes, dtype=torch.long)
    resolution = trained["resolution"] if data in (None, "shapes") else None
    for images, masks in evaluation_batches(source, count, batch_size, resolution):
        confusion += confusion_matrix(model.predict(images), masks, model.config.num_classes)
    result = {**scores(confusion), "images": count, "data": data or "shapes (unseen images)"}
    write_json(run_dir / "evaluation.json", result)
    return result


def predict_masks(run_dir: str | Path, images: list[str], out_dir: str | Path) -> list[Path]:
    """For each image: NAME_mask.png (class indices) and NAME_overlay.png (classes coloured over the image)."""
    model = from_pretrained(SegmentationUNet, Path(run_dir) / "model").eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        with Image.open(path) as opened:
            pixels, _ = to_tensors({"image": opened.convert("RGB"), "mask": np.zeros((1, 1))})
        mask = model.predict(pixels[None])[0].numpy().astype(np.uint8)
        image = np.asarray(Image.open(path).convert("RGB"))
        colours = PALETTE[mask % len(PALETTE)]
        overlay = np.where(mask[..., None] > 0, (0.45 * image + 0.55 * colours).astype(np.uint8), image)
        stem = out_dir / Path(path).stem
        written += [save_image(Image.fromarray(mask, "L"), f"{stem}_mask.png"),
                    save_image(Image.fromarray(overlay), f"{stem}_overlay.png")]
    return written
