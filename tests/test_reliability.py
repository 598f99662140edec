"""Faults lose nothing: SIGKILL at random moments, damaged checkpoints, a full disk, NaNs, pickle files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from noiseunet import NoiseUNetPipeline
from noiseunet.files import from_pretrained
from noiseunet.text import load_text_encoder
from noiseunet.training import train
from noiseunet.training.checkpoint import resolve_resume, verify

from test_cli import TINY, noiseunet
from test_training import tiny_config

TRAIN_ARGS = ["--resolution", "16", "--batch-size", "4", "--unet-config", TINY, "--mixed-precision", "no",
              "--max-minutes", "0", "--log-every", "1", "--validate-every", "0"]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return {**load_file(run / "unet" / "diffusion_pytorch_model.safetensors"),
            **{f"text.{k}": v for k, v in load_file(run / "text_encoder" / "model.safetensors").items()}}


def start_training(run: Path, steps: int, resume: bool, options: list[str] = TRAIN_ARGS) -> subprocess.Popen:
    args = [sys.executable, "-m", "noiseunet", "train", "--output", str(run), "--max-steps", str(steps),
            "--checkpoint-every", "3", *options, *(["--resume", "latest"] if resume else [])]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_to_the_process_group_saves_a_checkpoint_and_the_pipeline(tmp_path, stop):
    """What Ctrl-C (SIGINT) or `timeout`/Slurm (SIGTERM) do: signal every process of the group, loader workers
    included. The run finishes its step, saves, and exits 0."""
    args = [sys.executable, "-m", "noiseunet", "train", "--output", str(tmp_path), "--max-steps", "1000",
            "--num-workers", "2", *TRAIN_ARGS]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    while logged_step(tmp_path) < 2 and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, stop)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert f"stopped by signal {stop}" in output
    checkpoint = resolve_resume(tmp_path, "latest")
    assert verify(checkpoint) is None
    saved_step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    assert saved_step >= 2 and (tmp_path / "model_index.json").exists()
    assert json.loads((tmp_path / "train_summary.json").read_text())["steps"] == saved_step


def logged_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """float32 on CPU: killed by SIGKILL at random steps and once while a checkpoint is being written, resumed
    with --resume latest each time, the run ends bitwise where the uninterrupted run ends."""
    steps = 30
    assert start_training(tmp_path / "straight", steps, resume=False).wait() == 0

    run, rng = tmp_path / "killed", np.random.default_rng(0)
    kill_points = sorted(rng.choice(np.arange(2, steps - 2), size=3, replace=False).tolist())
    kills = 0
    for point in [*kill_points, "while saving"]:
        process = start_training(run, steps, resume=kills > 0)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            saving = any((run / "checkpoints").glob("*.tmp")) if (run / "checkpoints").exists() else False
            if (point == "while saving" and saving) or (point != "while saving" and logged_step(run) >= point):
                process.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        assert process.wait() in (0, -signal.SIGKILL), process.stderr.read()
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    process = start_training(run, steps, resume=True)
    assert process.wait() == 0, process.stderr.read()

    straight, resumed = final_weights(tmp_path / "straight"), final_weights(run)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, steps + 1))
    assert not list(run.glob(".staging*")) and all(verify(c) is None for c in (run / "checkpoints").glob("step-*"))


def test_a_lora_run_killed_by_sigkill_resumes_to_the_uninterrupted_adapters(tmp_path):
    """diffusers #12689 dropped the adapters on resume. Killed mid-run, the LoRA run comes back with its
    adapters and their optimizer state from the checkpoint and ends bitwise on the uninterrupted adapters."""
    steps, base = 12, train(tiny_config(tmp_path / "base", max_steps=1, report_to="none"))
    # The base brings its own UNet: drop the --unet-config of TRAIN_ARGS.
    lora = ["--pretrained", str(base), "--lora-rank", "4", "--learning-rate", "0.05", "--train-text-encoder"]
    options = [a for a in TRAIN_ARGS if a not in ("--unet-config", TINY)] + lora
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert start_training(straight, steps, False, options).wait() == 0
    process = start_training(killed, steps, False, options)
    while process.poll() is None and logged_step(killed) < 7:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before the kill"
    assert logged_step(killed) < steps
    process = start_training(killed, steps, True, options)
    assert process.wait() == 0, process.stderr.read()
    a, b = (load_file(run / "pytorch_lora_weights.safetensors") for run in (straight, killed))
    assert a.keys() == b.keys() and any("text_encoder" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_checkpoint_is_skipped_and_named(tmp_path, caplog):
    output = train(tiny_config(tmp_path / "run", max_steps=4, checkpoint_every=2))
    newest = output / "checkpoints" / "step-0000004"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    assert verify(newest) == "model.safetensors does not match its manifest"
    assert resolve_resume(output, "latest") == output / "checkpoints" / "step-0000002"
    assert "skipping checkpoint" in caplog.text
    with pytest.raises(ValueError, match="damaged checkpoint: model.safetensors does not match"):
        resolve_resume(output, str(newest))
    (newest / "manifest.json").unlink()  # a save killed before its manifest: not a checkpoint
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(output, str(newest))


def test_failed_save_removes_its_files_and_keeps_the_previous_checkpoint(tmp_path):
    """The disk fills up (a file-size limit makes every write past 64 KiB fail, as ENOSPC would) while
    checkpoint 2 is written: a one-line error names the intact checkpoint 1, which still resumes."""
    script = textwrap.dedent(f"""
        import resource, signal, torch
        from accelerate import Accelerator
        from diffusers.training_utils import EMAModel
        from noiseunet.training.checkpoint import save_checkpoint, resolve_resume
        accelerator = Accelerator(cpu=True)
        model = torch.nn.Linear(256, 256)
        optimizer = torch.optim.AdamW(model.parameters())
        model, optimizer = accelerator.prepare(model, optimizer)
        ema = EMAModel(model.parameters())
        save_checkpoint(accelerator, {str(tmp_path)!r}, {{"step": 1}}, ema, list(model.parameters()), 2)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        try:
            save_checkpoint(accelerator, {str(tmp_path)!r}, {{"step": 2}}, ema, list(model.parameters()), 2)
        except OSError as error:
            print(error)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print(resolve_resume({str(tmp_path)!r}, "latest"))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    error, latest = result.stdout.strip().splitlines()[-2:]
    assert "could not save checkpoint" in error and "step-0000002" in error
    assert "File too large" in error and "step-0000001 is intact" in error
    assert latest.endswith("step-0000001")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000001"]
    assert verify(tmp_path / "checkpoints" / "step-0000001") is None


@pytest.mark.parametrize("decided_on_device", [False, True], ids=["host", "device"])
def test_nan_training_stops_with_a_message_and_saves_no_nan(tmp_path, monkeypatch, decided_on_device):
    """A learning rate of 1e30 sends the weights to ~1e30 after one step; every later loss overflows. Those
    steps are skipped and counted; after five in a row the run stops, and no checkpoint holds a NaN.

    "device" runs the GPU's guard on the CPU: the fused AdamW kernel skips the update from a device flag
    (``found_inf``), which the host reads only with the log."""
    import noiseunet.training.run as run_module

    monkeypatch.setattr(run_module, "skips_on_device", lambda device: decided_on_device)
    with pytest.raises(FloatingPointError, match="NaN/Inf for 5 steps in a row at step 5; lower --learning-rate"):
        train(tiny_config(tmp_path / "run", max_steps=20, learning_rate=1e30, checkpoint_every=1))
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-0000004", "step-0000005"]  # saved after skipped steps too
    for checkpoint in checkpoints:
        for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):
            assert all(torch.isfinite(t).all() for t in load_file(checkpoint / name).values()), name
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(records[0]["loss"]) and [r["loss"] for r in records[1:]] == [None] * 4


def test_nan_weights_are_never_written(tmp_path):
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from noiseunet.training.checkpoint import save_checkpoint

    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not saving step-0000003: the weights hold NaN or Inf"):
        save_checkpoint(Accelerator(cpu=True), tmp_path, {"step": 3}, EMAModel(model.parameters()),
                        list(model.parameters()), 2)
    assert not (tmp_path / "checkpoints").exists()


def test_checkpoints_hold_no_general_pickle(tmp_path):
    """Weights and EMA are safetensors; the rest (optimizer, LR schedule, RNG) is read the way accelerate reads
    it, with torch's weights_only unpickler (tensors, containers and numpy arrays only)."""
    from accelerate.utils import load

    output = train(tiny_config(tmp_path / "run", max_steps=1, checkpoint_every=1))
    checkpoint = output / "checkpoints" / "step-0000001"
    for path in checkpoint.iterdir():
        if path.suffix in (".bin", ".pkl"):
            load(path, weights_only=True)  # raises on any other class: nothing in it can run code
        else:
            assert path.suffix in (".safetensors", ".json"), path.name


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tokenizer, text_encoder, pixel_pipe):
    tokenizer.save_pretrained(tmp_path / "clip")
    text_encoder.save_pretrained(tmp_path / "clip")
    weights = tmp_path / "clip" / "model.safetensors"  # transformers 5 writes only safetensors: convert by hand
    torch.save(load_file(weights), tmp_path / "clip" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match=r"clip: has pickle weights \(.bin\) and no .safetensors.*--allow-pickle"):
        load_text_encoder(str(tmp_path / "clip"))
    _, loaded = load_text_encoder(str(tmp_path / "clip"), allow_pickle=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), text_encoder.state_dict().values()))

    pixel_pipe.save_pretrained(tmp_path / "pipe", safe_serialization=False)
    with pytest.raises(ValueError, match="pipe: has pickle weights"):
        from_pretrained(NoiseUNetPipeline, tmp_path / "pipe")
    assert from_pretrained(NoiseUNetPipeline, tmp_path / "pipe", allow_pickle=True).unet is not None
    result = noiseunet("sample", str(tmp_path / "pipe"), "a cat", "--steps", "1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("noiseunet sample: error:") and "pickle" in result.stderr


def test_config_that_does_not_match_the_weights_is_a_one_line_error(tmp_path, pixel_pipe):
    pixel_pipe.save_pretrained(tmp_path / "pipe")
    config_file = tmp_path / "pipe" / "unet" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "block_out_channels": [32, 64]}))
    result = noiseunet("sample", str(tmp_path / "pipe"), "a cat", "--steps", "1", check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last.startswith("noiseunet sample: error:"), result.stderr
    assert "pipe: a config.json does not match its weights: down_blocks.1" in last and "has shape" in last
