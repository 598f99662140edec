"""NoiseUNet against UNet2DConditionModel for every variant a diffusers pipeline uses: configs relying on
diffusers' defaults, ControlNet and T2I-Adapter residuals, LCM, class labels, SDXL, attention processors,
FreeU, fused QKV and IP-Adapter. Float32 outputs within 1e-5 relative, gradients within 1e-4."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from noiseunet import NoiseUNet
from noiseunet.model.diffusers_compat import max_relative_error

TINY = dict(  # 2 levels, attention in the upper one, 2 blocks per level
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2, attention_head_dim=2, cross_attention_dim=24,
)
SDXL_TINY = dict(  # SDXL's layout: plain top level, asymmetric transformer depth, text_time conditions
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2, attention_head_dim=(2, 4, 4), transformer_layers_per_block=(1, 1, 2),
    cross_attention_dim=24, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8,
)
SDXL_BASE = dict(  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
    use_linear_projection=True, upcast_attention=None, addition_embed_type="text_time",
    addition_embed_type_num_heads=64, addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    act_fn="silu", center_input_sample=False, class_embed_type=None, class_embeddings_concat=False,
    conv_in_kernel=3, conv_out_kernel=3, cross_attention_norm=None, downsample_padding=1,
    dual_cross_attention=False, encoder_hid_dim=None, encoder_hid_dim_type=None, flip_sin_to_cos=True,
    freq_shift=0, mid_block_only_cross_attention=None, mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DCrossAttn", norm_eps=1e-05, norm_num_groups=32, num_attention_heads=None,
    num_class_embeds=None, only_cross_attention=False, resnet_out_scale_factor=1.0, resnet_skip_time_act=False,
    resnet_time_scale_shift="default", time_cond_proj_dim=None, time_embedding_act_fn=None,
    time_embedding_dim=None, time_embedding_type="positional", timestep_post_act=None,
)


def pair(config: dict, seed: int = 0) -> tuple[UNet2DConditionModel, NoiseUNet]:
    """A diffusers UNet with random non-trivial weights and the NoiseUNet built from it."""
    torch.manual_seed(seed)
    reference = UNet2DConditionModel(**config)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return reference, NoiseUNet.from_diffusers(reference)


def inputs(config: dict, batch: int = 2, size: int = 16, tokens: int = 5) -> tuple:
    g = torch.Generator().manual_seed(1)
    cross = config.get("cross_attention_dim", 1280)
    cross = cross if isinstance(cross, int) else cross[0]
    sample = torch.randn(batch, config.get("in_channels", 4), size, size, generator=g)
    return sample, torch.tensor([3, 977])[:batch], torch.randn(batch, tokens, cross, generator=g)


def assert_same(reference, model, *args, grads: bool = True, **kwargs) -> torch.Tensor:
    """Same outputs (and parameter gradients) from both UNets on the same arguments."""
    for m in (reference, model):
        m.zero_grad()
    with torch.set_grad_enabled(grads):
        out_ref = reference(*args, **kwargs).sample
        out = model(*args, **kwargs).sample
    assert out.shape == out_ref.shape
    assert max_relative_error(out, out_ref) < 1e-5
    if grads:
        out_ref.square().mean().backward()
        out.square().mean().backward()
        grads_ref = dict(reference.named_parameters())
        for name, p in model.named_parameters():
            if grads_ref[name].grad is None:
                assert p.grad is None or not p.grad.any(), name
            else:
                assert max_relative_error(p.grad, grads_ref[name].grad) < 1e-4, name
    return out


# diffusers' defaults --------------------------------------------------------------------------------------

def test_a_config_relying_on_diffusers_defaults_builds_the_same_network():
    """Everything not given here (4 levels' block types, channels in/out, flip_sin_to_cos, ...) is diffusers'
    default, which diffusers lists in _use_default_values; NoiseUNet must build it, not its own defaults."""
    config = dict(block_out_channels=(32, 32, 64, 64), cross_attention_dim=16, attention_head_dim=2, layers_per_block=1)
    reference, model = pair(config)
    assert "down_block_types" in reference.config._use_default_values
    assert model.config.down_block_types == reference.config.down_block_types
    sample, t, text = inputs(config)
    assert_same(reference, model, sample, t, text)


@pytest.mark.parametrize("kwargs", [{}, {"cross_attention_dim": 768}], ids=["default", "cross768"])
def test_default_constructed_diffusers_unet_maps_every_weight(kwargs):
    with torch.device("meta"):
        reference = UNet2DConditionModel(**kwargs)
        for model in (NoiseUNet.from_config(reference.config), NoiseUNet.from_config(dict(reference.config))):
            shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
            assert shapes(model) == shapes(reference)
    assert NoiseUNet.from_diffusers(UNet2DConditionModel(**kwargs)).config.block_out_channels == (320, 640, 1280, 1280)


def test_noiseunet_configs_keep_noiseunet_defaults():
    model = NoiseUNet(cross_attention_dim=32)
    again = NoiseUNet.from_config(model.config)
    assert again.config.block_out_channels == model.config.block_out_channels == (64, 128, 256)
    assert again.config.cross_attention_dim == 32


def test_controlnet_from_unet_reads_a_noiseunet():
    from diffusers import ControlNetModel

    _, model = pair(TINY)
    controlnet = ControlNetModel.from_unet(model, conditioning_embedding_out_channels=(16, 32))
    for name, p in model.down_blocks.state_dict().items():
        assert torch.equal(controlnet.down_blocks.state_dict()[name], p)
