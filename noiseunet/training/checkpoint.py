"""Checkpoints: the full training state in ``OUTPUT/checkpoints/step-NNNNNNN``, written atomically.

A checkpoint is written under a temporary name, then gets a ``manifest.json`` (step, every file with its
size and SHA-256), written last, and is renamed into place. ``--resume latest`` takes the newest
checkpoint whose files all match their manifest, so a run killed while saving, or a file damaged
later, falls back to the previous one. Weights and the EMA are safetensors; the optimizer, LR schedule
and RNG files accelerate writes are read back with torch's ``weights_only`` unpickler, which cannot run
code. Nothing is saved when a weight is NaN or Inf, and a save that fails (disk full) removes its
partial files and names the checkpoint that is still intact.
"""

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
EMA_FILE = "ema.safetensors"

logger = logging.getLogger(__name__)


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints with a manifest (not yet verified), oldest first."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if (p / MANIFEST_FILE).is_file() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int) -> None:
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps({"step": step, "files": files}, indent=2))


def verify(folder: Path) -> str | None:
    """None when every file of the manifest is there with its size and hash, else what is wrong."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"unreadable manifest ({error})"
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
            return f"{name} does not match its manifest"
    return None


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """``resume`` = None, "latest" (the newest intact checkpoint, None when there is none) or a folder."""
    if resume is None:
        return None
    if resume == "latest":
        for candidate in reversed(complete_checkpoints(output_dir)):
            problem = verify(candidate)
            if problem is None:
                return candidate
            logger.warning("skipping checkpoint %s: %s", candidate, problem)
        return None
    path = Path(resume)
    if not (path / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {MANIFEST_FILE})")
    problem = verify(path)
    if problem is not None:
        raise ValueError(f"--resume {resume}: damaged checkpoint: {problem}")
    return path


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, state: dict, ema: EMAModel,
                    trained: list[torch.Tensor], keep: int, process_state: dict | None = None) -> Path:
    """Save models, optimizer, LR schedule and RNGs (accelerate), the EMA and ``state`` (step, ...).

    ``trained`` are the trained parameters, checked (with the EMA) for NaN/Inf before anything is written.
    ``process_state`` is what differs between processes (a data stream's position): each writes its own.
    """
    final = checkpoint_dir(output_dir) / f"step-{state['step']:07d}"
    if any(not torch.isfinite(t).all() for t in [*trained, *ema.shadow_params]):
        raise FloatingPointError(f"not saving {final.name}: the weights hold NaN or Inf")
    temporary = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary), safe_serialization=True)
        (temporary / f"process_{accelerator.process_index}.json").write_text(json.dumps(process_state or {}))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ema_state = ema.state_dict()
            shadow = ema_state.pop("shadow_params")
            save_file({f"{i}": t.detach().contiguous().cpu() for i, t in enumerate(shadow)}, temporary / EMA_FILE)
            (temporary / STATE_FILE).write_text(json.dumps({**state, "ema": ema_state}, indent=2))
            write_manifest(temporary, state["step"])
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
    except (OSError, SafetensorError) as error:  # disk full, quota, permissions; safetensors wraps its own
        shutil.rmtree(temporary, ignore_errors=True)
        intact = complete_checkpoints(output_dir)
        previous = f"the previous checkpoint {intact[-1]} is intact" if intact else "there is no earlier checkpoint"
        raise OSError(getattr(error, "errno", None), f"could not save checkpoint {final} ({error}); {previous}") from error
    if accelerator.is_main_process:
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path, ema: EMAModel) -> tuple[dict, dict]:
    """Restore what ``save_checkpoint`` saved; returns (state, this process's process_state)."""
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("processes", 1) != accelerator.num_processes:
        raise ValueError(f"--resume {path}: written by {state.get('processes', 1)} process(es), this run has "
                         f"{accelerator.num_processes}; resume with the same number of processes")
    accelerator.load_state(str(path))
    shadow = load_file(path / EMA_FILE)
    ema.load_state_dict({**state.pop("ema"), "shadow_params": [shadow[f"{i}"] for i in range(len(shadow))]})
    ema.to(accelerator.device)
    return state, json.loads((path / f"process_{accelerator.process_index}.json").read_text())
