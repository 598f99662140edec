"""Text conditioning: a CLIP tokenizer and text encoder, loaded by name or built from scratch offline.

Stable Diffusion conditions on the last hidden states of a frozen CLIP text encoder (Radford et al. 2021).
Users with internet pass a hub name (``openai/clip-vit-large-patch14``) or a local folder. Without one,
a small CLIP text model is built from a ``CLIPTextConfig`` and a byte-level BPE tokenizer is trained on
the training captions, both in the standard classes so they save and load with ``from_pretrained`` and
plug into diffusers pipelines unchanged.
"""

import re
from collections import Counter
from typing import Iterable

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .files import from_pretrained, has_subfolder

MAX_LENGTH = 77  # CLIP's context length; every SD pipeline pads prompts to it


def train_tokenizer(captions: Iterable[str], vocab_size: int = 1000, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP BPE tokenizer (CLIP's normalisation and byte-level pre-tokenisation) for ``captions``.

    The most frequent caption words become single tokens, built by merges that grow each word left to
    right; every byte stays encodable alone or ending a word, so unseen words and punctuation never
    become unknown tokens. The merges are derived by sorting (count, then word), not by a trainer with
    hash-ordered ties, so the same captions always give the same token ids: a run restarted from scratch
    and a resumed run see the same tokenizer. ``max_length`` (at most 77) is the padded prompt length:
    short captions need far fewer than CLIP's 77 tokens, and every cross-attention layer pays for each one.
    """
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    counts = Counter(word for caption in captions for word in re.findall(r"[a-z]+", caption.lower()))
    merges = []
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        prefix = symbols[0]
        for symbol in symbols[1:]:
            merged = prefix + symbol
            if merged not in vocab:
                if len(vocab) >= vocab_size:
                    break
                vocab[merged] = len(vocab)
                merges.append((prefix, symbol))
            prefix = merged
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=min(max_length, MAX_LENGTH))


def build_text_encoder(
    tokenizer: CLIPTokenizer, hidden_size: int = 256, num_layers: int = 4, num_heads: int = 4
) -> CLIPTextModel:
    """A randomly initialised CLIP text transformer sized for ``tokenizer``'s vocabulary.

    Word embeddings start at unit scale instead of CLIP's 0.02. At 0.02 the attention and MLP outputs swamp
    them in the residual stream, so a caption's words blur into their context: after 10 minutes on the
    shapes data the final states of "left" and "right" had a cosine similarity of 0.991, and the UNet
    never learned which side a shape goes on. At unit scale every word stays distinguishable from the start.
    """
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPTextModel(config)
    torch.nn.init.normal_(model.get_input_embeddings().weight, std=1.0)
    return model


def load_text_encoder(name_or_path: str, allow_pickle: bool = False) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """Tokenizer and text encoder from a hub name or folder: a CLIP model itself, or a diffusers pipeline
    folder/repo holding them under ``tokenizer/`` and ``text_encoder/``. Weights from safetensors only,
    unless ``allow_pickle``."""
    is_pipeline = has_subfolder(name_or_path, "text_encoder")
    tokenizer_folder, encoder_folder = ("tokenizer", "text_encoder") if is_pipeline else ("", "")
    tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder=tokenizer_folder)
    text_encoder = from_pretrained(CLIPTextModel, name_or_path, allow_pickle, subfolder=encoder_folder)
    return tokenizer, text_encoder


def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str]) -> torch.Tensor:
    """(len(prompts), tokens, hidden) last hidden states (tokens = the tokenizer's length, at most 77): the ``encoder_hidden_states`` the UNet attends to."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=min(tokenizer.model_max_length, MAX_LENGTH), truncation=True,
        return_tensors="pt",
    ).input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]
