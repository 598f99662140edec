"""Teach a trained model a new word: LoRA against full fine-tuning, and what the latent/text cache saves.

1. The base is the main job's model (``noiseunet main``, 10 minutes on the built-in shapes; or ``--base DIR``).
2. It is fine-tuned on ``--images`` rendered images of a shape the built-in data never shows, the diamond
   ("a red diamond on the left"), in every colour and position, for each budget of ``--budgets`` CPU-minutes,
   with LoRA (UNet and text encoder adapters) and in full (UNet and text encoder). The built-in shapes are
   replayed beside them (``--prior-data shapes``, half of every epoch): alone, the diamonds overwrite the
   old shapes (``--prior-share 0`` shows it).
3. Each result is scored by the pixel checker on the new prompts (every colour and position of the diamond)
   and on the built-in prompts, seen and held out, beside the base's scores: the new word should be learned
   (target >= 90% all-correct after 3 minutes) and nothing forgotten (old prompts within 2 points).
4. The step time of a latent-space fine-tune (an SD-shaped VAE, 128 px) with and without the cache.

    python scripts/finetune_benchmark.py                       # the whole table (about 50 minutes)
    python scripts/finetune_benchmark.py --base runs/main --budgets 1 3 --write-readme
"""

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from noiseunet.data.export import save_shapes_folder
from noiseunet.data.shapes import evaluation_specs, split_specs
from noiseunet.evaluation import judge
from noiseunet.pipeline import SAMPLING, generate, load_pipeline, use_scheduler
from noiseunet.training import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adherence_benchmark import machine  # noqa: E402
from readme_table import write_section  # noqa: E402

MODES = {  # what each mode trains, and its learning rate
    "lora": dict(lora_rank=16, train_text_encoder=True, learning_rate=1e-3),
    "full": dict(train_text_encoder=True, learning_rate=2e-4),
}
#: The trainer's defaults when the README's table was measured (they are 32 and 0.5 on a CPU now).
TABLE_SETTINGS = dict(batch_size=64, ema_power=0.75)


def new_word_folder(root: Path, count: int, seed: int = 11, size: int = 32) -> Path:
    """``count`` rendered diamonds with their captions, as a metadata.jsonl folder."""
    return save_shapes_folder(root, count, size, seed, split="new_word")


def adherence(run: Path, images_per_prompt: int) -> dict[str, float]:
    """All-correct share on the new prompts and on the built-in seen and held-out prompts."""
    pipe = use_scheduler(load_pipeline(run), SAMPLING.scheduler)
    pipe.set_progress_bar_config(disable=True)
    scores = {}
    for name, specs in (("new", split_specs("new_word")), ("seen", evaluation_specs(False)),
                        ("held_out", evaluation_specs(True))):
        rows = generate(pipe, [s.caption for s in specs], images_per_prompt, SAMPLING.seed, 128,
                        num_inference_steps=SAMPLING.steps)  # the model's own guidance
        verdicts = [judge(image, spec)["all"] for row, spec in zip(rows, specs) for image in row]
        scores[name] = sum(verdicts) / len(verdicts)
    return scores


def cache_step_times(work: Path, base: Path, steps: int = 6) -> dict[str, float]:
    """Seconds per step of a latent fine-tune at 128 px (an SD-shaped VAE, randomly initialised: its cost is
    the architecture's), with and without the cache, batch 8, frozen text encoder, LoRA on the UNet."""
    from diffusers import AutoencoderKL, DDPMScheduler

    from noiseunet import NoiseUNet, NoiseUNetPipeline
    from noiseunet.training.config import MODEL_PRESETS

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    source = load_pipeline(base)
    unet = NoiseUNet(**MODEL_PRESETS["small"].unet, in_channels=4, out_channels=4, sample_size=16,
                     cross_attention_dim=source.text_encoder.config.hidden_size)
    NoiseUNetPipeline(unet=unet, text_encoder=source.text_encoder, tokenizer=source.tokenizer, vae=vae,
                      scheduler=DDPMScheduler(beta_schedule="scaled_linear")).save_pretrained(work / "latent-base")
    data = new_word_folder(work / "latent-data", 32, seed=12, size=128)
    times = {}
    for cache in (True, False):
        out = work / f"latent-{'cached' if cache else 'uncached'}"
        train(TrainConfig(output_dir=str(out), pretrained=str(work / "latent-base"), data=str(data), resolution=128,
                          batch_size=8, max_steps=steps, max_minutes=None, lora_rank=8, cache=cache, log_every=1,
                          validate_every=0, checkpoint_every=10**6, report_to="none"))
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        times["cached" if cache else "uncached"] = (records[-1]["minutes"] - records[1]["minutes"]) * 60 / (steps - 2)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="the base model (default: train the main job for 10 minutes)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 3, 10], help="fine-tuning CPU-minutes")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--images", type=int, default=200, help="rendered images of the new word")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--prior-share", type=float, default=0.5, help="share of replayed built-in shapes (0: none)")
    parser.add_argument("--work", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--cache-timing", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a latent fine-tuning step with and without the cache")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work or temporary)
        base = Path(args.base) if args.base else train(TrainConfig(output_dir=str(work / "base"), max_minutes=10,
                                                                   report_to="none", **TABLE_SETTINGS))
        data = new_word_folder(work / "new-word", args.images)
        rows = [("base", 0, None, adherence(base, args.images_per_prompt))]
        for mode in args.modes:
            for budget in args.budgets:
                out = work / f"{mode}-{budget:g}"
                started = time.perf_counter()
                prior = dict(prior_data="shapes", prior_share=args.prior_share) if args.prior_share else {}
                train(TrainConfig(output_dir=str(out), pretrained=str(base), data=str(data), max_minutes=budget,
                                  validate_every=0, report_to="none", **prior, **MODES[mode],
                                  **TABLE_SETTINGS))
                steps = json.loads((out / "train_summary.json").read_text())["steps"]
                rows.append((mode, budget, steps, adherence(out, args.images_per_prompt)))
                print(f"{mode} {budget:g} min: {rows[-1][3]} ({time.perf_counter() - started:.0f} s)", flush=True)
        times = cache_step_times(work, base) if args.cache_timing else None

    replay = f"{args.prior_share:.0%} replayed built-in shapes" if args.prior_share else "no prior"
    lines = [f"Measured {datetime.date.today().isoformat()} on {machine()} by `python scripts/finetune_benchmark.py`"
             f" ({args.images} diamonds, {replay}).",
             "", "| model | budget | steps | new word (diamond), all correct | built-in seen | built-in held out |",
             "|---|---|---|---|---|---|"]
    for mode, budget, steps, score in rows:
        lines.append(f"| {mode} | {f'{budget:g} min' if budget else '-'} | {steps or '-'} | {score['new']:.1%} | "
                     f"{score['seen']:.1%} | {score['held_out']:.1%} |")
    if times:
        lines += ["", f"Latent fine-tuning step (SD-shaped VAE, 128 px, batch 8, LoRA): {times['uncached']:.2f} s encoding "
                  f"every step, {times['cached']:.2f} s with the cache ({times['uncached'] / times['cached']:.1f}x)."]
    table = "\n".join(lines)
    print(table)
    if args.write_readme:
        write_section("finetune", table)


if __name__ == "__main__":
    main()
