"""The training loop: ``train(TrainConfig)`` -> a pipeline folder that ``NoiseUNetPipeline`` loads.

accelerate handles devices, mixed precision, gradient accumulation and several processes; diffusers
gives the noise schedule, the EMA and the min-SNR weights. What is ours: a data stream that is a pure
function of the seed (so resume replays it exactly), per-step noise generators (same reason), a time
budget, clean stops on SIGINT/SIGTERM, and a final folder in the standard pipeline layout.
"""

import json
import math
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..data import ShapesDataset, open_source
from ..data.checks import usable_samples
from ..data.loader import TrainingStream, training_batches
from ..data.shapes import SAMPLE_PROMPTS
from ..grid import image_grid
from ..pipeline import NoiseUNetPipeline, generate, use_scheduler
from ..text import encode_prompts
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .components import Components, build_components
from .config import TrainConfig
from .diffusion import diffusion_loss
from .run_log import RunLog

MAX_BAD_STEPS_IN_A_ROW = 5


def resolve_precision(requested: str) -> str:
    """"auto": bf16 on GPUs that support it (else fp16) and on CPUs with AVX-512-BF16 or AMX, else fp32."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "no"


def make_accelerator(mixed_precision: str, **kwargs) -> Accelerator:
    """An Accelerator with this run's precision, also when an earlier run in the same process used another.

    accelerate keeps the precision in process-wide state and refuses a second, different one; clearing the
    accelerator part of that state (the process group stays) lets a notebook or a test suite call
    ``train`` several times.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=resolve_precision(mixed_precision), **kwargs)


def train(config: TrainConfig) -> Path:
    """Train a NoiseUNet (and, when built from scratch, its text encoder) and save the pipeline folder."""
    output = Path(config.output_dir)
    accelerator = make_accelerator(config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps)
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    accelerator.wait_for_everyone()

    source = open_source(config.data, config.resolution, config.caption_column, config.image_column, config.seed)
    source = usable_samples(source, config.resolution, config.on_bad_sample)
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

    world = accelerator.num_processes
    per_step = config.batch_size * world * config.gradient_accumulation_steps
    stream = TrainingStream(source, config.resolution, config.seed, config.random_crop, config.flip, config.caption_dropout)
    batches = iter(training_batches(stream, config.batch_size, step * per_step, accelerator.process_index, world,
                                    config.num_workers))
    prompts = config.validation_prompts or (list(SAMPLE_PROMPTS[:4]) if isinstance(source, ShapesDataset) else [])

    def checkpoint_now() -> None:
        save_checkpoint(accelerator, output, {"step": step, "images_seen": images_seen}, config.checkpoints_total_limit)

    max_steps = config.max_steps or math.inf
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    log = RunLog(output, per_step, config.log_every, max_steps, budget, step, accelerator.is_main_process)
    bad_in_a_row, skipped = 0, 0
    unet.train()
    text_encoder.train(parts.train_text_encoder)
    with stop_requests() as stop:
        while step < max_steps and not stop.requested and not _out_of_time(accelerator, log.elapsed, budget):
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
                    if not torch.isfinite(loss):  # skip the update: NaN never reaches the weights
                        optimizer.zero_grad(set_to_none=True)
                        break
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    lr_schedule.step()
                    optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(loss))
            bad_in_a_row, skipped = (0, skipped) if finite else (bad_in_a_row + 1, skipped + 1)
            if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                raise FloatingPointError(f"loss was NaN/Inf for {bad_in_a_row} steps in a row at step {step}; "
                                         "lower --learning-rate or check the data")
            if finite:
                ema.step(parameters)
            step += 1
            images_seen += per_step
            log.step(step, loss.item() if finite else None, lr_schedule.get_last_lr()[0])
            if step % config.checkpoint_every == 0:
                checkpoint_now()
            if prompts and config.validate_every and step % config.validate_every == 0 and accelerator.is_main_process:
                validate(accelerator, parts, unet, text_encoder, ema, output, step, prompts)
    log.close()
    if stop.requested:
        accelerator.print(f"stopped by signal {stop.requested} at step {step}; saving")

    minutes = log.elapsed / 60
    checkpoint_now()
    if accelerator.is_main_process:
        with ema_weights(accelerator, parts, unet, text_encoder, ema) as (final_unet, final_text_encoder):
            NoiseUNetPipeline(unet=final_unet, text_encoder=final_text_encoder, tokenizer=parts.tokenizer,
                              scheduler=parts.scheduler, vae=parts.vae).save_pretrained(output, safe_serialization=True)
        if prompts:
            validate(accelerator, parts, unet, text_encoder, ema, output, step, prompts)
        summary = {"steps": step, "images_seen": images_seen, "minutes": minutes, "skipped_steps": skipped,
                   "precision": accelerator.mixed_precision, "processes": world,
                   "images_per_second": images_seen / max(minutes * 60, 1e-9)}
        (output / "train_summary.json").write_text(json.dumps(summary, indent=2))
        accelerator.print(f"trained {step} steps ({images_seen:,} images) in {minutes:.1f} min -> {output}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output


def _out_of_time(accelerator: Accelerator, elapsed: float, budget: float) -> bool:
    """Every process stops at the same step: any process out of time stops them all."""
    if budget == math.inf:
        return False
    flag = torch.tensor([float(elapsed >= budget)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="max").item()) if accelerator.num_processes > 1 else bool(flag.item())


class _StopRequest:
    requested: int | None = None


@contextmanager
def stop_requests():
    """SIGINT/SIGTERM finish the current step, then the run saves a checkpoint and the pipeline and exits."""
    stop = _StopRequest()
    handler = lambda signum, frame: setattr(stop, "requested", signum)  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def ema_weights(accelerator: Accelerator, parts: Components, unet, text_encoder, ema: EMAModel):
    """The unwrapped models with their EMA weights swapped in, restored afterwards."""
    unet, text_encoder = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
    trained = [unet] + ([text_encoder] if parts.train_text_encoder else [])
    parameters = [p for model in trained for p in model.parameters()]
    ema.store(parameters)
    ema.copy_to(parameters)
    modes = [m.training for m in (unet, text_encoder)]
    unet.eval(), text_encoder.eval()
    try:
        yield unet, text_encoder
    finally:
        ema.restore(parameters)
        unet.train(modes[0]), text_encoder.train(modes[1])


def validate(accelerator: Accelerator, parts: Components, unet, text_encoder, ema: EMAModel, output: Path,
             step: int, prompts: list[str], images_per_prompt: int = 4) -> Path:
    """samples/step-N.png: a grid of the validation prompts drawn with the EMA weights (20 DPM++ steps)."""
    with ema_weights(accelerator, parts, unet, text_encoder, ema) as (eval_unet, eval_text_encoder):
        pipe = NoiseUNetPipeline(unet=eval_unet, text_encoder=eval_text_encoder, tokenizer=parts.tokenizer,
                                 scheduler=parts.scheduler, vae=parts.vae)
        use_scheduler(pipe, "dpm++")
        pipe.set_progress_bar_config(disable=True)
        with accelerator.autocast():
            rows = generate(pipe, prompts, images_per_prompt, num_inference_steps=20, guidance_scale=3.0)
    path = output / "samples" / f"step-{step}.png"
    path.parent.mkdir(exist_ok=True)
    image_grid(rows, prompts, title=f"step {step}").save(path)
    return path
