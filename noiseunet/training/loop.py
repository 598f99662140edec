"""``train(TrainConfig)`` -> a pipeline folder that ``NoiseUNetPipeline`` (and, with a VAE, diffusers'
``StableDiffusionPipeline``) loads.

Set-up, the step and the end each live apart (``run.py``, ``step.py``); this is the loop between them: a
time budget, clean stops on SIGINT/SIGTERM, checkpoints and validation grids when due.
"""

from pathlib import Path

from ..runtime import any_process, stop_requests
from .config import TrainConfig
from .run import finish_run, start_run
from .step import train_step


def train(config: TrainConfig) -> Path:
    """Train a NoiseUNet (and, when built from scratch, its text encoder) and save the pipeline folder."""
    run = start_run(config)
    try:
        with stop_requests() as stop:
            while run.step < run.max_steps and not any_process(run.accelerator, run.out_of_time or bool(stop.requested)):
                train_step(run)
                run.after_step()
    finally:
        run.batches.close()
    return finish_run(run, stop.requested)
