"""Options: one place for defaults and allowed values, one-line errors, model presets, the flip default."""

import json

import pytest
import torch
from test_cli import noiseunet
from test_training import tiny_config

from noiseunet import NoiseUNet
from noiseunet.cli import main as cli_main  # noqa: F401  (the CLI module imports cleanly)
from noiseunet.pipeline import SAMPLING
from noiseunet.segmentation.train import SegmentationConfig
from noiseunet.training import TrainConfig, train
from noiseunet.training.components import saved_sampling
from noiseunet.training.config import (DEFAULT_WARMUP_STEPS, MANY_CONCEPTS_GUIDANCE, MODEL_PRESETS,
                                       NEW_MODEL_COOLDOWN, NEW_MODEL_LOGIT_MEAN, SHAPES_SAMPLER)


@pytest.mark.parametrize("option, value, message", [
    ("prediction_type", "x0", "prediction_type (--prediction-type) must be one of 'epsilon', 'v_prediction'; got 'x0'"),
    ("mixed_precision", "fp8", "mixed_precision (--mixed-precision) must be one of"),
    ("model", "huge", "model (--model) must be one of 'tiny', 'small', 'small-patches', 'base', 'sd15'; got 'huge'"),
    ("report_to", "mlflow", "report_to (--report-to) must be one of"),
    ("batch_size", 0, "batch_size (--batch-size) must be >= 1; got 0"),
    ("caption_dropout", 1.5, "caption_dropout (--caption-dropout) must be in [0, 1]; got 1.5"),
    ("lr_cooldown", -0.1, "lr_cooldown (--lr-cooldown) must be in [0, 1]; got -0.1"),
    ("half_resolution_until", 1.0, "half_resolution_until (--half-resolution-until) must be in [0, 1); got 1.0"),
])
def test_a_wrong_option_is_a_one_line_error_when_the_config_is_built(option, value, message):
    with pytest.raises(ValueError) as error:
        TrainConfig(**{option: value})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_segmentation_options_are_checked_too():
    with pytest.raises(ValueError, match="loss \\(--loss\\) must be one of 'ce', 'dice', 'iou', 'ce\\+dice'; got 'bce'"):
        SegmentationConfig(loss="bce")


def test_the_command_line_says_it_in_one_line(tmp_path):
    result = noiseunet("train", "--output", str(tmp_path), "--batch-size", "0", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == "noiseunet train: error: batch_size (--batch-size) must be >= 1; got 0"
    assert not (tmp_path / "checkpoints").exists()


def test_flip_is_off_unless_asked_for():
    from noiseunet.cli import add_train_arguments, train_config
    import argparse

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    assert TrainConfig().flip is False and train_config(parser.parse_args([])).flip is False
    assert train_config(parser.parse_args(["--random-flip"])).flip is True


def test_sampling_defaults_live_in_one_place():
    from noiseunet.cli import add_sampling_arguments
    from noiseunet.evaluation.evaluate import evaluate
    import argparse
    import inspect

    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    args = parser.parse_args([])
    # Sampler, steps and guidance: None everywhere, the pipeline's own (NoiseUNetPipeline.sampler and
    # .guidance_scale, else SAMPLING's).
    assert (args.scheduler, args.steps, args.guidance_scale, args.seed) == (None, None, None, SAMPLING.seed)
    defaults = {k: p.default for k, p in inspect.signature(evaluate).parameters.items()}
    assert (defaults["scheduler"], defaults["steps"], defaults["guidance_scale"], defaults["seed"]) == (
        None, None, None, SAMPLING.seed)


@pytest.mark.parametrize("preset", ["tiny", "small", "small-patches", "base"])
def test_presets_build_and_train_a_step(tmp_path, preset):
    output = train(tiny_config(tmp_path / preset, model=preset, unet={}, max_steps=1, batch_size=2))
    unet_config = json.loads((output / "unet" / "config.json").read_text())
    assert list(unet_config["block_out_channels"]) == list(MODEL_PRESETS[preset].unet["block_out_channels"])
    text_config = json.loads((output / "text_encoder" / "config.json").read_text())
    assert text_config["hidden_size"] == MODEL_PRESETS[preset].text_hidden_size == unet_config["cross_attention_dim"]
    assert text_config["num_hidden_layers"] == MODEL_PRESETS[preset].text_layers
    assert json.loads((output / "train_summary.json").read_text())["steps"] == 1


def test_the_sd15_preset_is_stable_diffusion_1_5s_unet():
    """Built on the meta device (no memory): diffusers' UNet with SD 1.5's config has the same 859.5M weights."""
    from diffusers import UNet2DConditionModel

    preset = MODEL_PRESETS["sd15"]
    config = dict(**preset.unet, sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768)
    with torch.device("meta"):
        ours, theirs = NoiseUNet(**config), UNet2DConditionModel(**config)
    shapes = lambda model: {k: tuple(v.shape) for k, v in model.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert sum(p.numel() for p in ours.parameters()) == 859_520_964


def test_mixture_from_the_command_line_sets_the_families_the_trainer_draws():
    import argparse

    from noiseunet.cli import add_train_arguments, train_config
    from noiseunet.data import open_source

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    config = train_config(parser.parse_args(["--mixture", "single=0", "relative_position=3", "size=1"]))
    assert config.mixture == {"single": 0.0, "relative_position": 3.0, "size": 1.0}
    source = open_source(config.data, mixture=config.mixture)
    families = [source[i]["spec"].family for i in range(400)]
    assert set(families) == {"relative_position", "size"}
    assert 0.65 < families.count("relative_position") / len(families) < 0.85  # 3 to 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--mixture", "single"])


@pytest.mark.parametrize("mixture, data, message", [
    ({"single": 1, "colour": 1}, None, "--mixture needs FAMILY=SHARE with families of single, two_objects"),
    ({"single": -1, "size": 2}, None, "shares >= 0"),
    ({"single": 0}, None, "some positive"),
    ({"single": 1}, "my_folder", "--mixture sets the families of the built-in shapes data, not of --data my_folder"),
])
def test_a_wrong_mixture_is_a_one_line_error(mixture, data, message):
    with pytest.raises(ValueError) as error:
        TrainConfig(mixture=mixture, data=data)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_text_encoder_options_need_an_encoder_built_from_scratch():
    with pytest.raises(ValueError, match="--text-width, --text-attention bidirectional shape the text encoder built"):
        TrainConfig(text_width=128, text_attention="bidirectional", text_encoder="openai/clip-vit-large-patch14")
    with pytest.raises(ValueError, match="--text-attention causal shape the text encoder built from scratch"):
        TrainConfig(data="my_images", text_attention="causal", pretrained="runs/base")
    with pytest.raises(ValueError, match="multiple of the preset's 2 attention heads; got 63"):
        TrainConfig(text_width=63)
    assert TrainConfig(text_width=128, text_layers=3).text_layers == 3


@pytest.mark.parametrize("device, processes, batch, rate", [
    ("cpu", 1, 32, 1e-3),
    ("cuda", 1, 512, 4e-3),  # sqrt(512 / 32) = 4
    ("cuda", 4, 512, 8e-3),  # the global batch: sqrt(2048 / 32) = 8
])
def test_the_device_picks_the_batch_and_its_learning_rate(device, processes, batch, rate):
    config = TrainConfig().for_device(torch.device(device), processes)
    assert config.batch_size == batch and config.learning_rate == pytest.approx(rate)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_batch_or_rate_the_user_sets_is_kept(device):
    device = torch.device(device)
    assert TrainConfig(batch_size=64).for_device(device).learning_rate == 1e-3  # no scaling of a chosen batch
    assert TrainConfig(learning_rate=0.0).for_device(device).learning_rate == 0.0
    assert TrainConfig(learning_rate=2e-4).for_device(device, 8).learning_rate == 2e-4
    assert TrainConfig(batch_size=8).for_device(device).batch_size == 8


@pytest.mark.parametrize("cores, local_processes, workers", [(16, 1, 8), (16, 4, 2), (8, 1, 4), (2, 1, 2)])
def test_gpu_loader_workers_share_half_the_cores_among_the_gpu_processes(monkeypatch, cores, local_processes, workers):
    from noiseunet.training import run

    monkeypatch.setattr(run.os, "cpu_count", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    assert run.gpu_loader_workers() == workers


def test_a_new_model_for_folder_data_pools_the_caption_into_the_timestep_embedding(tmp_path):
    """Data of many concepts gets addition_embed_type="text"; the built-in shapes and sd15 keep their preset,
    and --config can turn it off."""
    folder = TrainConfig(data=str(tmp_path))
    assert folder.unet_config["addition_embed_type"] == "text"
    assert folder.unet_config["addition_embed_type_num_heads"] == MODEL_PRESETS["small"].text_heads
    assert "addition_embed_type" not in TrainConfig().unet_config
    assert "addition_embed_type" not in TrainConfig(data="shapes").unet_config
    assert "addition_embed_type" not in TrainConfig(data=str(tmp_path), model="sd15").unet_config
    assert TrainConfig(data=str(tmp_path), unet={"addition_embed_type": None}).unet_config["addition_embed_type"] is None


def test_a_new_text_encoder_for_folder_data_is_bidirectional_unless_told(tmp_path):
    assert TrainConfig(data=str(tmp_path)).bidirectional_text
    assert not TrainConfig(data=str(tmp_path), text_attention="causal").bidirectional_text
    for config in (TrainConfig(), TrainConfig(data="shapes"), TrainConfig(data=str(tmp_path), model="sd15")):
        assert not config.bidirectional_text
    assert TrainConfig(text_attention="bidirectional").bidirectional_text


def test_a_budgeted_run_of_a_new_model_cools_its_learning_rate_down_unless_told(tmp_path):
    for config in (TrainConfig(), TrainConfig(data="shapes"), TrainConfig(data=str(tmp_path)),
                   TrainConfig(data=str(tmp_path), model="sd15"), TrainConfig(max_minutes=None, max_steps=100)):
        assert config.cooldown == NEW_MODEL_COOLDOWN == 0.3
    assert TrainConfig(max_minutes=None).cooldown == 0.0  # no end to cool down to
    assert TrainConfig(data=str(tmp_path), pretrained=str(tmp_path)).cooldown == 0.0  # a fine-tune: constant
    assert TrainConfig(lr_cooldown=0.0).cooldown == 0.0
    assert TrainConfig(lr_cooldown=0.5).cooldown == 0.5


def test_the_warmup_is_the_presets_for_a_new_model_at_the_cpus_batch_unless_told(tmp_path):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert TrainConfig().for_device(cpu).warmup_steps == MODEL_PRESETS["small-patches"].warmup_steps == 30
    assert TrainConfig().for_device(gpu).warmup_steps == DEFAULT_WARMUP_STEPS  # the GPU's batch and scaled rate
    assert TrainConfig(data=str(tmp_path)).for_device(cpu).warmup_steps == DEFAULT_WARMUP_STEPS  # small
    assert TrainConfig(pretrained="runs/base").for_device(cpu).warmup_steps == DEFAULT_WARMUP_STEPS
    assert TrainConfig(warmup_steps=7).for_device(gpu).warmup_steps == 7


def test_a_new_small_model_trains_noisier_timesteps_unless_told(tmp_path):
    assert TrainConfig(data=str(tmp_path)).timestep_density == ("logit_normal", 1.5)  # a folder's small
    for config in (TrainConfig(), TrainConfig(data="shapes")):  # small-patches: its preset's mean
        assert config.timestep_density == ("logit_normal", MODEL_PRESETS["small-patches"].timestep_logit_mean)
    assert TrainConfig(model="small").timestep_density == ("logit_normal", MODEL_PRESETS["small"].timestep_logit_mean)
    assert TrainConfig(data=str(tmp_path), model="base").timestep_density == ("logit_normal", NEW_MODEL_LOGIT_MEAN)
    assert TrainConfig(data=str(tmp_path), timestep_logit_mean=1.0).timestep_density == ("logit_normal", 1.0)
    assert TrainConfig(data=str(tmp_path), model="sd15").timestep_density == ("logit_normal", 1.0)
    assert TrainConfig(data=str(tmp_path), pretrained="runs/base").timestep_density == ("uniform", 1.0)
    tuned = TrainConfig(pretrained="runs/base", timestep_sampling="logit_normal")  # fine-tuning keeps the middle
    assert tuned.timestep_density == ("logit_normal", 1.0)


def test_a_new_model_saves_the_sampling_its_data_measured_best(tmp_path):
    """Folder data's pipeline samples at MANY_CONCEPTS_GUIDANCE with the package's sampler; the built-in shapes'
    with the package's guidance and SHAPES_SAMPLER; sd15 of a folder with the package's both; a fine-tune keeps
    whatever its --pretrained folder saved."""
    assert saved_sampling(TrainConfig(data=str(tmp_path))) == (MANY_CONCEPTS_GUIDANCE, None)
    for config in (TrainConfig(), TrainConfig(data="shapes"), TrainConfig(model="small")):
        assert saved_sampling(config) == (None, SHAPES_SAMPLER)
    assert saved_sampling(TrainConfig(data=str(tmp_path), model="sd15")) == (None, None)
    base = tmp_path / "base"
    base.mkdir()
    tuned = TrainConfig(data=str(tmp_path), pretrained=str(base))
    assert saved_sampling(tuned) == (None, None)  # no model_index.json
    saved = {"_class_name": "NoiseUNetPipeline", "default_guidance_scale": 6.5, "default_scheduler": "euler_a",
             "default_steps": 30}
    (base / "model_index.json").write_text(json.dumps(saved))
    assert saved_sampling(tuned) == (6.5, ("euler_a", 30))
    assert saved_sampling(TrainConfig(pretrained=str(base))) == (6.5, ("euler_a", 30))  # not the shapes' own
    (base / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert saved_sampling(tuned) == (None, None)

