"""Prompt adherence on the built-in shapes data: generate, read the pixels back, count what is right.

For every task family (``noiseunet.data.shapes.FAMILIES``) the evaluator takes a fixed set of prompts,
seen in training and held out, generates K images of each from fixed seeds and judges them with the pixel
checker. The single-object family is scored on every prompt (45 seen, 9 held out); each other family on
a fixed sample of 12 seen and 8 held-out prompts (``compositions.EVALUATED_PROMPTS``), which keeps a full
evaluation to 154 prompts. Accuracy is reported per family, per attribute and for all attributes at once,
separately for seen and held-out prompts, the latter measuring whether the model composes what it only
learned apart; the top-level "seen" and "held_out" scores are the mean over the families evaluated.
"""

import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..data.shapes import FAMILIES
from ..files import save_image, write_json
from ..grid import image_grid, stack
from ..pipeline import (
    SAMPLING,
    NoiseUNetPipeline,
    generate,
    load_pipeline,
    use_scheduler,
)
from ..precision import resolve_precision
from .checker import judge

SPLITS = (("seen", False), ("held_out", True))


def _scores(verdicts: list[dict[str, bool]], prompts: int) -> dict:
    """The share of images right on each attribute, "all" as "all_correct", and the counts."""
    scores = {f"{key}_correct" if key == "all" else key: sum(v[key] for v in verdicts) / len(verdicts)
              for key in verdicts[0]}
    return {**scores, "images": len(verdicts), "prompts": prompts}


def evaluate(
    pipeline_dir: str | Path,
    images_per_prompt: int = 4,
    scheduler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = SAMPLING.seed,
    batch_size: int = 128,
    write: bool = True,
    pipe: NoiseUNetPipeline | None = None,
    allow_pickle: bool = False,
    device: str | None = None,
    precision: str = "auto",
    families: Sequence[str] | None = None,
) -> dict:
    """Scores as {"tasks": {family: {"seen": {...}, "held_out": {...}}}, "seen": {...}, "held_out": {...},
    "settings": {...}} for ``families`` (default: every one), sampled by ``scheduler`` in ``steps`` and guided
    by ``guidance_scale`` (each by default the pipeline's own: ``NoiseUNetPipeline.sampler``,
    ``.guidance_scale``); with ``write``, also ``evaluation.json`` and ``evaluation.png`` (a titled block per
    family, each image framed green if the whole prompt is right)."""
    families = list(families or FAMILIES)
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; the families are {', '.join(FAMILIES)}")
    pipeline_dir = Path(pipeline_dir)
    pipe = pipe or load_pipeline(pipeline_dir, allow_pickle, device)
    scheduler = scheduler or pipe.sampler[0]
    steps = pipe.sampler[1] if steps is None else steps
    use_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    guidance_scale = pipe.guidance_scale if guidance_scale is None else guidance_scale
    started = time.perf_counter()
    jobs = [(name, split, spec) for name in families for split, held_out in SPLITS
            for spec in FAMILIES[name].evaluation_specs(held_out)]
    images = generate(pipe, [spec.caption for _, _, spec in jobs], images_per_prompt, seed, batch_size,
                      precision=precision, num_inference_steps=steps, guidance_scale=guidance_scale)
    verdicts = [[judge(image, spec) for image in row] for row, (_, _, spec) in zip(images, jobs)]
    rows: dict[tuple[str, str], list[int]] = {}  # (family, split) -> indices of its prompts in jobs
    for i, (name, split, _) in enumerate(jobs):
        rows.setdefault((name, split), []).append(i)
    tasks = {name: {split: _scores([v for i in rows[name, split] for v in verdicts[i]], len(rows[name, split]))
                    for split, _ in SPLITS} for name in families}
    report = {"tasks": tasks}
    for split, _ in SPLITS:
        report[split] = {"all_correct": sum(tasks[name][split]["all_correct"] for name in families) / len(families),
                         "images": sum(tasks[name][split]["images"] for name in families)}
    report["settings"] = {"images_per_prompt": images_per_prompt, "scheduler": scheduler, "steps": steps,
                          "guidance_scale": guidance_scale, "seed": seed,
                          "precision": resolve_precision(precision, pipe.device), "families": families,
                          "seconds": round(time.perf_counter() - started, 1)}
    if write:
        write_json(pipeline_dir / "evaluation.json", report)
        save_image(_picture(report, jobs, images, verdicts), pipeline_dir / "evaluation.png")
    return report


def _picture(report: dict, jobs: list, images: list[list[Image.Image]], verdicts: list[list[dict]]) -> Image.Image:
    """A grid per family, titled with its scores, one above the other under the settings."""
    settings = report["settings"]
    blocks = []
    for name, task in report["tasks"].items():
        rows = [i for i, (n, _, _) in enumerate(jobs) if n == name]
        title = (f"{name}: seen {task['seen']['all_correct']:.1%} all correct, "
                 f"held out {task['held_out']['all_correct']:.1%}")
        labels = [f"{'[held out] ' if jobs[i][1] == 'held_out' else ''}{jobs[i][2].caption}" for i in rows]
        blocks.append(image_grid([images[i] for i in rows], labels, [[v["all"] for v in verdicts[i]] for i in rows],
                                 cell=48, label_width=280, title=title))
    return stack(blocks, title=f"mean over families: seen {report['seen']['all_correct']:.1%} all correct, held out "
                 f"{report['held_out']['all_correct']:.1%} ({settings['scheduler']}, {settings['steps']} steps, "
                 f"guidance {settings['guidance_scale']})")


def format_report(report: dict) -> str:
    """The scores as a small table: a row per family (all correct, seen and held out, and the seen score of
    each attribute), then the mean."""
    lines = [f"{'':19}{'seen':>7}{'held_out':>10}{'images':>8}   seen, per attribute"]
    for name, task in report["tasks"].items():
        seen, held_out = task["seen"], task["held_out"]
        attributes = ", ".join(f"{key} {value:.0%}" for key, value in seen.items()
                               if key not in ("all_correct", "images", "prompts"))
        lines.append(f"{name:19}{seen['all_correct']:>7.1%}{held_out['all_correct']:>10.1%}"
                     f"{seen['images'] + held_out['images']:>8}   {attributes}")
    lines.append(f"{'mean':19}{report['seen']['all_correct']:>7.1%}{report['held_out']['all_correct']:>10.1%}"
                 f"{report['seen']['images'] + report['held_out']['images']:>8}")
    return "\n".join(lines)
