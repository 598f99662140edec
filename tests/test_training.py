"""The trainer: objective against a hand computation, learning, resume, data sources, latent space."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file

from noiseunet import NoiseUNet, NoiseUNetPipeline
from noiseunet.data.export import save_shapes_folder
from noiseunet.pipeline import SAMPLING
from noiseunet.training import TrainConfig, train
from noiseunet.training.config import MANY_CONCEPTS_GUIDANCE, SHAPES_SAMPLER
from noiseunet.training.diffusion import diffusion_loss, draw_noise

TINY_UNET = dict(block_out_channels=(32, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=2)


def tiny_config(output: Path, **overrides) -> TrainConfig:
    values = dict(output_dir=str(output), resolution=16, unet=dict(TINY_UNET), batch_size=4, max_steps=4,
                  max_minutes=None, warmup_steps=0, mixed_precision="no", log_every=1, checkpoint_every=1000)
    return TrainConfig(**{**values, **overrides})


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_loss_matches_a_hand_computation(prediction_type, snr_gamma):
    torch.manual_seed(0)
    unet = NoiseUNet(**TINY_UNET, sample_size=8, cross_attention_dim=16)
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    x0, context = torch.randn(3, 3, 8, 8), torch.randn(3, 5, 16)
    loss = diffusion_loss(unet, x0, context, scheduler, torch.Generator().manual_seed(7), snr_gamma)

    g = torch.Generator().manual_seed(7)  # replay the same draws by hand
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    target = noise if prediction_type == "epsilon" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    per_sample = ((unet(noisy, t, context).sample - target) ** 2).mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        snr = (alpha_bar / (1 - alpha_bar)).flatten()
        per_sample = per_sample * snr.clamp(max=snr_gamma) / (snr + (prediction_type == "v_prediction"))
    torch.testing.assert_close(loss, per_sample.mean(), rtol=1e-5, atol=1e-6)


def test_logit_normal_timesteps_are_sd3s_density_drawn_from_each_samples_generator():
    x0 = torch.zeros(4000, 1, 1, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(len(x0))]
    _, timesteps = draw_noise(x0, generators, 1000, timesteps_from="logit_normal")
    g = torch.Generator().manual_seed(3)  # sample 3, by hand: its noise, then a standard normal through a sigmoid
    torch.randn((1, 1, 1, 1), generator=g)
    assert timesteps[3] == int(torch.sigmoid(torch.randn(1, generator=g)) * 1000)
    middle = ((timesteps >= 250) & (timesteps < 750)).float().mean()
    assert 0.65 < middle < 0.75 and timesteps.min() >= 0 and timesteps.max() < 1000  # uniform: 0.5 (logit-normal: 0.70)
    _, uniform = draw_noise(x0, [torch.Generator().manual_seed(i) for i in range(len(x0))], 1000)
    assert 0.47 < ((uniform >= 250) & (uniform < 750)).float().mean() < 0.53
    _, noisier = draw_noise(x0, [torch.Generator().manual_seed(i) for i in range(len(x0))], 1000,
                            timesteps_from="logit_normal", logit_mean=1.0)
    assert (noisier < 250).float().mean() < 0.03 and 0.09 < (noisier >= 900).float().mean() < 0.14  # 1.8%, 11.6%
    with pytest.raises(ValueError, match="--timestep-logit-mean shifts --timestep-sampling logit_normal"):
        TrainConfig(timestep_sampling="uniform", timestep_logit_mean=1.0)
    for config, low, high in ((TrainConfig(model="tiny"), 830, 885),  # a new model's: 1000 * sigmoid(1.8) = 858
                              (TrainConfig(model="small"), 790, 845),  # a folder's small: 1000 * sigmoid(1.5) = 818
                              (TrainConfig(), 740, 800)):  # the shapes' small-patches: 1000 * sigmoid(1.2) = 769
        _, default = draw_noise(x0, [torch.Generator().manual_seed(i) for i in range(len(x0))], 1000,
                                timesteps_from="logit_normal", logit_mean=config.timestep_density[1])
        assert low < default.float().median() < high
    assert TrainConfig(model="tiny").timestep_density == ("logit_normal", 1.8)
    assert TrainConfig(model="small").timestep_density == ("logit_normal", 1.5)
    assert TrainConfig().timestep_density == ("logit_normal", 1.2)
    assert TrainConfig(pretrained="runs/base").timestep_density == ("uniform", 1.0)  # as it was trained


def shapes_folder(root: Path, count: int = 36) -> Path:
    """A folder of generated image-caption pairs in the documented metadata.jsonl layout."""
    return save_shapes_folder(root, count, size=16, seed=1)


def test_training_on_a_folder_learns_and_writes_every_output(tmp_path):
    prompts = ["a red circle on the left", "a white square in the middle"]
    output = train(tiny_config(tmp_path / "run", data=str(shapes_folder(tmp_path / "data")), max_steps=60,
                               batch_size=12, learning_rate=2e-3, validation_prompts=prompts, validate_every=30))
    for name in ("model_index.json", "unet", "text_encoder", "tokenizer", "scheduler", "metrics.jsonl", "loss.png",
                 "samples/step-30.png", "samples/step-60.png", "train_summary.json", "checkpoints/step-0000060"):
        assert (output / name).exists(), name
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 61))
    assert all(r["images_per_second"] > 0 for r in records)
    rates = [r["lr"] for r in records]  # a new model cools the rate down over the last 30% of the steps
    assert rates[:40] == [2e-3] * 40 and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(later < earlier for earlier, later in zip(rates[42:], rates[43:]))
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-15:]) < 0.6 * np.mean(losses[:5])
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["steps"] == 60 and summary["images_seen"] == 720
    pipe = NoiseUNetPipeline.from_pretrained(output)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.guidance_scale == MANY_CONCEPTS_GUIDANCE  # folder data's guidance, saved in model_index.json
    assert pipe.sampler == (SAMPLING.scheduler, SAMPLING.steps)  # and the package's sampler
    assert type(pipe.text_encoder).__name__ == "BidirectionalCLIPTextModel"  # and its text encoder
    images = pipe("a red circle on the left", num_inference_steps=3, output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_saved_weights_are_the_exponential_moving_average(tmp_path):
    """Two steps: EMA = d * w1 + (1 - d) * w2 with the warmup decay after step 2 counted in images
    (training/ema.py): d = 1 - k (1 + k)^-power for k = batch 4 / reference batch 32 (diffusers' 1 - 2^-power
    at k = 1)."""
    output = train(tiny_config(tmp_path / "run", max_steps=2, checkpoint_every=1, checkpoints_total_limit=5,
                               ema_power=0.75))
    raw = [load_file(output / "checkpoints" / f"step-000000{k}" / "model.safetensors") for k in (1, 2)]
    ema = load_file(output / "unet" / "diffusion_pytorch_model.safetensors")
    k = 4 / 32
    decay = 1 - k * (1 + k) ** -0.75
    for name, value in ema.items():
        torch.testing.assert_close(value, decay * raw[0][name] + (1 - decay) * raw[1][name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ema[k], raw[1][k]) for k in ema)


def test_v_prediction_run_saves_its_prediction_type_and_samplers_start_from_pure_noise(tmp_path):
    """A new model's samplers inherit "trailing" spacing: 20 DPM-Solver++ steps start at t = 999, not 940."""
    from noiseunet.pipeline import use_scheduler

    output = train(tiny_config(tmp_path / "run", prediction_type="v_prediction", offset_noise=0.1, max_steps=2))
    assert json.loads((output / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    pipe = NoiseUNetPipeline.from_pretrained(output)
    assert pipe.sampler == SHAPES_SAMPLER  # the built-in shapes' sampler, saved in model_index.json
    sampler = use_scheduler(pipe, "dpm++").scheduler
    sampler.set_timesteps(20)
    assert sampler.timesteps[0] == 999 and sampler.timesteps[-1] == 49


@pytest.mark.parametrize("cooldown", [0.0, 0.5])
def test_resumed_run_reaches_the_same_weights(tmp_path, cooldown):
    """Stop at step 3 and resume to step 6: bitwise the weights of an uninterrupted 6-step run (float32, CPU),
    also while the learning rate cools down over the last 3 steps."""
    train(tiny_config(tmp_path / "straight", max_steps=6, lr_cooldown=cooldown))
    train(tiny_config(tmp_path / "resumed", max_steps=3, lr_cooldown=0.0))  # the 6-step run's first half, at full rate
    train(tiny_config(tmp_path / "resumed", max_steps=6, resume="latest", lr_cooldown=cooldown))
    for folder in ("unet", "text_encoder"):
        name = "diffusion_pytorch_model.safetensors" if folder == "unet" else "model.safetensors"
        a, b = (load_file(tmp_path / run / folder / name) for run in ("straight", "resumed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    resumed_log = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in resumed_log] == list(range(1, 7))


def test_a_resumed_runs_time_budget_counts_the_time_before_the_stop(tmp_path):
    """Resumed with a budget shorter than what it already trained, a run takes no more steps, and its summary
    counts the minutes of both parts."""
    first = train(tiny_config(tmp_path / "run", max_steps=2, checkpoint_every=2))
    before = json.loads((first / "train_summary.json").read_text())["minutes"]
    train(tiny_config(tmp_path / "run", max_steps=10, max_minutes=before / 2, resume="latest"))
    summary = json.loads((first / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["minutes"] >= before / 2


def test_folder_data_with_caption_lists_in_latent_space(tmp_path, vae):
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(6):
        Image = __import__("PIL.Image", fromlist=["Image"])
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(data / f"{i}.jpg")
        rows.append({"file_name": f"{i}.jpg", "text": [f"picture {i}", f"image number {i}"]})
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    vae.save_pretrained(tmp_path / "vae")
    output = train(tiny_config(tmp_path / "run", data=str(data), resolution=32, vae=str(tmp_path / "vae"),
                               beta_schedule="scaled_linear", max_steps=2))
    unet_config = json.loads((output / "unet" / "config.json").read_text())
    assert unet_config["in_channels"] == 4 and unet_config["sample_size"] == 16
    assert unet_config["addition_embed_type"] == "text"  # folder data: the caption pooled into every block
    sd = StableDiffusionPipeline.from_pretrained(output, safety_checker=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    images = sd("picture 1", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert images.shape == (1, 32, 32, 3)


def test_pretrained_text_encoder_stays_frozen(tmp_path, tokenizer, text_encoder):
    tokenizer.save_pretrained(tmp_path / "clip")
    text_encoder.save_pretrained(tmp_path / "clip")
    output = train(tiny_config(tmp_path / "run", text_encoder=str(tmp_path / "clip"), max_steps=2))
    trained = load_file(output / "text_encoder" / "model.safetensors")
    original = text_encoder.state_dict()
    assert all(torch.equal(trained[k], original[k]) for k in trained)
    with pytest.raises(ValueError, match="cross_attention_dim=48 does not match the text encoder's hidden size 32"):
        train(tiny_config(tmp_path / "bad", text_encoder=str(tmp_path / "clip"),
                          unet={**TINY_UNET, "cross_attention_dim": 48}))


def test_the_learning_rate_cools_down_linearly_over_the_last_share_of_the_steps(tmp_path):
    """--lr-cooldown 0.5 of 10 steps: the rate stays at its peak for 5 steps, then falls by a fifth a step to 0
    (each record shows the rate the next step uses). Without it, the rate stays constant."""
    def rates(name, cooldown):
        out = train(tiny_config(tmp_path / name, max_steps=10, learning_rate=1e-3, lr_cooldown=cooldown,
                                report_to="none"))
        return [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert rates("wsd", 0.5) == pytest.approx([1e-3] * 5 + [8e-4, 6e-4, 4e-4, 2e-4, 0.0], abs=1e-12)
    assert rates("constant", 0.0) == pytest.approx([1e-3] * 10)
    with pytest.raises(ValueError, match="^--lr-cooldown needs an end to cool down to"):
        TrainConfig(lr_cooldown=0.3, max_minutes=None)


def test_the_first_share_of_the_run_trains_at_half_the_resolution(tmp_path):
    """--half-resolution-until 0.5 of 4 steps: the UNet sees 2x2 block averages of the batch (16 -> 8 px) in
    steps 0 and 1, the full images from step 2 on, and the run still saves a 16 px pipeline. (Single pixels;
    under patches, every preset's default now, see tests/test_patches.py.)"""
    from noiseunet.training.run import finish_run, start_run
    from noiseunet.training.step import train_step

    run = start_run(tiny_config(tmp_path / "run", data=str(shapes_folder(tmp_path / "data")), half_resolution_until=0.5,
                                patch_size=1, report_to="none"))
    sizes = []
    run.unet.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(tuple(args[0].shape[-2:])),
                                       with_kwargs=True)
    try:
        while run.step < run.max_steps:
            train_step(run)
    finally:
        run.batches.close()
    assert sizes == [(8, 8), (8, 8), (16, 16), (16, 16)]
    pipe = NoiseUNetPipeline.from_pretrained(finish_run(run, None))
    assert pipe.unet.config.sample_size == 16
    with pytest.raises(ValueError, match="is a share of the run"):
        tiny_config(tmp_path / "bad", half_resolution_until=0.5, max_steps=None)
    with pytest.raises(ValueError, match="halves the UNet's 18 px input to 9, which its 2x downsampling does not"):
        train(tiny_config(tmp_path / "odd", half_resolution_until=0.5, resolution=36))  # 2 x 2 patches


def test_gpu_noise_is_one_generator_per_process_batch_and_cpu_noise_one_per_sample():
    """On the CPU every sample has its own generator (the noise does not depend on the process count); on a
    GPU one device generator draws the batch, seeded by (seed, step, micro-batch, first sample)."""
    from noiseunet.training.diffusion import per_sample_generators, step_generators

    cpu = step_generators((0, 5, 0), 8, 4)
    assert [g.initial_seed() for g in cpu] == [g.initial_seed() for g in per_sample_generators((0, 5, 0), 8, 4)]
    if torch.cuda.is_available():
        gpu = step_generators((0, 5, 0), 8, 4, torch.device("cuda"))
        again = step_generators((0, 5, 0), 8, 4, torch.device("cuda"))
        other = step_generators((0, 5, 1), 8, 4, torch.device("cuda"))
        assert gpu.device.type == "cuda" and gpu.initial_seed() == again.initial_seed() != other.initial_seed()
        x0 = torch.zeros(4, 3, 8, 8, device="cuda")
        noise, timesteps = draw_noise(x0, gpu, 1000)
        assert noise.device.type == "cuda" and timesteps.shape == (4,)
