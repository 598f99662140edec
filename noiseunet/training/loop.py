"""The training loop: ``train(TrainConfig)`` -> a pipeline folder that ``NoiseUNetPipeline`` loads.

accelerate handles devices, mixed precision, gradient accumulation and several processes; diffusers
gives the noise schedule, the EMA and the min-SNR weights. What is ours: a data stream that is a pure
function of the seed (so resume replays it exactly), per-step noise generators (same reason), a time
budget, and a final folder in the standard pipeline layout.
"""

import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..data import open_source
from ..data.loader import TrainingStream, training_batches
from ..pipeline import NoiseUNetPipeline
from ..text import encode_prompts
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .components import build_components
from .config import TrainConfig
from .diffusion import diffusion_loss

MAX_BAD_STEPS_IN_A_ROW = 5


def resolve_precision(requested: str) -> str:
    """"auto": bf16 on GPUs that support it (else fp16) and on CPUs with AVX-512-BF16 or AMX, else fp32."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "no"


def train(config: TrainConfig) -> Path:
    """Train a NoiseUNet (and, when built from scratch, its text encoder) and save the pipeline folder."""
    output = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_precision(config.mixed_precision),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    accelerator.wait_for_everyone()

    source = open_source(config.data, config.resolution, config.caption_column, config.image_column, config.seed)
    parts = build_components(config, source)
    unet, text_encoder, vae, scheduler = parts.unet, parts.text_encoder, parts.vae, parts.scheduler
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    trained = [unet] + ([text_encoder] if parts.train_text_encoder else [])
    parameters = [p for model in trained for p in model.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.warmup_steps)
    ema = EMAModel(parameters, decay=config.ema_max_decay, use_ema_warmup=True, power=config.ema_power)

    unet, text_encoder, optimizer, lr_schedule = accelerator.prepare(unet, text_encoder, optimizer, lr_schedule)
    accelerator.register_for_checkpointing(ema)
    if vae is not None:
        vae.to(accelerator.device)
    ema.to(accelerator.device)
    forward_unet = torch.compile(unet) if config.compile else unet

    step, images_seen = 0, 0
    checkpoint = resolve_resume(output, config.resume)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        step, images_seen = state["step"], state["images_seen"]
        accelerator.print(f"resumed from {checkpoint} at step {step}")

    world, micro_batch = accelerator.num_processes, config.batch_size
    per_step = micro_batch * world * config.gradient_accumulation_steps
    stream = TrainingStream(source, config.resolution, config.seed, config.random_crop, config.flip, config.caption_dropout)
    batches = iter(training_batches(stream, micro_batch, step * per_step, accelerator.process_index, world,
                                    config.num_workers))

    max_steps = config.max_steps or math.inf
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    progress = tqdm(total=None if max_steps == math.inf else max_steps, initial=step, unit="step",
                    disable=not accelerator.is_main_process, desc="training")
    log_file = output / "train_log.jsonl"
    start, bad_in_a_row, skipped, loss_sum, loss_count = time.perf_counter(), 0, 0, 0.0, 0
    last_log = start
    unet.train()
    text_encoder.train(parts.train_text_encoder)
    while step < max_steps and not _out_of_time(accelerator, start, budget):
        for _ in range(config.gradient_accumulation_steps):
            batch = next(batches)
            generator = torch.Generator(accelerator.device).manual_seed(
                hash((config.seed, step, accelerator.process_index)) % 2**63
            )
            with accelerator.accumulate(unet), accelerator.autocast():
                x0 = batch["pixel_values"].to(accelerator.device)
                if vae is not None:
                    with torch.no_grad():
                        x0 = vae.encode(x0).latent_dist.sample(generator) * vae.config.scaling_factor
                with torch.set_grad_enabled(parts.train_text_encoder):
                    context = encode_prompts(parts.tokenizer, text_encoder, batch["captions"])
                loss = diffusion_loss(forward_unet, x0, context, scheduler, generator, config.snr_gamma,
                                      config.offset_noise)
                if not torch.isfinite(loss):  # skip the update, keep the weights clean
                    optimizer.zero_grad(set_to_none=True)
                    continue
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)
        finite = torch.isfinite(loss).item()
        bad_in_a_row = 0 if finite else bad_in_a_row + 1
        skipped += not finite
        if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
            raise FloatingPointError(f"loss was NaN/Inf for {bad_in_a_row} steps in a row at step {step}; "
                                     "lower --learning-rate or check the data")
        if finite:
            ema.step(parameters)
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
        step += 1
        images_seen += per_step
        progress.update(1)
        if step % config.log_every == 0 and accelerator.is_main_process:
            now = time.perf_counter()
            record = {"step": step, "loss": loss_sum / max(loss_count, 1), "images_seen": images_seen,
                      "minutes": (now - start) / 60, "lr": lr_schedule.get_last_lr()[0],
                      "images_per_second": per_step * config.log_every / (now - last_log)}
            progress.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_second']:.0f}")
            last_log = now
            with open(log_file, "a") as file:
                file.write(json.dumps(record) + "\n")
            loss_sum, loss_count = 0.0, 0
        if step % config.checkpoint_every == 0:
            save_checkpoint(accelerator, output, {"step": step, "images_seen": images_seen}, config.checkpoints_total_limit)
    progress.close()

    minutes = (time.perf_counter() - start) / 60
    save_checkpoint(accelerator, output, {"step": step, "images_seen": images_seen}, config.checkpoints_total_limit)
    if accelerator.is_main_process:
        save_pipeline(accelerator, parts, unet, text_encoder, ema, output)
        summary = {"steps": step, "images_seen": images_seen, "minutes": minutes, "skipped_steps": skipped,
                   "precision": accelerator.mixed_precision, "processes": world,
                   "images_per_second": images_seen / max(minutes * 60, 1e-9)}
        (output / "train_summary.json").write_text(json.dumps(summary, indent=2))
        accelerator.print(f"trained {step} steps ({images_seen} images) in {minutes:.1f} min -> {output}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output


def _out_of_time(accelerator: Accelerator, start: float, budget: float) -> bool:
    """Every process stops at the same step: the main process's clock decides."""
    if budget == math.inf:
        return False
    flag = torch.tensor([float(time.perf_counter() - start >= budget)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="max").item()) if accelerator.num_processes > 1 else bool(flag.item())


def save_pipeline(accelerator: Accelerator, parts, unet, text_encoder, ema: EMAModel, output: Path) -> None:
    """Write the EMA weights as a NoiseUNetPipeline folder (unet/, text_encoder/, tokenizer/, scheduler/[, vae/])."""
    unet, text_encoder = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
    trained = [unet] + ([text_encoder] if parts.train_text_encoder else [])
    parameters = [p for model in trained for p in model.parameters()]
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        pipeline = NoiseUNetPipeline(unet=unet, text_encoder=text_encoder, tokenizer=parts.tokenizer,
                                     scheduler=parts.scheduler, vae=parts.vae)
        pipeline.save_pretrained(output, safe_serialization=True)
    finally:
        ema.restore(parameters)
