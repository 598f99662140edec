"""The command line end to end, at a tiny budget: the main job's plumbing (every task family scored), sample
and evaluate."""

import json
import os
import subprocess
import sys

import pytest

from noiseunet.data.shapes import FAMILIES, RELATIONS_FIRST

TINY = json.dumps({"block_out_channels": [32, 32], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                   "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 2})


def noiseunet(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "noiseunet", *args], capture_output=True, text=True, env=env,
                            check=False)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_main_job_trains_samples_and_evaluates(tmp_path):
    """Both runs of a main job with relations first: a new model on RELATIONS_FIRST, then the main job's
    mixtures from its pipeline, trained as a new model (text encoder, warmup, cooldown, timestep density)."""
    out = tmp_path / "main"
    result = noiseunet("main", "--output", str(out), "--max-minutes", "0.2", "--relations-first", "0.05",
                       "--max-steps", "3", "--batch-size", "4", "--resolution", "16", "--unet-config", TINY,
                       "--images-per-prompt", "1")
    for name in ("samples.png", "evaluation.json", "evaluation.png", "unet", "train_summary.json",
                 "relations-first/unet", "relations-first/train_summary.json"):
        assert (out / name).exists(), name
    first = json.loads((out / "relations-first" / "train_config.json").read_text())
    second = json.loads((out / "train_config.json").read_text())
    assert first["mixture"] == RELATIONS_FIRST and first["max_minutes"] == 0.05 and first["max_steps"] is None
    assert first["pretrained"] is None and first["unet"] == json.loads(TINY)
    assert second["pretrained"] == str(out / "relations-first") and second["mixture"] is None
    assert second["train_text_encoder"] and second["warmup_steps"] == first["warmup_steps"] == 30
    assert (second["lr_cooldown"], second["timestep_sampling"], second["timestep_logit_mean"]) == (
        0.3, "logit_normal", 1.2)
    assert second["max_minutes"] == pytest.approx(0.15) and second["max_steps"] == 3
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 3
    assert result.stdout.startswith("relations first: 0.05 of the 0.2 minutes on single=0.04")
    report = json.loads((out / "evaluation.json").read_text())
    assert list(report["tasks"]) == list(FAMILIES)  # the main job trains on the mixture and scores every family
    for split in ("seen", "held_out"):
        assert 0 <= report[split]["all_correct"] <= 1 and report[split]["images"] > 0
        scores = [report["tasks"][family][split]["all_correct"] for family in FAMILIES]
        assert report[split]["all_correct"] == pytest.approx(sum(scores) / len(scores))
    assert report["tasks"]["single"]["seen"]["prompts"] == 45 and report["tasks"]["single"]["held_out"]["prompts"] == 9
    assert report["tasks"]["colour_binding"]["held_out"]["prompts"] == 8
    assert {"shapes", "colours", "binding"} <= set(report["tasks"]["colour_binding"]["seen"])
    assert "held_out" in result.stdout and "evaluation.png" in result.stdout
    assert all(any(line.startswith(family) for line in result.stdout.splitlines()) for family in FAMILIES)

    noiseunet("evaluate", str(out), "--families", "counting", "size", "--images-per-prompt", "1", "--steps", "2",
              "--device", "cpu")
    assert list(json.loads((out / "evaluation.json").read_text())["tasks"]) == ["counting", "size"]

    noiseunet("sample", str(out), "a red circle on the left", "a blue square", "--num-images", "2", "--steps", "2",
              "--scheduler", "ddim", "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "single"),
              "--device", "cpu")
    assert (tmp_path / "grid.png").exists() and len(list((tmp_path / "single").glob("*.png"))) == 4
    result = noiseunet("sample", str(out), "a cat", "--device", "gpu0", check=False)
    assert result.returncode == 1 and result.stderr.strip() == (
        "noiseunet sample: error: device 'gpu0' is not a device name (cpu, cuda, cuda:1, mps)")


def test_bad_arguments_give_one_line_errors(tmp_path):
    result = noiseunet("train", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("noiseunet train: error:")
    result = noiseunet("sample", str(tmp_path), "a cat", "--scheduler", "heun", check=False)
    assert result.returncode == 2 and "invalid choice: 'heun'" in result.stderr


def test_config_takes_inline_json_of_any_length_or_a_file(tmp_path):
    """Inline JSON longer than a file name may be (255 bytes) used to fail with 'File name too long'."""
    from noiseunet.cli import json_object

    five_levels = {"block_out_channels": [32, 32, 64, 64, 64],
                   "down_block_types": ["DownBlock2D"] * 2 + ["CrossAttnDownBlock2D"] * 3,
                   "up_block_types": ["CrossAttnUpBlock2D"] * 3 + ["UpBlock2D"] * 2}
    assert len(json.dumps(five_levels)) > 255
    assert json_object("--config", json.dumps(five_levels)) == five_levels
    (tmp_path / "unet.json").write_text(json.dumps(five_levels))
    assert json_object("--config", str(tmp_path / "unet.json")) == five_levels
    (tmp_path / "list.json").write_text("[1, 2]")
    for value, message in ((str(tmp_path / "missing.json"), "is neither a JSON object nor a file"),
                           ('{"block_out_channels": [32,', "--config: not valid JSON"),
                           (str(tmp_path / "list.json"), "expected a JSON object of UNet config keys, got list")):
        with pytest.raises(ValueError, match=message):
            json_object("--config", value)
