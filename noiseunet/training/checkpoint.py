"""Checkpoints: the full training state in ``OUTPUT/checkpoints/step-NNNNNNN``, written atomically.

A checkpoint is written under a temporary name and renamed into place once complete, with a
``trainer_state.json`` that is written last; a folder without it is incomplete and never resumed from.
"""

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if (p / STATE_FILE).is_file() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """``resume`` = None, "latest" (None when there is no checkpoint yet) or a checkpoint folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {STATE_FILE})")
    return path


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, state: dict, keep: int) -> Path:
    """Save the accelerator state (models, optimizer, LR schedule, EMA, RNGs) plus ``state`` (step, ...)."""
    final = checkpoint_dir(output_dir) / f"step-{state['step']:07d}"
    temporary = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
