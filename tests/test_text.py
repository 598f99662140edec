"""The text side built from scratch: a tokenizer with a token per caption word and room for the longest
caption, and the bidirectional CLIP text model."""

import itertools
import string

import pytest
import torch
from conftest import tiny_unet
from transformers import CLIPTextModel

from noiseunet.text import (
    MAX_LENGTH,
    BidirectionalCLIPTextModel,
    build_text_encoder,
    encode_prompts,
    load_text_encoder,
    train_tokenizer,
)


def words(count: int) -> list[str]:
    """``count`` distinct made-up words of four letters, sharing prefixes as real vocabularies do."""
    return ["".join(letters) for letters in itertools.islice(itertools.product(string.ascii_lowercase, repeat=4), count)]


def test_with_room_every_caption_word_is_one_token():
    vocabulary = words(1200)
    captions = [f"{a} {b}" for a, b in zip(vocabulary, reversed(vocabulary))]
    tokenizer = train_tokenizer(captions, vocab_size=5000)
    for word in vocabulary:
        assert len(tokenizer(word).input_ids) == 3, word  # start, the word, end


def test_a_small_vocabulary_still_encodes_every_word_in_pieces():
    vocabulary = words(1200)
    tokenizer = train_tokenizer(vocabulary, vocab_size=600)
    assert len(tokenizer) == 600
    ids = tokenizer(vocabulary[-1]).input_ids
    assert len(ids) > 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == vocabulary[-1]


def test_no_max_length_fits_the_longest_caption_and_at_most_clips():
    captions = ["a dog", " ".join(words(30))]
    assert train_tokenizer(captions, max_length=None).model_max_length == 32  # 30 words, start and end
    assert train_tokenizer(captions, max_length=8).model_max_length == 8
    assert train_tokenizer([" ".join(words(100))], max_length=None).model_max_length == MAX_LENGTH


def bidirectional_pair(tokenizer):
    """A causal and a bidirectional text encoder with the same weights."""
    torch.manual_seed(0)
    causal = build_text_encoder(tokenizer, hidden_size=32, num_layers=2, num_heads=2).eval()
    full = build_text_encoder(tokenizer, hidden_size=32, num_layers=2, num_heads=2, bidirectional=True).eval()
    full.load_state_dict(causal.state_dict())  # the same parameters, by the same names
    return causal, full


def test_bidirectional_tokens_see_the_words_after_them(tokenizer):
    causal, full = bidirectional_pair(tokenizer)
    left, right = encode_prompts(tokenizer, causal, ["a red circle on the left", "a red circle on the right"])
    assert torch.equal(left[:4], right[:4])  # causal: "a red circle" cannot know the side
    left, right = encode_prompts(tokenizer, full, ["a red circle on the left", "a red circle on the right"])
    assert (left[1:4] - right[1:4]).abs().amax() > 1e-3  # every token sees it
    assert isinstance(full, CLIPTextModel)  # LoRA targets, pipelines and type checks see a CLIP text model
    with pytest.raises(ValueError, match="no padding mask"):
        full(torch.tensor([[0, 5, 1, 1]]), attention_mask=torch.tensor([[1, 1, 1, 0]]))


def test_a_saved_bidirectional_encoder_loads_as_one_alone_and_in_a_diffusers_pipeline(tokenizer, vae, tmp_path):
    from diffusers import DDPMScheduler, DiffusionPipeline, StableDiffusionPipeline

    from noiseunet import NoiseUNetPipeline

    _, full = bidirectional_pair(tokenizer)
    prompts = ["a green square on the left"]
    expected = encode_prompts(tokenizer, full, prompts)
    pipe = NoiseUNetPipeline(unet=tiny_unet(3, 16, 32), text_encoder=full, tokenizer=tokenizer,
                             scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.save_pretrained(tmp_path)
    _, loaded = load_text_encoder(str(tmp_path))  # as --text-encoder / --pretrained read it
    assert type(loaded) is BidirectionalCLIPTextModel
    assert torch.equal(encode_prompts(tokenizer, loaded.eval(), prompts), expected)
    assert type(NoiseUNetPipeline.from_pretrained(tmp_path).text_encoder) is BidirectionalCLIPTextModel
    sd = StableDiffusionPipeline(vae=vae, text_encoder=full, tokenizer=tokenizer, unet=tiny_unet(4, 16, 32),
                                 scheduler=DDPMScheduler(), safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
    sd.save_pretrained(tmp_path / "sd")
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "sd")  # diffusers reads the class from model_index.json
    assert type(reloaded.text_encoder) is BidirectionalCLIPTextModel
    assert torch.equal(reloaded.encode_prompt(prompts, "cpu", 1, False)[0], expected)
