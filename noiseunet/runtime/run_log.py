"""What a run reports while it trains: the progress bar, metrics.jsonl, the trackers and, at the end, loss.png.

Every ``every`` steps (and once more for the last, partial interval) one record is written: the mean loss,
the learning rate, images per second, the mean gradient norm and the steps skipped for NaN/Inf. The same
record goes to accelerate's trackers (TensorBoard, W&B) when the run has any.
"""

import importlib.util
import io
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from PIL import Image
from tqdm.auto import tqdm

from ..files import replacing, save_image

TRACKERS = ("auto", "tensorboard", "wandb", "none")


def resolve_trackers(report_to: str) -> list[str]:
    """``--report-to`` -> accelerate's ``log_with``: "auto" is TensorBoard when it is installed, else none.

    An explicitly named tracker that is not installed is an error, not a silent no-op.
    """
    if report_to not in TRACKERS:
        raise ValueError(f"--report-to must be one of {', '.join(TRACKERS)}, got {report_to!r}")
    if report_to == "none":
        return []
    if report_to == "auto":
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    if importlib.util.find_spec(report_to) is None:
        raise ValueError(f"--report-to {report_to}: the {report_to} package is not installed "
                         f"(pip install {report_to})")
    return [report_to]


class RunLog:
    """Averages loss and gradient norm over ``every`` steps, then writes a metrics.jsonl record, logs it to the
    trackers and updates the bar.

    Losses and norms arrive as device tensors and are read back only when a record is written, so logging
    does not make the host wait for the device every step. The bar counts steps; under a time budget it also
    shows the minutes left, which is what a CPU user plans with.
    """

    def __init__(self, output: Path, images_per_step: int, every: int, max_steps: float, budget_s: float,
                 initial_step: int, enabled: bool, accelerator: Accelerator | None = None, initial_seconds: float = 0.0):
        self.path, self.images_per_step, self.every, self.enabled = output / "metrics.jsonl", images_per_step, every, enabled
        self.accelerator = accelerator
        now = time.perf_counter()
        self.budget_s, self.start = budget_s, now - initial_seconds  # a resumed run's clock goes on
        if enabled:
            self._keep_records_up_to(initial_step)
        self.last_time, self.last_written, self.last_step = now, initial_step, initial_step
        self.losses, self.grad_norms, self.kept, self.lr = [], [], [], None
        self.terms: dict[str, list[torch.Tensor]] = {}  # parts of the loss logged apart (grounding_loss)
        self.bar = tqdm(total=None if max_steps == math.inf else int(max_steps), initial=initial_step, unit="step",
                        desc="training", disable=not enabled, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, step: int, loss: torch.Tensor | None, lr: float, grad_norm: torch.Tensor | None = None,
             finite: bool | torch.Tensor = True, terms: dict[str, torch.Tensor] | None = None) -> None:
        """``loss``: this step's loss as a 0-d tensor; None, or ``finite`` False, for a step skipped for NaN/Inf.
        ``finite`` may be a device tensor (a GPU's step decides on the device): it is read with the loss.
        ``terms``: parts of the loss (0-d tensors, unweighted) that the record also averages, by name."""
        self.bar.update(step - self.last_step)
        self.last_step, self.lr = step, lr
        if loss is None:
            loss, finite = torch.zeros(()), False
        kept = torch.as_tensor(finite, device=loss.device)
        self.kept.append(kept)
        self.losses.append(torch.where(kept, loss.detach().float(), 0.0))
        if grad_norm is not None:
            self.grad_norms.append(torch.where(kept, grad_norm.detach().float(), 0.0))
        for name, value in (terms or {}).items():
            self.terms.setdefault(name, []).append(torch.where(kept, value.detach().float(), 0.0))
        if step % self.every == 0:
            self._write(step)

    def _write(self, step: int) -> None:
        if not self.enabled or step <= self.last_written:
            return
        now, steps = time.perf_counter(), step - self.last_written
        kept = int(torch.stack(self.kept).sum()) if self.kept else 0  # the host waits for the device here
        mean = lambda values: torch.stack(values).sum().item() / kept if values and kept else None  # noqa: E731
        record = {"step": step, "loss": mean(self.losses), "lr": self.lr,  # loss None: every step was skipped
                  "images_per_second": self.images_per_step * steps / max(now - self.last_time, 1e-9),
                  "grad_norm": mean(self.grad_norms), "skipped_steps": len(self.kept) - kept,
                  "minutes": (now - self.start) / 60, **{name: mean(values) for name, values in self.terms.items()}}
        self.last_time, self.last_written, self.losses, self.grad_norms, self.kept = now, step, [], [], []
        self.terms = {}
        postfix = {"loss": "skipped" if record["loss"] is None else f"{record['loss']:.4f}",
                   "img/s": f"{record['images_per_second']:.0f}"}
        if self.budget_s != math.inf:
            postfix["min left"] = f"{max(self.budget_s - self.elapsed, 0) / 60:.1f}"
        self.bar.set_postfix(postfix)
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None},
                                 step=step)

    def image(self, name: str, image: Image.Image, step: int) -> None:
        """Log a picture (a validation grid) to the trackers that take images."""
        if not self.enabled or self.accelerator is None:
            return
        import numpy as np

        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({name: np.asarray(image.convert("RGB"))[None]}, step=step, dataformats="NHWC")
            elif hasattr(tracker, "log_images"):
                tracker.log_images({name: [image]}, step=step)

    def records(self) -> list[dict]:
        """The metrics records written so far; a line torn by a kill is ignored."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def _keep_records_up_to(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old records (and torn lines)."""
        if self.path.exists():
            kept = [r for r in self.records() if r["step"] <= step]
            with replacing(self.path) as temporary:
                temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def close(self) -> None:
        """Write the last, partial interval, then loss.png."""
        self._write(self.last_step)
        self.bar.close()
        records = [r for r in self.records() if r["loss"] is not None] if self.enabled else []
        if records:
            save_image(plot_loss([r["step"] for r in records], [r["loss"] for r in records],
                                 [r.get("lr") for r in records]), self.path.with_name("loss.png"))


def smoothed(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with the start-up bias removed."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


def plot_loss(steps: list[int], losses: list[float], lrs: list[float | None] | None = None) -> Image.Image:
    """The loss per record (faint) and smoothed, on a log axis, with the learning rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or wanted
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=100, layout="constrained")
    marker = "o" if len(steps) <= 20 else None  # a short run's few records stay visible
    axis.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, marker=marker, label="loss")
    weight = min(0.95, 1 - 10 / max(len(losses), 10))  # about a tenth of the run
    axis.plot(steps, smoothed(losses, weight), color="tab:blue", linewidth=2, label="loss, smoothed")
    if all(l > 0 for l in losses):
        axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss", color="tab:blue")
    axis.grid(True, which="major", alpha=0.3)
    if lrs and all(lr is not None for lr in lrs):
        lr_axis = axis.twinx()
        lr_axis.plot(steps, lrs, color="tab:orange", linewidth=1.2, marker=marker, markersize=3, label="learning rate")
        lr_axis.set_ylabel("learning rate", color="tab:orange")
        lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axis.set_title("training loss")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
