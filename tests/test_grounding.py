"""The grounding loss: object regions from the rendered data, word positions, recorded attention, the loss."""

import json

import numpy as np
import pytest
import torch

from noiseunet import NoiseUNet, NoiseUNetPipeline
from noiseunet.data import ShapesDataset
from noiseunet.data.grounding import object_regions, regions_as_trained
from noiseunet.data.loader import TrainingStream, collate
from noiseunet.data.objects import COLOURS
from noiseunet.data.shapes import FAMILIES
from noiseunet.model.attention import NoiseUNetAttnProcessor
from noiseunet.model.attention_maps import CrossAttentionMaps
from noiseunet.text import encode_prompts, train_tokenizer, word_token_positions
from noiseunet.training import train
from noiseunet.training.diffusion import diffusion_loss
from noiseunet.training.grounding import grounding_loss

from test_training import tiny_config


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_named_object_is_its_words_and_exactly_its_pixels(family):
    dataset = ShapesDataset(size=32, mixture={family: 1.0})
    for index in range(20):
        item = dataset[index]
        spec, pixels = item["spec"], np.asarray(item["image"])
        regions = object_regions(spec, item["image"], item["mask"])
        words = spec.caption.split()
        assert [tuple(words[a:b]) for a, b, _ in regions] == [
            (colour, shape + ("s" if getattr(spec, "count", 1) > 1 else "")) for colour, shape in spec.things]
        for (_, _, on), (colour, _) in zip(regions, spec.things):
            assert on.any() and (pixels[on] == COLOURS[colour]).all()
        # every object pixel belongs to exactly one named object (a count's objects to the one region)
        assert np.array_equal(np.sum([on for _, _, on in regions], axis=0), item["mask"] > 0)


def test_training_regions_mirror_with_the_image_and_go_with_a_dropped_caption():
    stream = TrainingStream(ShapesDataset(size=32, mixture={"relative_position": 1.0}), 32, flip=True,
                            caption_dropout=0.0, regions=True)
    mirrored = 0
    for position in range(30):
        example = stream[position]
        mirrored += example["mirrored"]
        for _, _, on in example["regions"]:  # the region's pixels are its object's, in the pixels trained on
            assert (example["pixel_values"][:, torch.as_tensor(on)] > -1).any(0).all()
    assert mirrored > 0  # above/below captions may be mirrored, and their regions with them
    assert regions_as_trained([(1, 3, np.eye(2, dtype=bool))], "", False) == []
    batch = collate([stream[0], stream[1]])
    assert len(batch["regions"]) == 2 and len(batch["regions"][0]) == 2


def test_word_positions_are_where_each_words_tokens_sit_in_the_encoded_caption():
    captions = ["a red circle to the left of a blue square", "three green triangles", "a purplish hexagon"]
    tokenizer = train_tokenizer(captions[:2], vocab_size=560)  # few merges: rare words split into pieces
    for caption in captions:
        ids = tokenizer(caption).input_ids
        positions = word_token_positions(tokenizer, caption)
        assert [ids[p] for word in positions for p in word] == ids[1:-1]
        for word, at in zip(caption.split(), positions):
            assert [ids[p] for p in at] == tokenizer(word, add_special_tokens=False).input_ids
    assert any(len(at) > 1 for at in word_token_positions(tokenizer, captions[2]))


def test_the_loss_is_the_squared_share_of_the_words_attention_outside_the_object():
    attention = torch.zeros(1, 4, 3)  # 2x2 pixels, 3 tokens
    attention[0, :, 0] = 1.0
    attention[0, 0] = torch.tensor([0.2, 0.6, 0.2])  # pixel (0, 0): 0.6 to token 1
    attention[0, 3] = torch.tensor([0.7, 0.2, 0.1])  # pixel (1, 1): 0.2 to token 1
    on = np.array([[True, False], [False, False]])  # the object is pixel (0, 0)
    loss = grounding_loss([attention], [[(0, 1, on)]], [[(1,)]])
    torch.testing.assert_close(loss, torch.tensor((1 - 0.6 / 0.8) ** 2))
    # at a coarser layer the mask is averaged: one cell holding a quarter of the object
    coarse = torch.ones(1, 1, 3) / 3
    torch.testing.assert_close(grounding_loss([coarse], [[(0, 1, on)]], [[(1,)]]), torch.tensor(0.75 ** 2))
    assert grounding_loss([attention], [[]], [[]]) == 0  # no object named (a dropped caption)


def test_recorded_maps_leave_the_outputs_unchanged_and_are_probabilities():
    torch.manual_seed(0)
    unet = NoiseUNet(block_out_channels=(32, 32), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                     attention_head_dim=2, sample_size=8, cross_attention_dim=16)
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 16)
    plain = unet(x, t, context).sample
    maps = CrossAttentionMaps(unet)
    with maps.recording() as recorded:
        recording = unet(x, t, context).sample
    torch.testing.assert_close(recording, plain, rtol=1e-5, atol=1e-5)
    cross_layers = sum(name.endswith("attn2") for name, _ in unet.named_modules())
    assert len(recorded) == cross_layers
    assert {m.shape[1] for m in recorded} == {64, 16} and all(m.shape[::2] == (2, 5) for m in recorded)
    assert all(torch.allclose(m.sum(-1), torch.ones(())) for m in recorded)
    with maps.recording():
        pass
    unet(x, t, context)  # outside recording nothing is kept
    assert len(recorded) == cross_layers
    assert all(isinstance(p, NoiseUNetAttnProcessor) for p in unet.attn_processors.values())


def grounding_of(run_dir, batch) -> float:
    """The grounding loss of a trained pipeline's UNet on ``batch``, at fixed noise."""
    pipe = NoiseUNetPipeline.from_pretrained(run_dir)
    maps = CrossAttentionMaps(pipe.unet)
    context = encode_prompts(pipe.tokenizer, pipe.text_encoder, batch["captions"])
    positions = [word_token_positions(pipe.tokenizer, caption) for caption in batch["captions"]]
    with torch.no_grad(), maps.recording() as recorded:
        diffusion_loss(pipe.unet, batch["pixel_values"], context, pipe.scheduler,
                       [torch.Generator().manual_seed(i) for i in range(len(batch["captions"]))])
    return float(grounding_loss(recorded, batch["regions"], positions))


def test_training_with_the_grounding_loss_puts_the_words_attention_on_their_objects(tmp_path):
    unet = dict(block_out_channels=(32, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=2)
    common = dict(resolution=32, patch_size=1, unet=unet, mixture={"relative_position": 1.0}, max_steps=40, batch_size=8,
                  learning_rate=3e-3, warmup_steps=0, lr_cooldown=0)
    train(tiny_config(tmp_path / "plain", **common))
    train(tiny_config(tmp_path / "grounded", grounding_loss=1.0, **common))
    stream = TrainingStream(ShapesDataset(size=32, seed=9, mixture={"relative_position": 1.0}), 32,
                            caption_dropout=0.0, regions=True)
    batch = collate([stream[i] for i in range(32)])
    assert grounding_of(tmp_path / "grounded", batch) < 0.8 * grounding_of(tmp_path / "plain", batch)
    logged = [json.loads(line) for line in (tmp_path / "grounded" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < record["grounding_loss"] < 1 for record in logged) and len(logged) == 40
    assert "grounding_loss" not in (tmp_path / "plain" / "metrics.jsonl").read_text()


def test_the_grounding_loss_is_refused_without_the_built_in_data(tmp_path):
    with pytest.raises(ValueError, match="^--grounding-loss needs the built-in shapes data"):
        tiny_config(tmp_path, data=str(tmp_path), grounding_loss=0.1)
    with pytest.raises(ValueError, match="^--grounding-loss reads the attention maps"):
        tiny_config(tmp_path, grounding_loss=0.1, gradient_checkpointing=True)
