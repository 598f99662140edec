"""What a run reports while it trains: the progress bar, metrics.jsonl and, at the end, loss.png."""

import json
import math
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from ..files import replacing, save_image


class RunLog:
    """Averages the loss over ``every`` steps, then writes a metrics.jsonl record and updates the bar.

    The bar counts steps; under a time budget it also shows the minutes left, which is what a CPU user
    plans with.
    """

    def __init__(self, output: Path, images_per_step: int, every: int, max_steps: float, budget_s: float,
                 initial_step: int, enabled: bool):
        self.path, self.images_per_step, self.every, self.enabled = output / "metrics.jsonl", images_per_step, every, enabled
        self.budget_s, self.start = budget_s, time.perf_counter()
        if enabled:
            self._keep_records_up_to(initial_step)
        self.last_time, self.losses = self.start, []
        self.bar = tqdm(total=None if max_steps == math.inf else int(max_steps), initial=initial_step, unit="step",
                        desc="training", disable=not enabled, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, step: int, loss: torch.Tensor | None, lr: float) -> None:
        """``loss``: this step's loss as a 0-d tensor, read back only when a record is written, so that
        logging does not make the host wait for the device every step; None for a skipped step."""
        self.bar.update(1)
        if loss is not None:
            self.losses.append(loss.detach())
        if step % self.every or not self.enabled:
            return
        now = time.perf_counter()
        # None: every step was skipped
        mean_loss = torch.stack(self.losses).float().mean().item() if self.losses else None
        record = {"step": step, "loss": mean_loss, "lr": lr,
                  "images_per_second": self.images_per_step * self.every / (now - self.last_time),
                  "minutes": (now - self.start) / 60}
        self.last_time, self.losses = now, []
        postfix = {"loss": "skipped" if mean_loss is None else f"{mean_loss:.4f}",
                   "img/s": f"{record['images_per_second']:.0f}"}
        if self.budget_s != math.inf:
            postfix["min left"] = f"{max(self.budget_s - self.elapsed, 0) / 60:.1f}"
        self.bar.set_postfix(postfix)
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")

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
        self.bar.close()
        records = [r for r in self.records() if r["loss"] is not None] if self.enabled else []
        if records:
            save_image(plot_loss([r["step"] for r in records], [r["loss"] for r in records]),
                       self.path.with_name("loss.png"))


def plot_loss(steps: list[int], losses: list[float], size: tuple[int, int] = (640, 360)) -> Image.Image:
    """A plain loss curve (log-scaled loss axis), drawn with PIL to need no plotting library."""
    width, height = size
    left, right, top, bottom = 60, 20, 20, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    points = [(s, math.log10(l)) for s, l in zip(steps, losses) if l > 0 and math.isfinite(l)]
    if len(points) >= 2:
        s0, s1 = points[0][0], max(points[-1][0], points[0][0] + 1)
        lo, hi = min(p[1] for p in points), max(p[1] for p in points)
        hi = hi if hi > lo else lo + 1
        to_xy = lambda s, l: (left + (s - s0) / (s1 - s0) * (width - left - right),  # noqa: E731
                              height - bottom - (l - lo) / (hi - lo) * (height - top - bottom))
        draw.line([to_xy(*p) for p in points], fill=(30, 90, 200), width=2)
        draw.text((4, top), f"{10 ** hi:.3g}", fill="black", font=font)
        draw.text((4, height - bottom - 10), f"{10 ** lo:.3g}", fill="black", font=font)
        draw.text((left, height - bottom + 6), f"step {s0}", fill="black", font=font)
        draw.text((width - right - 70, height - bottom + 6), f"step {s1}", fill="black", font=font)
    draw.text((width // 2 - 40, height - 16), "training loss", fill="black", font=font)
    return image
