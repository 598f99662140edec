"""NoiseUNet against diffusers' UNet2DConditionModel, and its forward contract."""

import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from noiseunet import NoiseUNet
from noiseunet.model.diffusers_compat import max_relative_error

SD1_TINY = dict(  # SD 1.x layout: conv proj_in/out, same heads everywhere, attention in the upper levels
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2, attention_head_dim=2, cross_attention_dim=24,
)
SD2_TINY = dict(  # SD 2.x layout: linear projections, heads per level, deeper transformers, upcast flag
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1, attention_head_dim=(2, 4, 4), transformer_layers_per_block=2, cross_attention_dim=16,
    use_linear_projection=True, upcast_attention=True,
)
SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2, attention_head_dim=8, cross_attention_dim=768,
)
SD21 = dict(SD15, sample_size=96, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
            use_linear_projection=True, upcast_attention=True)


def pair(config: dict) -> tuple[UNet2DConditionModel, NoiseUNet]:
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**config)
    with torch.no_grad():  # random, non-trivial values everywhere (diffusers zero-initialises nothing here, but be sure)
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return reference, NoiseUNet.from_diffusers(reference)


def inputs(config: dict, height: int = 16, width: int = 16, batch: int = 2, tokens: int = 7):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, config["in_channels"], height, width, generator=g)
    text = torch.randn(batch, tokens, config["cross_attention_dim"], generator=g)
    return sample, torch.tensor([3, 977])[:batch], text


@pytest.mark.parametrize("config", [SD1_TINY, SD2_TINY, NoiseUNet().config], ids=["sd1", "sd2", "default"])
@pytest.mark.parametrize("size", [(16, 16), (19, 13)], ids=["even", "odd"])
def test_matches_diffusers_forward_and_gradients(config, size):
    config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    reference, model = pair(config)
    sample, t, text = inputs(config, *size)
    mask = torch.ones(2, text.shape[1])
    mask[0, -3:] = 0
    out_ref = reference(sample, t, text, encoder_attention_mask=mask).sample
    out = model(sample, t, text, encoder_attention_mask=mask).sample
    assert out.shape == sample.shape[:1] + (config["out_channels"],) + sample.shape[2:]
    assert max_relative_error(out, out_ref) < 1e-5

    out_ref.square().mean().backward()
    out.square().mean().backward()
    grads_ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert max_relative_error(p.grad, grads_ref[name].grad) < 1e-4, name


def test_round_trip_through_diffusers_is_exact():
    reference, model = pair(SD2_TINY)
    back = model.to_diffusers()
    assert isinstance(back, UNet2DConditionModel)
    for (name, a), (name_b, b) in zip(reference.state_dict().items(), back.state_dict().items()):
        assert name == name_b and torch.equal(a, b)


@pytest.mark.parametrize("config", [SD15, SD21], ids=["sd1.5", "sd2.1"])
def test_full_stable_diffusion_configs_map_every_parameter(config):
    with torch.device("meta"):
        reference = UNet2DConditionModel(**config)
        model = NoiseUNet.from_config(reference.config)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(model) == shapes(reference)
    if config is SD15:
        assert sum(p.numel() for p in model.parameters()) == 859_520_964


def test_loads_a_diffusers_unet_folder(tmp_path):
    reference, _ = pair(SD1_TINY)
    reference.save_pretrained(tmp_path)
    model = NoiseUNet.from_pretrained(tmp_path)
    sample, t, text = inputs(SD1_TINY)
    assert max_relative_error(model(sample, t, text).sample, reference(sample, t, text).sample) < 1e-5


def test_refuses_unet_variants_it_does_not_implement():
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**SD1_TINY, dual_cross_attention=True)
    with pytest.raises(ValueError, match="dual_cross_attention"):
        NoiseUNet.from_diffusers(reference)
    for key, value in [("attention_type", "gated"), ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
                       ("resnet_skip_time_act", True), ("encoder_hid_dim_type", "text_proj")]:
        with pytest.raises(ValueError, match=f"^NoiseUNet does not build {key}="):
            NoiseUNet.from_config({**SD1_TINY, key: value})
    with pytest.raises(TypeError, match="dual_cross_attention"):
        NoiseUNet(**SD1_TINY, dual_cross_attention=True)
    with pytest.raises(ValueError, match="class_embed_type"):
        NoiseUNet(**SD1_TINY, class_embed_type="fourier")
    with pytest.raises(ValueError, match="addition_embed_type"):
        NoiseUNet(**SD1_TINY, addition_embed_type="text_image")
    with pytest.raises(ValueError, match="mirror"):
        NoiseUNet(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    with pytest.raises(ValueError, match="unsupported block 'SimpleDownBlock'"):
        NoiseUNet(down_block_types=("SimpleDownBlock",) * 3)
    with pytest.raises(ValueError, match="divisible"):
        NoiseUNet(block_out_channels=(48, 128, 256))


def test_timestep_forms_agree():
    model = NoiseUNet(**SD1_TINY).eval()
    sample, _, text = inputs(SD1_TINY)
    with torch.no_grad():
        outs = [model(sample, t, text).sample for t in (10, 10.0, torch.tensor(10), torch.tensor([10, 10]))]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    assert not torch.allclose(outs[0], model(sample, 11, text).sample)


def test_return_dict_false_gives_a_tuple():
    model = NoiseUNet(**SD1_TINY)
    sample, t, text = inputs(SD1_TINY)
    result = model(sample, t, text, return_dict=False)
    assert isinstance(result, tuple) and len(result) == 1 and torch.equal(result[0], model(sample, t, text).sample)


def test_masked_text_tokens_are_invisible():
    """Padding tokens under encoder_attention_mask=0 change nothing: same output as without them."""
    model = NoiseUNet(**SD1_TINY).eval()
    sample, t, text = inputs(SD1_TINY, tokens=5)
    padded = torch.cat([text, 100 * torch.randn(2, 3, text.shape[-1])], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3] * 2)
    with torch.no_grad():
        expected = model(sample, t, text).sample
        assert max_relative_error(model(sample, t, padded, encoder_attention_mask=mask).sample, expected) < 1e-5
        assert max_relative_error(model(sample, t, padded).sample, expected) > 1e-3


def test_unconditional_forward_without_text():
    model = NoiseUNet(**dict(SD1_TINY, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2))
    sample, t, _ = inputs(SD1_TINY)
    assert model(sample, t).sample.shape == sample.shape


def test_save_and_load_safetensors(tmp_path):
    model = NoiseUNet(**SD2_TINY)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = NoiseUNet.from_pretrained(tmp_path)
    for key in ("sample_size", "in_channels", "out_channels", "time_cond_proj_dim"):
        assert key in loaded.config
    assert loaded.config.time_cond_proj_dim is None
    sample, t, text = inputs(SD2_TINY)
    assert torch.equal(loaded(sample, t, text).sample, model(sample, t, text).sample)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = NoiseUNet(**SD2_TINY).train()
    sample, t, text = inputs(SD2_TINY)

    def gradients():
        model.zero_grad()
        model(sample, t, text).sample.square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        assert max_relative_error(checkpointed[name], grad) < 1e-5, name


def test_lora_adapter_targets_attention_projections():
    model = NoiseUNet(**SD1_TINY).eval()
    sample, t, text = inputs(SD1_TINY)
    with torch.no_grad():
        base = model(sample, t, text).sample
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    lora = [name for name, p in model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in name for name in lora)
    assert any(".attn2.to_k.lora_A" in name for name in lora)
    with torch.no_grad():
        assert torch.allclose(model(sample, t, text).sample, base, atol=1e-6)  # lora_B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
        assert not torch.allclose(model(sample, t, text).sample, base, atol=1e-4)
        off = model(sample, t, text, cross_attention_kwargs={"scale": 0.0}).sample
        assert torch.allclose(off, base, atol=1e-6)
