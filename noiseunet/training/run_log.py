"""What a run reports while it trains: the progress bar, metrics.jsonl and, at the end, loss.png."""

import json
import math
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm


class RunLog:
    """Averages the loss over ``every`` steps, then writes a metrics.jsonl record and updates the bar.

    The bar counts steps; under a time budget it also shows the minutes left, which is what a CPU user
    plans with.
    """

    def __init__(self, output: Path, images_per_step: int, every: int, max_steps: float, budget_s: float,
                 initial_step: int, enabled: bool):
        self.path, self.images_per_step, self.every, self.enabled = output / "metrics.jsonl", images_per_step, every, enabled
        self.budget_s, self.start = budget_s, time.perf_counter()
        self.last_time, self.losses = self.start, []
        self.bar = tqdm(total=None if max_steps == math.inf else int(max_steps), initial=initial_step, unit="step",
                        desc="training", disable=not enabled, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, step: int, loss: float | None, lr: float) -> None:
        self.bar.update(1)
        if loss is not None:
            self.losses.append(loss)
        if step % self.every or not self.enabled:
            return
        now = time.perf_counter()
        record = {"step": step, "loss": sum(self.losses) / max(len(self.losses), 1), "lr": lr,
                  "images_per_second": self.images_per_step * self.every / (now - self.last_time),
                  "minutes": (now - self.start) / 60}
        self.last_time, self.losses = now, []
        postfix = {"loss": f"{record['loss']:.4f}", "img/s": f"{record['images_per_second']:.0f}"}
        if self.budget_s != math.inf:
            postfix["min left"] = f"{max(self.budget_s - self.elapsed, 0) / 60:.1f}"
        self.bar.set_postfix(postfix)
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.bar.close()
        if self.enabled and self.path.exists():
            records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            plot_loss([r["step"] for r in records], [r["loss"] for r in records]).save(self.path.with_name("loss.png"))


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
