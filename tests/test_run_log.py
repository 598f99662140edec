"""Watching a run: metrics.jsonl with the last partial interval, loss.png, TensorBoard through accelerate."""

import json

import numpy as np
import pytest
from PIL import Image
from test_training import tiny_config

from noiseunet.runtime.run_log import plot_loss, resolve_trackers, smoothed
from noiseunet.training import train


def logged(output) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_a_run_shorter_than_the_log_interval_writes_its_record_and_plot(tmp_path):
    output = train(tiny_config(tmp_path / "run", max_steps=10, log_every=25, report_to="none"))
    records = logged(output)
    assert [r["step"] for r in records] == [10]
    assert records[0]["loss"] > 0 and records[0]["skipped_steps"] == 0 and records[0]["grad_norm"] > 0
    assert Image.open(output / "loss.png").size[0] >= 600


def test_the_last_partial_interval_is_written(tmp_path):
    output = train(tiny_config(tmp_path / "run", max_steps=30, log_every=25, report_to="none"))
    records = logged(output)
    assert [r["step"] for r in records] == [25, 30]
    assert all(r["images_per_second"] > 0 for r in records)


def test_tensorboard_gets_the_metrics_and_the_validation_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prompts = ["a red circle on the left", "a white square in the middle"]
    output = train(tiny_config(tmp_path / "run", max_steps=4, log_every=2, report_to="tensorboard",
                               validation_prompts=prompts, validate_every=2))
    events = list((output / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    accumulator = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = accumulator.Tags()
    for name in ("train/loss", "train/lr", "train/images_per_second", "train/grad_norm", "train/skipped_steps"):
        assert name in tags["scalars"], tags
    losses = accumulator.Scalars("train/loss")
    assert [e.step for e in losses] == [2, 4]
    assert losses[-1].value == pytest.approx(logged(output)[-1]["loss"], rel=1e-6)
    images = accumulator.Images("validation")
    assert [e.step for e in images] == [2, 4, 4]  # every 2 steps, and the final grid
    grid = Image.open(output / "samples" / "step-4.png")
    assert (images[-1].width, images[-1].height) == grid.size


def test_trackers_auto_none_and_missing():
    assert resolve_trackers("auto") == ["tensorboard"] and resolve_trackers("none") == []
    with pytest.raises(ValueError, match="--report-to must be one of"):
        resolve_trackers("mlflow")


def test_loss_plot_smooths_like_tensorboard():
    values = [4.0, 2.0, 1.0, 1.0]
    out = smoothed(values, 0.5)
    assert out[0] == 4.0  # no start-up bias
    assert out[1] == pytest.approx((0.5 * 0.5 * 4 + 0.5 * 2) / 0.75)
    image = plot_loss([1, 2, 3, 4], values, [1e-3, 1e-3, 5e-4, 5e-4])
    assert image.mode == "RGB" and np.asarray(image).std() > 0
