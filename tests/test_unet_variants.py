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


def assert_same(reference, model, *args, grads: bool = True, fresh=dict, **kwargs) -> torch.Tensor:
    """Same outputs (and parameter gradients) from both UNets on the same arguments; ``fresh()`` gives
    arguments each model must get its own copy of (diffusers pops the adapter residuals off their list)."""
    for m in (reference, model):
        m.zero_grad()
    with torch.set_grad_enabled(grads):
        out_ref = reference(*args, **kwargs, **fresh()).sample
        out = model(*args, **kwargs, **fresh()).sample
    assert out.shape == out_ref.shape
    assert max_relative_error(out, out_ref) < 1e-5
    if grads:
        out_ref.square().mean().backward()
        out.square().mean().backward()
        grads_ref = {name: p.grad for name, p in reference.named_parameters()}
        # Some gradients are analytically ~zero (conv1's bias ahead of the GroupNorm: ~1e-9, float noise that
        # differs between attention kernels): each gradient is compared relative to its own size, but to no
        # less than 1e-3 of the largest gradient.
        floor = 1e-3 * max(g.abs().max().item() for g in grads_ref.values() if g is not None)
        for name, p in model.named_parameters():
            if grads_ref[name] is None:
                assert p.grad is None or not p.grad.any(), name
            else:
                scale = max(grads_ref[name].abs().max().item(), floor)
                assert (p.grad - grads_ref[name]).abs().max().item() / scale < 1e-4, name
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


def shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kwargs", [{}, {"cross_attention_dim": 768}], ids=["default", "cross768"])
def test_default_constructed_diffusers_unet_maps_every_weight(kwargs):
    with torch.device("meta"):
        reference = UNet2DConditionModel(**kwargs)
        for model in (NoiseUNet.from_config(reference.config), NoiseUNet.from_config(dict(reference.config))):
            assert shapes(model) == shapes(reference)


def test_default_constructed_diffusers_unet_converts_and_agrees():
    """The issue's example: from_diffusers(UNet2DConditionModel(cross_attention_dim=768)) loads strictly."""
    with torch.device("meta"):  # 860M parameters: skip diffusers' slow initialisation, fill them directly
        reference = UNet2DConditionModel(cross_attention_dim=768)
    reference = reference.to_empty(device="cpu").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(torch.randn_like(p) * 0.02 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    model = NoiseUNet.from_diffusers(reference).eval()
    assert model.config.block_out_channels == (320, 640, 1280, 1280)
    g = torch.Generator().manual_seed(1)
    sample, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 3, 768, generator=g)
    assert_same(reference, model, sample, torch.tensor([500]), text, grads=False)


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


# ControlNet and T2I-Adapter residuals -----------------------------------------------------------------------

def randomize(module: torch.nn.Module, seed: int = 2) -> torch.nn.Module:
    """Side networks start with zero convolutions (no effect at all); give them some."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module.eval()


def test_controlnet_residuals_from_a_real_controlnet():
    from diffusers import ControlNetModel

    reference, model = pair(TINY)
    controlnet = randomize(ControlNetModel.from_unet(reference, conditioning_embedding_out_channels=(16, 32)))
    sample, t, text = inputs(TINY)
    with torch.no_grad():
        down, mid = controlnet(sample, t, text, controlnet_cond=torch.randn(2, 3, 32, 32), return_dict=False)
    plain = assert_same(reference, model, sample, t, text, grads=False)
    steered = assert_same(reference, model, sample, t, text, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid)
    assert max_relative_error(steered, plain) > 1e-3
    with pytest.raises(ValueError, match="need both"):
        model(sample, t, text, mid_block_additional_residual=mid)
    with pytest.raises(ValueError, match="skip connections"):
        model(sample, t, text, down_block_additional_residuals=down[:-1], mid_block_additional_residual=mid)


def test_t2i_adapter_residuals_from_a_real_adapter():
    from diffusers import T2IAdapter

    reference, model = pair(TINY)
    adapter = randomize(T2IAdapter(in_channels=3, channels=TINY["block_out_channels"], num_res_blocks=1,
                                   downscale_factor=2, adapter_type="full_adapter"))
    sample, t, text = inputs(TINY)
    with torch.no_grad():
        features = adapter(torch.randn(2, 3, 32, 32))
    plain = assert_same(reference, model, sample, t, text, grads=False)
    steered = assert_same(reference, model, sample, t, text,
                          fresh=lambda: {"down_intrablock_additional_residuals": [f.clone() for f in features]})
    assert max_relative_error(steered, plain) > 1e-3
    with pytest.raises(ValueError, match="left over"):
        model(sample, t, text, down_intrablock_additional_residuals=features + [features[-1]] * 2)


def test_adapter_residuals_in_a_plain_top_level_and_the_middle():
    """SDXL's layout: the plain top level takes its feature after downsampling, a fourth goes to the middle."""
    reference, model = pair(SDXL_TINY)
    sample, t, text = inputs(SDXL_TINY)
    g = torch.Generator().manual_seed(3)
    features = [torch.randn(2, c, s, s, generator=g) for c, s in [(32, 8), (64, 8), (64, 4), (64, 4)]]
    added = {"text_embeds": torch.randn(2, 16, generator=g), "time_ids": torch.rand(2, 6, generator=g) * 1024}
    assert_same(reference, model, sample, t, text, added_cond_kwargs=added,
                fresh=lambda: {"down_intrablock_additional_residuals": [f.clone() for f in features]})
    # diffusers' deprecated form: adapter residuals as down_block_additional_residuals without a middle one
    assert_same(reference, model, sample, t, text, added_cond_kwargs=added, grads=False,
                fresh=lambda: {"down_block_additional_residuals": [f.clone() for f in features]})


# LCM, class labels, SDXL -------------------------------------------------------------------------------------

def test_lcm_timestep_cond():
    config = dict(TINY, time_cond_proj_dim=8)
    reference, model = pair(config)
    sample, t, text = inputs(config)
    w_embedding = torch.randn(2, 8, generator=torch.Generator().manual_seed(2))
    assert_same(reference, model, sample, t, text, timestep_cond=w_embedding)
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        pair(TINY)[1](sample, t, text, timestep_cond=w_embedding)


@pytest.mark.parametrize("variant", [
    dict(num_class_embeds=1000, only_cross_attention=(True, False)),  # the x4 upscaler: noise level as a label
    dict(class_embed_type="timestep"),
    dict(class_embed_type="projection", projection_class_embeddings_input_dim=6),
    dict(class_embed_type="simple_projection", projection_class_embeddings_input_dim=6),
    dict(class_embed_type="simple_projection", projection_class_embeddings_input_dim=6, class_embeddings_concat=True),
    dict(class_embed_type="identity"),
], ids=["upscaler", "timestep", "projection", "simple_projection", "concat", "identity"])
def test_class_labels(variant):
    config = {**TINY, **variant}
    reference, model = pair(config)
    sample, t, text = inputs(config)
    g = torch.Generator().manual_seed(2)
    if "projection_class_embeddings_input_dim" in variant:
        labels = torch.randn(2, 6, generator=g)
    elif variant.get("class_embed_type") == "identity":
        labels = torch.randn(2, 4 * 32, generator=g)
    else:
        labels = torch.tensor([20, 350])
    out = assert_same(reference, model, sample, t, text, class_labels=labels)
    other = model(sample, t, text, class_labels=labels.flip(0) if labels.dtype == torch.int64 else labels * 2).sample
    assert max_relative_error(other, out) > 1e-4
    with pytest.raises(ValueError, match="class_labels are required"):
        model(sample, t, text)


def test_class_labels_without_a_class_embedding_are_refused():
    _, model = pair(TINY)
    sample, t, text = inputs(TINY)
    with pytest.raises(ValueError, match="no class embedding"):
        model(sample, t, text, class_labels=torch.tensor([1, 2]))


def sdxl_added(batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(2)
    return {"text_embeds": torch.randn(batch, 16, generator=g),
            "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0], [64.0, 48.0, 8.0, 4.0, 32.0, 32.0]])[:batch]}


def test_sdxl_shaped_unet_with_added_conditions():
    reference, model = pair(SDXL_TINY)
    sample, t, text = inputs(SDXL_TINY)
    out = assert_same(reference, model, sample, t, text, added_cond_kwargs=sdxl_added())
    other = sdxl_added()
    other["time_ids"] = other["time_ids"].flip(0)
    assert max_relative_error(model(sample, t, text, added_cond_kwargs=other).sample, out) > 1e-4
    with pytest.raises(ValueError, match="must contain"):
        model(sample, t, text)
    with pytest.raises(ValueError, match="not used"):
        pair(TINY)[1](*inputs(TINY), added_cond_kwargs=sdxl_added())


def test_asymmetric_transformer_depth_and_per_level_cross_attention_dim():
    config = dict(SDXL_TINY, transformer_layers_per_block=((1, 2), (2, 1), (1, 2)),
                  reverse_transformer_layers_per_block=((2, 1, 1), (1, 1, 2), (1, 1, 1)), cross_attention_dim=(24, 24, 24))
    reference, model = pair(config)
    assert shapes(model) == shapes(reference)
    sample, t, text = inputs(SDXL_TINY)
    assert_same(reference, model, sample, t, text, added_cond_kwargs=sdxl_added())
    with pytest.raises(ValueError, match="reverse_transformer_layers_per_block"):
        NoiseUNet(**{**config, "reverse_transformer_layers_per_block": None})
    # diffusers' own suite: lists longer than a level's blocks, read up to its length
    longer = dict(TINY, layers_per_block=1, transformer_layers_per_block=[[3, 2], 1],
                  reverse_transformer_layers_per_block=[[3, 4], 1])
    reference, model = pair(longer)
    assert_same(reference, model, *inputs(longer), grads=False)


def test_full_sdxl_base_config_maps_every_weight():
    with torch.device("meta"):
        reference = UNet2DConditionModel(**SDXL_BASE)
        model = NoiseUNet.from_config(reference.config)
    assert shapes(model) == shapes(reference)
    assert sum(p.numel() for p in model.parameters()) == 2_567_463_684


# Attention processors, slicing, QKV fusion, FreeU -------------------------------------------------------------

def test_attention_processors_set_and_reset():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from noiseunet.model.attention import NoiseUNetAttnProcessor

    reference, model = pair(TINY)
    sample, t, text = inputs(TINY)
    assert list(model.attn_processors) == list(reference.attn_processors)
    assert all(isinstance(p, NoiseUNetAttnProcessor) for p in model.attn_processors.values())
    for processor in (AttnProcessor(), AttnProcessor2_0()):
        reference.set_attn_processor(processor)
        model.set_attn_processor(processor)
        assert all(p is processor for p in model.attn_processors.values())
        assert_same(reference, model, sample, t, text)
    names = list(model.attn_processors)
    model.set_attn_processor({name: AttnProcessor() if i % 2 else AttnProcessor2_0() for i, name in enumerate(names)})
    assert_same(reference, model, sample, t, text)
    reference.set_default_attn_processor()
    model.set_default_attn_processor()
    assert all(isinstance(p, NoiseUNetAttnProcessor) for p in model.attn_processors.values())
    assert_same(reference, model, sample, t, text)
    with pytest.raises(ValueError, match="not taken by any attention processor"):
        model(sample, t, text, cross_attention_kwargs={"unknown": 1})


@pytest.mark.parametrize("slice_size", ["auto", "max", 1, None])
def test_attention_slicing(slice_size):
    reference, model = pair(TINY)
    sample, t, text = inputs(TINY)
    reference.set_attention_slice(slice_size)
    model.set_attention_slice(slice_size)
    assert_same(reference, model, sample, t, text)


def test_fused_and_unfused_qkv_projections():
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    reference, model = pair(TINY)
    sample, t, text = inputs(TINY)
    plain = assert_same(reference, model, sample, t, text)
    reference.fuse_qkv_projections()
    model.fuse_qkv_projections()
    assert all(isinstance(p, FusedAttnProcessor2_0) for p in model.attn_processors.values())
    fused = assert_same(reference, model, sample, t, text, grads=False)
    assert max_relative_error(fused, plain) < 1e-5
    reference.unfuse_qkv_projections()
    model.unfuse_qkv_projections()
    assert_same(reference, model, sample, t, text)


def test_freeu_on_and_off():
    reference, model = pair(dict(TINY, block_out_channels=(32, 64, 64), layers_per_block=1,
                                 down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
                                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2))
    sample, t, text = inputs(TINY)
    plain = assert_same(reference, model, sample, t, text)
    for unet in (reference, model):
        unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    freeu = assert_same(reference, model, sample, t, text)
    assert max_relative_error(freeu, plain) > 1e-3
    for unet in (reference, model):
        unet.disable_freeu()
    assert max_relative_error(assert_same(reference, model, sample, t, text), plain) < 1e-6


# IP-Adapter ---------------------------------------------------------------------------------------------------

def ip_adapter_state_dict(unet, image_embed_dim: int = 12, seed: int = 4) -> dict:
    """A random IP-Adapter in the state-dict layout diffusers' UNet loader reads."""
    g = torch.Generator().manual_seed(seed)
    cross, width = unet.config.cross_attention_dim, unet.config.block_out_channels
    image_proj = {"proj.weight": torch.randn(4 * cross, image_embed_dim, generator=g) * 0.1,
                  "proj.bias": torch.randn(4 * cross, generator=g) * 0.1,
                  "norm.weight": 1 + torch.randn(cross, generator=g) * 0.1,
                  "norm.bias": torch.randn(cross, generator=g) * 0.1}
    layers, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            hidden = (width[-1] if name.startswith("mid_block")
                      else (width[::-1] if name.startswith("up_blocks") else width)[int(name.split(".")[1])])
            for kind in ("to_k_ip", "to_v_ip"):
                layers[f"{key_id}.{kind}.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
            key_id += 2
    return {"image_proj": image_proj, "ip_adapter": layers}


def test_ip_adapter_weights_loaded_through_the_unet_loader():
    reference, model = pair(TINY)
    sample, t, text = inputs(TINY)
    plain = assert_same(reference, model, sample, t, text, grads=False)
    state_dict = ip_adapter_state_dict(reference)
    for unet in (reference, model):
        unet._load_ip_adapter_weights([state_dict])
    assert shapes(model) == shapes(reference)
    image_embeds = [torch.randn(2, 1, 12, generator=torch.Generator().manual_seed(5))]
    steered = assert_same(reference, model, sample, t, text, added_cond_kwargs={"image_embeds": image_embeds})
    assert max_relative_error(steered, plain) > 1e-3
    scale = {"scale": 0.5}  # a LoRA scale, taken by the decorator; ip_adapter_masks goes to the IP processors
    assert_same(reference, model, sample, t, text, added_cond_kwargs={"image_embeds": image_embeds}, grads=False,
                cross_attention_kwargs=scale)
    with pytest.raises(ValueError, match="image_embeds"):
        model(sample, t, text)


@pytest.mark.parametrize("layers", [(1, 2), (2, 1)])
def test_per_level_layers_per_block(layers):
    config = dict(TINY, layers_per_block=layers)
    reference, model = pair(config)
    assert_same(reference, model, *inputs(config))


def test_set_default_attn_processor_refuses_what_diffusers_refuses():
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    reference, model = pair(TINY)
    for unet in (reference, model):
        unet.set_attn_processor(CustomDiffusionAttnProcessor(train_kv=False, train_q_out=False, hidden_size=32))
        with pytest.raises(ValueError, match="Cannot call `set_default_attn_processor`"):
            unet.set_default_attn_processor()


def test_pooled_text_conditioning_matches_diffusers():
    """addition_embed_type="text": the text, pooled by attention, is added to every block's timestep embedding."""
    config = dict(TINY, addition_embed_type="text", addition_embed_type_num_heads=4)
    reference, model = pair(config)
    sample, t, text = inputs(config)
    assert_same(reference, model, sample, t, text)
    other_text = text.clone()
    other_text[:, :, 0] += 1.0  # the pooled path alone (the cross-attention reads the same change)
    assert not torch.allclose(model(sample, t, other_text).sample, model(sample, t, text).sample)
    with pytest.raises(ValueError, match="must divide the width"):
        NoiseUNet(**dict(config, addition_embed_type_num_heads=5))
    with pytest.raises(ValueError, match="encoder_hidden_states is needed"):
        model(sample, t, None)


def test_scale_shift_time_conditioning_matches_diffusers():
    """resnet_time_scale_shift="scale_shift" (AdaGN): the embedding scales and shifts every residual block's
    normalised features, in the middle block too; a diffusers config file with it loads the same weights."""
    config = dict(TINY, resnet_time_scale_shift="scale_shift", addition_embed_type="text",
                  addition_embed_type_num_heads=4)
    reference, model = pair(config)
    assert model.mid_block.resnets[0].time_emb_proj.out_features == 2 * 64
    assert_same(reference, model, *inputs(config))
    with pytest.raises(ValueError, match="resnet_time_scale_shift='ada_group' is not supported"):
        NoiseUNet(**dict(TINY, resnet_time_scale_shift="ada_group"))
