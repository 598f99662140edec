"""NoiseUNet inside diffusers' own pipelines, built from tiny local components.

Each pipeline runs twice, with a NoiseUNet and with the diffusers UNet holding the same weights; the images
must agree within 1e-4."""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, StableDiffusionPipeline

from noiseunet import NoiseUNet

LATENT_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1, attention_head_dim=2, cross_attention_dim=32,
)


def sd_pipeline(unet, vae, text_encoder, tokenizer) -> StableDiffusionPipeline:
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def generate(pipe, guidance_scale=1.0, num_images_per_prompt=1):
    return pipe(
        ["a red circle on the left", "a blue square on the right"], num_inference_steps=3,
        guidance_scale=guidance_scale, num_images_per_prompt=num_images_per_prompt, height=32, width=32,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).images


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return NoiseUNet(**LATENT_UNET).eval()


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0], ids=["no-guidance", "guidance"])
def test_stable_diffusion_pipeline_matches_the_diffusers_unet(unet, vae, text_encoder, tokenizer, guidance_scale):
    images = generate(sd_pipeline(unet, vae, text_encoder, tokenizer), guidance_scale, num_images_per_prompt=2)
    assert images.shape == (4, 32, 32, 3) and np.isfinite(images).all()
    reference = generate(sd_pipeline(unet.to_diffusers(), vae, text_encoder, tokenizer), guidance_scale, 2)
    np.testing.assert_allclose(images, reference, atol=1e-4)


def test_guidance_changes_the_images(unet, vae, text_encoder, tokenizer):
    pipe = sd_pipeline(unet, vae, text_encoder, tokenizer)
    assert np.abs(generate(pipe, 1.0) - generate(pipe, 4.0)).max() > 1e-3


def test_pipeline_save_and_load_reproduces_images(unet, vae, text_encoder, tokenizer, tmp_path):
    pipe = sd_pipeline(unet, vae, text_encoder, tokenizer)
    before = generate(pipe, 3.0)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.unet, NoiseUNet)
    np.testing.assert_allclose(generate(loaded, 3.0), before, atol=1e-5)


def test_ddpm_pipeline_runs_an_unconditional_unet():
    torch.manual_seed(0)
    unet = NoiseUNet(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32),
                     down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=20))
    images = pipe(batch_size=2, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all() and images.std() > 0


# Pipelines that pass more than text: ControlNet, T2I-Adapter, SDXL, LCM, upscaler, img2img, inpainting, IP-Adapter.

SD_KWARGS = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
PROMPTS = ["a red circle on the left", "a blue square on the right"]


def scheduler() -> DDIMScheduler:
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         steps_offset=1)


def randomized_unet(**overrides) -> NoiseUNet:
    """A NoiseUNet with random non-trivial weights everywhere (side networks start at zero otherwise)."""
    torch.manual_seed(0)
    unet = NoiseUNet(**{**LATENT_UNET, **overrides}).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return unet


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module.eval()


def assert_same_images(make_pipe, unet: NoiseUNet, **call) -> np.ndarray:
    """Run ``make_pipe(unet)`` with the NoiseUNet and with its diffusers twin; the images must agree."""
    images = []
    for candidate in (unet, unet.to_diffusers()):
        pipe = make_pipe(candidate)
        pipe.set_progress_bar_config(disable=True)
        images.append(pipe(**call, generator=torch.Generator().manual_seed(0), output_type="np").images)
    assert np.isfinite(images[0]).all() and images[0].std() > 0
    np.testing.assert_allclose(images[0], images[1], atol=1e-4)
    return images[0]


def test_controlnet_pipeline(vae, text_encoder, tokenizer):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    unet = randomized_unet()
    controlnet = randomize(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32)))
    make = lambda u: StableDiffusionControlNetPipeline(  # noqa: E731
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=u, controlnet=controlnet,
        scheduler=scheduler(), **SD_KWARGS)
    control = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    steered = assert_same_images(make, unet, prompt=PROMPTS, image=control, num_inference_steps=2,
                                 guidance_scale=3.0, height=32, width=32)
    off = assert_same_images(make, unet, prompt=PROMPTS, image=control, num_inference_steps=2, guidance_scale=3.0,
                             height=32, width=32, controlnet_conditioning_scale=0.0)
    assert np.abs(steered - off).max() > 1e-3


def test_t2i_adapter_pipeline(vae, text_encoder, tokenizer):
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter

    unet = randomized_unet()
    adapter = randomize(T2IAdapter(in_channels=3, channels=(32, 64), num_res_blocks=1, downscale_factor=2,
                                   adapter_type="full_adapter"))
    make = lambda u: StableDiffusionAdapterPipeline(  # noqa: E731
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=u, adapter=adapter, scheduler=scheduler(),
        **SD_KWARGS)
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert_same_images(make, unet, prompt=PROMPTS, image=image, num_inference_steps=2, guidance_scale=3.0,
                       height=32, width=32)


def test_stable_diffusion_xl_pipeline(vae, tokenizer):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, projection_dim=16, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    text_encoder, text_encoder_2 = CLIPTextModel(config).eval(), CLIPTextModelWithProjection(config).eval()
    unet = randomized_unet(
        block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4, 4),
        transformer_layers_per_block=(1, 1, 2), cross_attention_dim=64, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16,
    )
    make = lambda u: StableDiffusionXLPipeline(  # noqa: E731
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=u, scheduler=scheduler())
    assert_same_images(make, unet, prompt=PROMPTS, num_inference_steps=2, guidance_scale=3.0, height=32, width=32)


def test_latent_consistency_pipeline(vae, text_encoder, tokenizer):
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    unet = randomized_unet(time_cond_proj_dim=32)
    make = lambda u: LatentConsistencyModelPipeline(  # noqa: E731
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=u, scheduler=LCMScheduler(), **SD_KWARGS)
    assert_same_images(make, unet, prompt=PROMPTS, num_inference_steps=2, guidance_scale=6.0, height=32, width=32)


def test_upscale_pipeline(vae, text_encoder, tokenizer):
    from diffusers import StableDiffusionUpscalePipeline

    # The x4 upscaler's UNet: latents + the low-resolution image in, the noise level as a class label,
    # the first attention of its upper levels reading the text only.
    unet = randomized_unet(in_channels=7, num_class_embeds=1000, only_cross_attention=(True, False))
    upscaler_vae = copy.deepcopy(vae)  # the pipeline rewrites its VAE's scaling_factor
    make = lambda u: StableDiffusionUpscalePipeline(  # noqa: E731
        vae=upscaler_vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=u,
        low_res_scheduler=DDPMScheduler(), scheduler=scheduler(), max_noise_level=350)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert_same_images(make, unet, prompt=PROMPTS, image=image, num_inference_steps=2, guidance_scale=3.0,
                       noise_level=40)


def test_img2img_pipeline(vae, text_encoder, tokenizer):
    from diffusers import StableDiffusionImg2ImgPipeline

    make = lambda u: StableDiffusionImg2ImgPipeline(  # noqa: E731
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=u, scheduler=scheduler(), **SD_KWARGS)
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert_same_images(make, randomized_unet(), prompt=PROMPTS, image=image, strength=0.75, num_inference_steps=4,
                       guidance_scale=3.0)


def test_inpaint_pipeline_with_a_nine_channel_unet(vae, text_encoder, tokenizer):
    from diffusers import StableDiffusionInpaintPipeline

    make = lambda u: StableDiffusionInpaintPipeline(  # noqa: E731
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=u, scheduler=scheduler(), **SD_KWARGS)
    g = torch.Generator().manual_seed(2)
    image, mask = torch.rand(2, 3, 32, 32, generator=g), (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()
    assert_same_images(make, randomized_unet(in_channels=9), prompt=PROMPTS, image=image, mask_image=mask,
                       num_inference_steps=2, guidance_scale=3.0, height=32, width=32)


def save_ip_adapter(unet: NoiseUNet, path, image_embed_dim: int = 12) -> None:
    """A random IP-Adapter for ``unet`` in the file layout load_ip_adapter reads."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(4)
    width, cross = unet.config.block_out_channels, unet.config.cross_attention_dim
    tensors = {
        "image_proj.proj.weight": torch.randn(4 * cross, image_embed_dim, generator=g) * 0.1,
        "image_proj.proj.bias": torch.randn(4 * cross, generator=g) * 0.1,
        "image_proj.norm.weight": 1 + torch.randn(cross, generator=g) * 0.1,
        "image_proj.norm.bias": torch.randn(cross, generator=g) * 0.1,
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            level = int(name.split(".")[1]) if not name.startswith("mid_block") else -1
            hidden = width[-1] if level == -1 else (width[::-1] if name.startswith("up_blocks") else width)[level]
            for kind in ("to_k_ip", "to_v_ip"):
                tensors[f"ip_adapter.{key_id}.{kind}.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
            key_id += 2
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "ip_adapter.safetensors"))


def test_pipeline_after_load_ip_adapter(vae, text_encoder, tokenizer, tmp_path):
    unet = randomized_unet()
    save_ip_adapter(unet, tmp_path / "adapter")

    def make(u):
        pipe = sd_pipeline(u, vae, text_encoder, tokenizer)
        pipe.load_ip_adapter(str(tmp_path / "adapter"), subfolder="", weight_name="ip_adapter.safetensors",
                             image_encoder_folder=None)
        pipe.set_ip_adapter_scale(0.7)
        return pipe

    embeds = [torch.randn(2, 1, 12, generator=torch.Generator().manual_seed(5))]  # negative, positive
    assert_same_images(make, unet, prompt=PROMPTS[:1], ip_adapter_image_embeds=embeds, num_inference_steps=2,
                       guidance_scale=3.0, height=32, width=32)
    assert type(unet.encoder_hid_proj).__name__ == "MultiIPAdapterImageProjection"
