"""Fine-tuning: --pretrained starts from exactly a pipeline's weights (a noiseunet run or a diffusers SD folder)."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from test_training import shapes_folder, tiny_config

from noiseunet.training import TrainConfig, train

LATENT_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, attention_head_dim=2,
                   cross_attention_dim=32)


def unet_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture
def sd_folder(tmp_path, vae, text_encoder, tokenizer):
    """A Stable Diffusion pipeline folder as diffusers writes it, with tiny components and diffusers' UNet."""
    torch.manual_seed(0)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**LATENT_UNET), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")
    return tmp_path / "sd"


def finetune(tmp_path, pretrained, name="tuned", **overrides):
    data = tmp_path / "data"
    if not data.exists():
        shapes_folder(data)
    values = dict(output_dir=str(tmp_path / name), pretrained=str(pretrained), data=str(data),
                  resolution=16, batch_size=2, max_steps=2, max_minutes=None, warmup_steps=0, mixed_precision="no",
                  log_every=1, checkpoint_every=1000, report_to="none")
    return train(TrainConfig(**{**values, **overrides}))


def test_a_diffusers_sd_folder_is_the_starting_point(tmp_path, sd_folder):
    """Learning rate 0: the saved UNet is bitwise the base one, and the folder still loads in diffusers."""
    output = finetune(tmp_path, sd_folder, learning_rate=0.0)
    base, tuned = unet_weights(sd_folder), unet_weights(output)
    assert base.keys() == tuned.keys() and all(torch.equal(base[k], tuned[k]) for k in base)
    schedule = json.loads((output / "scheduler" / "scheduler_config.json").read_text())
    assert schedule["beta_schedule"] == "scaled_linear" and schedule["prediction_type"] == "epsilon"
    assert (output / "vae").is_dir()
    text = load_file(output / "text_encoder" / "model.safetensors")
    assert all(torch.equal(text[k], v) for k, v in load_file(sd_folder / "text_encoder" / "model.safetensors").items())
    StableDiffusionPipeline.from_pretrained(output, safety_checker=None, requires_safety_checker=False)


def test_a_noiseunet_run_is_the_starting_point_and_training_moves_away(tmp_path):
    base = train(tiny_config(tmp_path / "base", max_steps=2, report_to="none"))
    still = finetune(tmp_path, base, name="still", resolution=16, learning_rate=0.0)
    assert all(torch.equal(v, unet_weights(still)[k]) for k, v in unet_weights(base).items())
    moved = finetune(tmp_path, base, name="moved", resolution=16, learning_rate=1e-3, ema_max_decay=0.0)
    assert any(not torch.equal(v, unet_weights(moved)[k]) for k, v in unet_weights(base).items())


def test_pretrained_refuses_a_new_model_size(tmp_path, sd_folder):
    with pytest.raises(ValueError, match="brings its own UNet; --model and --config build a new one"):
        TrainConfig(pretrained=str(sd_folder), model="base")


def test_lora_trains_only_the_adapters_and_loads_in_both_pipelines(tmp_path, sd_folder):
    from noiseunet import NoiseUNet, NoiseUNetPipeline

    output = finetune(tmp_path, sd_folder, lora_rank=4, learning_rate=5e-2, max_steps=3, checkpoint_every=3)
    trained = load_file(output / "checkpoints" / "step-0000003" / "model.safetensors")  # the UNet with adapters
    base = unet_weights(sd_folder)
    adapters = {k: v for k, v in trained.items() if "lora_" in k}
    assert adapters and any(v.abs().max() > 0 for k, v in adapters.items() if "lora_B" in k)
    frozen = {k.replace(".base_layer", ""): v for k, v in trained.items() if "lora_" not in k}
    assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base)

    lora_file = output / "pytorch_lora_weights.safetensors"
    keys = load_file(lora_file).keys()
    assert keys and all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in keys)  # as diffusers' LoRA script writes

    def images(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe(["a red circle on the left"], num_inference_steps=3, guidance_scale=3.0, height=32, width=32,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    sd = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False)
    without = images(sd)
    sd.load_lora_weights(str(output))
    with_lora = images(sd)
    assert abs(with_lora - without).max() > 1e-3  # the adapters do something
    ours = NoiseUNetPipeline(unet=NoiseUNet.from_pretrained(sd_folder, subfolder="unet"), text_encoder=sd.text_encoder,
                             tokenizer=sd.tokenizer, scheduler=sd.scheduler, vae=sd.vae)
    ours.load_lora_weights(str(output))
    sd_with_noiseunet = StableDiffusionPipeline.from_pretrained(sd_folder, unet=ours.unet, safety_checker=None,
                                                                requires_safety_checker=False)
    assert abs(images(sd_with_noiseunet) - with_lora).max() < 1e-4
    assert abs(images(ours) - with_lora).max() < 1e-4


def test_lora_needs_a_pretrained_model():
    with pytest.raises(ValueError, match="--lora-rank adapts a pretrained UNet: give --pretrained"):
        TrainConfig(lora_rank=4)


def test_sampling_a_lora_run_loads_its_base_and_scales_the_adapters(tmp_path, sd_folder):
    from test_cli import noiseunet

    from noiseunet.pipeline import generate, load_pipeline

    output = finetune(tmp_path, sd_folder, lora_rank=4, learning_rate=5e-2, max_steps=3)
    draw = lambda pipe: np.stack([np.asarray(i) for i in generate(pipe, ["a red circle"], 1, num_inference_steps=2,  # noqa: E731
                                                                 height=32, width=32)[0]]).astype(float)
    base = draw(load_pipeline(sd_folder))
    assert np.abs(draw(load_pipeline(output, lora_scale=0.0)) - base).max() == 0
    assert np.abs(draw(load_pipeline(output)) - base).max() > 0
    with pytest.raises(ValueError, match="--lora-scale needs --lora"):
        load_pipeline(sd_folder, lora_scale=0.5)
    result = noiseunet("sample", str(sd_folder), "a red circle", "--lora", str(output / "pytorch_lora_weights.safetensors"),
                       "--lora-scale", "0.5", "--num-images", "1", "--steps", "2", "--out", str(tmp_path / "grid.png"))
    assert (tmp_path / "grid.png").exists(), result.stdout


def test_a_resumed_lora_run_keeps_its_adapters_and_ends_where_the_uninterrupted_one_ends(tmp_path, sd_folder):
    """diffusers #12689: resumed LoRA runs silently dropped the adapters. Here the adapters and their optimizer
    state come back from the checkpoint: 2 steps + 2 resumed steps = 4 straight steps, bitwise."""
    lora = dict(lora_rank=4, learning_rate=5e-2, checkpoint_every=2)
    straight = finetune(tmp_path, sd_folder, name="straight", max_steps=4, **lora)
    finetune(tmp_path, sd_folder, name="resumed", max_steps=2, **lora)
    resumed = finetune(tmp_path, sd_folder, name="resumed", max_steps=4, resume="latest", **lora)
    a, b = (load_file(run / "pytorch_lora_weights.safetensors") for run in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((resumed / "train_summary.json").read_text())["steps"] == 4


def test_the_kohya_file_loads_through_diffusers_kohya_conversion_with_the_same_images(tmp_path, sd_folder):
    output = finetune(tmp_path, sd_folder, lora_rank=4, lora_alpha=8, learning_rate=5e-2, max_steps=3,
                      lora_format="kohya")
    kohya = load_file(output / "lora_kohya.safetensors")
    assert all(k.startswith("lora_unet_") for k in kohya) and any(k.endswith(".alpha") for k in kohya)

    def images(weight_name):
        pipe = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(output), weight_name=weight_name)
        return pipe(["a red circle on the left"], num_inference_steps=3, guidance_scale=3.0, height=32, width=32,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    np.testing.assert_allclose(images("lora_kohya.safetensors"), images("pytorch_lora_weights.safetensors"), atol=1e-4)


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_cached_and_uncached_training_give_the_same_losses(tmp_path, sd_folder, monkeypatch, storage):
    """Frozen VAE and text encoder: cached latent distributions (both sides, flips on) and text states give
    the losses of encoding every step."""
    import noiseunet.training.cache as cache

    if storage == "file":
        monkeypatch.setattr(cache, "IN_MEMORY_BYTES", 0)
    settings = dict(max_steps=3, learning_rate=1e-3, flip=True, caption_dropout=0.3)
    cached = finetune(tmp_path, sd_folder, name="cached", **settings)
    uncached = finetune(tmp_path, sd_folder, name="uncached", cache=False, **settings)
    assert ((tmp_path / "cached" / "cache" / "latents.bin").exists()) == (storage == "file")
    losses = [[json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
              for run in (cached, uncached)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)  # step 1 is the same batch on the same weights;
    # later steps too, though AdamW turns rounding-level gradient differences into lr-sized weight differences


def test_the_cache_holds_both_sides_of_every_image_and_every_caption(tmp_path, sd_folder, vae):
    from noiseunet.data import ImageCaptionFolder
    from noiseunet.data.transforms import preprocess
    from noiseunet.training.run import start_run

    finetune(tmp_path, sd_folder, max_steps=0)  # writes the data folder
    config = TrainConfig(output_dir=str(tmp_path / "run"), pretrained=str(sd_folder), data=str(tmp_path / "data"),
                         resolution=16, flip=True, mixed_precision="no", report_to="none")
    run = start_run(config)
    run.batches.close()
    latents, texts = run.cache.latent_parameters, run.cache.text_states
    data = ImageCaptionFolder(tmp_path / "data")
    assert latents.shape[:3] == (len(data), 2, 2 * vae.config.latent_channels)
    assert set(texts) == {row["text"] for row in data.rows} | {""}
    with torch.no_grad():  # side 1 is the mirror image's distribution
        pixels = preprocess(data[3]["image"], 16)
        expected = vae.encode(pixels.flip(-1)[None]).latent_dist.parameters[0]
    torch.testing.assert_close(latents[3, 1], expected, rtol=1e-4, atol=1e-5)


def bucket_folder(root, sizes):
    """Images of these sizes, each with a white frame (a tenth of the width) on a dark ground, captioned by index."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True)
    rows = []
    for i, (w, h) in enumerate(sizes):
        image = Image.new("RGB", (w, h), (20, 40, 60))
        ImageDraw.Draw(image).rectangle((0, 0, w - 1, h - 1), outline=(255, 255, 255), width=max(1, w // 10))
        image.save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"framed picture {i}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def test_buckets_keep_each_image_whole_when_its_shape_is_a_bucket(tmp_path):
    """At resolution 32 the buckets are 24x40, 32x32 and 40x24: images of those shapes keep their whole frame
    (nothing cropped), every batch holds one bucket, and every image comes once per epoch."""
    from noiseunet.data import ImageCaptionFolder
    from noiseunet.data.buckets import BucketBatches, bucket_sizes

    assert bucket_sizes(32, 8) == [(24, 40), (32, 32), (40, 24)]
    sizes = [(40, 24), (24, 40), (32, 32), (80, 48), (48, 80), (64, 64), (40, 24)]
    source = ImageCaptionFolder(bucket_folder(tmp_path / "data", sizes))
    batches = BucketBatches(source, batch_size=2, resolution=32, step=8, seed=1)
    seen = []
    for _ in range(batches.batches_per_epoch):
        batch = next(batches)
        pixels = batch["pixel_values"]
        assert all(tuple(pixels.shape[-1:-3:-1]) == batches.image_size(i) for i in batch["indices"])
        for image in pixels:
            edges = [image[:, 0, :], image[:, -1, :], image[:, :, 0], image[:, :, -1]]
            assert all((edge > 0.5).all() for edge in edges), "the frame was cropped"
        seen += batch["indices"]
    assert set(seen) == set(range(len(sizes)))  # the last batch of a bucket is filled with its own images
    resumed = BucketBatches(source, batch_size=2, resolution=32, step=8, seed=1)
    resumed.load_state_dict({"batches": 2})
    straight = BucketBatches(source, batch_size=2, resolution=32, step=8, seed=1)
    for _ in range(2):
        next(straight)
    assert next(resumed)["indices"] == next(straight)["indices"]


def test_a_folder_of_mixed_aspect_ratios_trains_in_buckets_with_the_latent_cache(tmp_path, sd_folder):
    data = bucket_folder(tmp_path / "mixed", [(40, 24), (24, 40), (32, 32), (80, 48), (48, 80), (64, 64)])
    output = finetune(tmp_path, sd_folder, data=str(data), resolution=32, buckets=True, max_steps=4, lora_rank=2)
    assert json.loads((output / "train_summary.json").read_text())["steps"] == 4
    with pytest.raises(ValueError, match="--buckets needs --data"):
        TrainConfig(buckets=True)


def test_lora_on_the_text_encoder_too(tmp_path, sd_folder):
    """--train-text-encoder with --lora-rank: adapters on CLIP's attention as well; the text encoder's base stays
    as it was, and both files (diffusers and kohya keys) give the images of the pipeline they were trained in."""
    from noiseunet import NoiseUNet, NoiseUNetPipeline

    output = finetune(tmp_path, sd_folder, lora_rank=4, train_text_encoder=True, learning_rate=5e-2, max_steps=3,
                      checkpoint_every=3, lora_format="kohya")
    text = load_file(output / "checkpoints" / "step-0000003" / "model_1.safetensors")
    base_text = load_file(sd_folder / "text_encoder" / "model.safetensors")
    frozen = {k.replace(".base_layer", ""): v for k, v in text.items() if "lora_" not in k}
    assert all(torch.equal(frozen[k], base_text[k]) for k in base_text)
    assert any(v.abs().max() > 0 for k, v in text.items() if "lora_B" in k)
    keys = load_file(output / "pytorch_lora_weights.safetensors").keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    assert any(k.startswith("lora_te_") for k in load_file(output / "lora_kohya.safetensors"))

    def images(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe(["a red circle on the left"], num_inference_steps=3, guidance_scale=3.0, height=32, width=32,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    def sd(weight_name):
        pipe = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False)
        pipe.load_lora_weights(str(output), weight_name=weight_name)
        return pipe

    reference = images(sd("pytorch_lora_weights.safetensors"))
    np.testing.assert_allclose(images(sd("lora_kohya.safetensors")), reference, atol=1e-4)
    base = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False)
    ours = NoiseUNetPipeline(unet=NoiseUNet.from_pretrained(sd_folder, subfolder="unet"), text_encoder=base.text_encoder,
                             tokenizer=base.tokenizer, scheduler=base.scheduler, vae=base.vae)
    ours.load_lora_weights(str(output))
    np.testing.assert_allclose(images(ours), reference, atol=1e-4)


def test_the_command_line_fine_tunes_with_lora(tmp_path, sd_folder):
    from test_cli import noiseunet

    data = tmp_path / "data"
    shapes_folder(data)
    noiseunet("train", "--pretrained", str(sd_folder), "--data", str(data), "--resolution", "16", "--batch-size", "2",
              "--max-steps", "2", "--max-minutes", "0", "--mixed-precision", "no", "--report-to", "none",
              "--lora-rank", "2", "--lora-targets", "to_q,to_v", "--lora-format", "kohya", "--output", str(tmp_path / "run"))
    keys = load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors").keys()
    assert {k.split(".lora")[0].rsplit(".", 1)[1] for k in keys} == {"to_q", "to_v"}
    assert (tmp_path / "run" / "lora_kohya.safetensors").exists()
    bad = noiseunet("train", "--data", str(data), "--lora-rank", "2", check=False)
    assert bad.returncode and bad.stderr.strip().endswith("--lora-rank adapts a pretrained UNet: give --pretrained")
