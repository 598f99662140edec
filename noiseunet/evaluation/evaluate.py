"""Prompt adherence on the built-in shapes data: generate, read the pixels back, count what is right.

For every prompt of the evaluation set (every seen colour-shape-position combination, and every
held-out one) K images are generated from fixed seeds and judged by the pixel checker. Accuracy is
reported per attribute and for all attributes at once, separately for seen and held-out combinations,
the latter measuring whether the model composes words it only learned apart.
"""

import time
from pathlib import Path

from ..data.shapes import evaluation_specs
from ..files import save_image, write_json
from ..grid import image_grid
from ..pipeline import SAMPLING, NoiseUNetPipeline, generate, load_pipeline, use_scheduler
from ..precision import resolve_precision
from .checker import judge

ATTRIBUTES = ("colour", "shape", "position", "all")


def evaluate(
    pipeline_dir: str | Path,
    images_per_prompt: int = 4,
    scheduler: str = SAMPLING.scheduler,
    steps: int = SAMPLING.steps,
    guidance_scale: float = SAMPLING.guidance_scale,
    seed: int = SAMPLING.seed,
    batch_size: int = 128,
    write: bool = True,
    pipe: NoiseUNetPipeline | None = None,
    allow_pickle: bool = False,
    device: str | None = None,
    precision: str = "auto",
) -> dict:
    """Scores as {"seen": {...}, "held_out": {...}, "settings": {...}}; with ``write``, also
    ``evaluation.json`` and ``evaluation.png`` (each image framed green if all attributes are right)."""
    pipeline_dir = Path(pipeline_dir)
    pipe = pipe or load_pipeline(pipeline_dir, allow_pickle, device)
    use_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    report, rows, labels, marks = {}, [], [], []
    for split, held_out in (("seen", False), ("held_out", True)):
        specs = evaluation_specs(held_out)
        images = generate(pipe, [s.caption for s in specs], images_per_prompt, seed, batch_size,
                          precision=precision, num_inference_steps=steps, guidance_scale=guidance_scale)
        verdicts = [[judge(image, spec) for image in row] for row, spec in zip(images, specs)]
        flat = [v for row in verdicts for v in row]
        report[split] = {f"{a}_correct" if a == "all" else a: sum(v[a] for v in flat) / len(flat) for a in ATTRIBUTES}
        report[split]["images"] = len(flat)
        rows += images
        labels += [f"{'[held out] ' if held_out else ''}{s.caption}" for s in specs]
        marks += [[v["all"] for v in row] for row in verdicts]
    report["settings"] = {"images_per_prompt": images_per_prompt, "scheduler": scheduler, "steps": steps,
                          "guidance_scale": guidance_scale, "seed": seed,
                          "precision": resolve_precision(precision, pipe.device),
                          "seconds": round(time.perf_counter() - started, 1)}
    if write:
        write_json(pipeline_dir / "evaluation.json", report)
        title = (f"seen: {report['seen']['all_correct']:.1%} all correct, held out: "
                 f"{report['held_out']['all_correct']:.1%} ({scheduler}, {steps} steps, guidance {guidance_scale})")
        save_image(image_grid(rows, labels, marks, cell=48, title=title), pipeline_dir / "evaluation.png")
    return report


def format_report(report: dict) -> str:
    """The scores as a small table."""
    lines = [f"{'':10}{'colour':>9}{'shape':>9}{'position':>10}{'all':>9}{'images':>8}"]
    for split in ("seen", "held_out"):
        r = report[split]
        lines.append(f"{split:10}{r['colour']:>9.1%}{r['shape']:>9.1%}{r['position']:>10.1%}"
                     f"{r['all_correct']:>9.1%}{r['images']:>8}")
    return "\n".join(lines)
