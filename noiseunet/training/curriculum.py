"""The main job's curriculum across two runs: relations first, then the 10-minute job on top of them.

A model meets relation prompts ("a red circle to the left of a blue square") either first or too late. From
scratch, 80% relation prompts teach it which object goes where: every seen relation was right after 5000 steps.
After the main job's first 50,000 images (mostly single objects), the same 5000 steps leave relations at
chance (54.2%), because the model already reads the words with no order. A model that learned relations
first keeps them through the single objects that follow: 89.6% / 75.0% after 50,000 images of the main job's
first mixture, and its single objects then score 100%. Single objects need those 50,000 images before the
main job's 10-minute mark. So a main job budgeted over ``MAIN_JOB_MINUTES`` spends the minutes before its
last ``MAIN_JOB_MINUTES`` on ``RELATIONS_FIRST`` from scratch. It writes that run to ``OUTPUT/relations-first``
and then runs the 10-minute job from its weights (README, "Composition": "What holds the tie", "Relations
first").
"""

import json
from dataclasses import replace
from pathlib import Path

from ..data.shapes import RELATIONS_FIRST
from .config import TrainConfig

#: The main job's own budget: what a longer one keeps for the runs after relations.
MAIN_JOB_MINUTES = 10.0
#: Where the main job writes the relations run, inside its output folder.
FIRST_RUN_FOLDER = "relations-first"


def relations_first_minutes(config: TrainConfig, requested: float | None) -> float:
    """The minutes the main job of ``config`` trains on relations first: ``requested`` (--relations-first),
    checked against the run, else everything before its last MAIN_JOB_MINUTES when the run is a new model
    on the default built-in data budgeted in minutes only (no --max-steps); 0: no relations run."""
    clashing = [option for option, given in (("--data", config.data not in (None, "shapes")),
                                             ("--mixture", config.mixture is not None),
                                             ("--pretrained", bool(config.pretrained))) if given]
    if requested is None:
        budgeted_in_minutes = config.max_minutes is not None and config.max_steps is None
        return max(0.0, config.max_minutes - MAIN_JOB_MINUTES) if budgeted_in_minutes and not clashing else 0.0
    if requested < 0:
        raise ValueError(f"--relations-first must be >= 0 minutes, got {requested:g}")
    if requested == 0:
        return 0.0
    if config.max_minutes is None or requested >= config.max_minutes:
        raise ValueError(f"--relations-first {requested:g} is a part of --max-minutes, which must be longer "
                         f"(got {config.max_minutes or 0:g})")
    if clashing:
        raise ValueError(f"--relations-first trains a new model on the built-in mixtures; drop {', '.join(clashing)}")
    return requested


def relations_run(config: TrainConfig, minutes: float) -> TrainConfig:
    """The first run: the same new model on RELATIONS_FIRST for ``minutes``, in OUTPUT/relations-first. A
    --resume of a checkpoint of the second run resumes this one at its latest (done: it only saves again)."""
    folder = Path(config.output_dir) / FIRST_RUN_FOLDER
    resume = config.resume
    if resume not in (None, "latest") and not _inside(resume, folder):
        resume = "latest"
    return replace(config, output_dir=str(folder), mixture=dict(RELATIONS_FIRST), max_minutes=minutes,
                   max_steps=None, resume=resume)


def run_after_relations(config: TrainConfig, first: Path, minutes: float) -> TrainConfig:
    """The second run: the main job's own mixtures for the rest of the budget, from the first run's pipeline,
    trained as the new model it is: text encoder included, the first run's warmup (a pretrained model's would
    be 100 steps), a new model's cooldown and timestep density (a pretrained one's: none, uniform)."""
    sampling, logit_mean = config.timestep_density
    resume = config.resume
    if resume not in (None, "latest") and _inside(resume, first):
        resume = None  # the first run resumes from it; this one starts over from what that run ends with
    return replace(
        config, pretrained=str(first), model=None, unet={}, patch_size=None, text_encoder=None, text_width=None,
        text_layers=None, text_attention=None, max_text_length=None, vae=None,
        train_text_encoder=config.train_text_encoder if config.train_text_encoder is not None
        else config.text_encoder is None,
        warmup_steps=json.loads((first / "train_config.json").read_text())["warmup_steps"],
        lr_cooldown=config.cooldown, timestep_sampling=sampling, timestep_logit_mean=logit_mean,
        max_minutes=config.max_minutes - minutes, resume=resume)


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())
