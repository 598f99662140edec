"""The README's table of model presets: parameters, and training images/s on this machine.

For each preset, the trainer's own components (UNet and the text encoder built from scratch, as
``noiseunet train --model NAME`` builds them) take timed training steps at the preset's typical input
size: captions encoded, the diffusion loss, backward, gradient clipping and fused AdamW, under the precision
the trainer picks (bf16 autocast where the CPU has AVX-512-BF16 or AMX). Data loading is left out
(on the CPU the whole loop ran at 0.93 of this step, README "Speed against diffusers").

    python scripts/presets.py                      # every preset, prints the table
    python scripts/presets.py --write-readme       # also replaces the table in README.md
"""

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from noiseunet.precision import autocast, resolve_precision
from noiseunet.text import encode_prompts
from noiseunet.training.components import build_components
from noiseunet.training.config import MODEL_PRESETS, TrainConfig
from noiseunet.training.diffusion import diffusion_loss
from noiseunet.training.run import open_batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adherence_benchmark import machine  # noqa: E402
from readme_table import write_section  # noqa: E402

# Input size and batch per preset: what each is for (see MODEL_PRESETS' `suits`).
MEASURED_AT = {"tiny": (32, 32), "small": (32, 32), "small-patches": (32, 32), "base": (64, 16), "sd15": (64, 2)}


def images_per_second(name: str, steps: int, warmup: int) -> tuple[int, int, float]:
    """(UNet parameters, text-encoder parameters, training images/s) of one preset."""
    resolution, batch = MEASURED_AT[name]
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(output_dir=tmp, model=name, resolution=resolution, batch_size=batch)
        batches = open_batches(config)
        parts = build_components(config, batches)
    unet, text_encoder = parts.unet.train(), parts.text_encoder.train()
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=True)  # as the trainer builds it
    fixed = next(batches)
    x0 = fixed["pixel_values"]
    if parts.vae is not None:  # small, small-patches: patches of pixels
        x0 = parts.vae.encode(x0).latent_dist.mode()
    precision = resolve_precision(config.mixed_precision)

    def step() -> None:
        with autocast("cpu", precision):
            context = encode_prompts(parts.tokenizer, text_encoder, fixed["captions"])
            loss = diffusion_loss(unet, x0, context, parts.scheduler)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    rate = batch * steps / (time.perf_counter() - started)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    return count(unet), count(text_encoder), rate


def table(rows: dict[str, tuple[int, int, float]], precision: str) -> str:
    lines = [f"Measured {date.today()} on {machine()}, {'float32' if precision == 'no' else precision}, "
             "by `python scripts/presets.py` (training step: captions, loss, backward, fused AdamW; no data loading).",
             "", "| preset | UNet | text encoder | levels (widths) | input, batch | training img/s (CPU) | suits |",
             "|---|---|---|---|---|---|---|"]
    for name, (unet, text, rate) in rows.items():
        preset, (resolution, batch) = MODEL_PRESETS[name], MEASURED_AT[name]
        widths = ", ".join(str(w) for w in preset.unet["block_out_channels"])
        if preset.patch_size > 1:
            widths = f"{preset.patch_size}x{preset.patch_size} patches; {widths}"
        text_size = f"{text / 1e6:.2f}M ({preset.text_layers} x {preset.text_hidden_size})"
        lines.append(f"| `{name}` | {unet / 1e6:.1f}M | {text_size} | {widths} | {resolution}x{resolution}, {batch} | "
                     f"{f'{rate:.1f}' if rate >= 0.05 else '< 0.05'} | {preset.suits} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(MODEL_PRESETS), choices=list(MODEL_PRESETS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    rows = {}
    for name in args.presets:
        steps = max(2, args.steps // 2) if name == "sd15" else args.steps
        rows[name] = images_per_second(name, steps, 1 if name == "sd15" else args.warmup)
        print(f"{name}: {rows[name][2]:.1f} img/s", flush=True)
    text = table(rows, resolve_precision("auto"))
    print(text)
    if args.write_readme:
        write_section("presets", text)
        print("README.md updated")


if __name__ == "__main__":
    main()
