"""The training loop: ``train(TrainConfig)`` -> a pipeline folder that ``NoiseUNetPipeline`` loads.

accelerate handles devices, mixed precision, gradient accumulation and several processes; diffusers
gives the noise schedule, the EMA and the min-SNR weights. What is ours: a data stream that is a pure
function of the seed (so resume replays it exactly), per-step noise generators (same reason), a time
budget, clean stops on SIGINT/SIGTERM, and a final folder in the standard pipeline layout.
"""

import math
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import Dataset

from ..data import ShapesDataset, open_source
from ..data.checks import usable_samples
from ..data.loader import TrainingStream, training_batches
from ..data.shapes import SAMPLE_PROMPTS
from ..data.streaming import StreamedBatches, open_stream
from ..files import replacing_folder_entries, save_image, write_json
from ..grid import image_grid
from ..pipeline import NoiseUNetPipeline, generate, use_scheduler
from ..precision import resolve_precision
from ..text import encode_prompts
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .components import Components, build_components
from .config import TrainConfig
from .diffusion import diffusion_loss, per_sample_generators
from .run_log import RunLog

MAX_BAD_STEPS_IN_A_ROW = 5


def make_accelerator(mixed_precision: str, **kwargs) -> Accelerator:
    """An Accelerator with this run's precision, also when an earlier run in the same process used another.

    accelerate keeps the precision in process-wide state and refuses a second, different one; clearing the
    accelerator part of that state (the process group stays) lets a notebook or a test suite call
    ``train`` several times.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    # Several processes (accelerate launch, torchrun) on a machine without a GPU: accelerate only picks its
    # CPU backend (gloo) when told it runs on the CPU; otherwise each process would train alone.
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=resolve_precision(mixed_precision), cpu=cpu_processes, **kwargs)


def train(config: TrainConfig) -> Path:
    """Train a NoiseUNet (and, when built from scratch, its text encoder) and save the pipeline folder."""
    output = Path(config.output_dir)
    # The LR schedule counts optimizer steps whatever the process count (accelerate would otherwise step it
    # once per process, warming up twice as fast on two processes as on one with the same global batch).
    accelerator = make_accelerator(config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
                                   step_scheduler_with_optimizer=False)
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / "train_config.json", config.to_dict())
    accelerator.wait_for_everyone()

    world, rank = accelerator.num_processes, accelerator.process_index
    source = open_training_data(config, rank, world)
    parts = build_components(config, source)
    unet, text_encoder, vae, scheduler = parts.unet, parts.text_encoder, parts.vae, parts.scheduler
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    trained = [unet] + ([text_encoder] if parts.train_text_encoder else [])
    parameters = [p for model in trained for p in model.parameters()]
    # Not fused: with the fused CPU AdamW, a run resumed from a checkpoint ended a few ulps away from the
    # uninterrupted run (tests/test_reliability.py); the default implementation resumes bit for bit.
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.warmup_steps)
    ema = EMAModel(parameters, decay=config.ema_max_decay, use_ema_warmup=True, power=config.ema_power, foreach=True)

    unet, text_encoder, optimizer, lr_schedule = accelerator.prepare(unet, text_encoder, optimizer, lr_schedule)
    if vae is not None:
        vae.to(accelerator.device)
    ema.to(accelerator.device)
    forward_unet = torch.compile(unet) if config.compile else unet

    step, images_seen = 0, 0
    checkpoint = resolve_resume(output, config.resume)
    if checkpoint is not None:
        state, process_state = load_checkpoint(accelerator, checkpoint, ema)
        step, images_seen = state["step"], state["images_seen"]
        if isinstance(source, StreamedBatches):
            source.load_state_dict(process_state["stream"])
        accelerator.print(f"resumed from {checkpoint} at step {step}")

    per_step = config.batch_size * world * config.gradient_accumulation_steps
    if isinstance(source, StreamedBatches):
        batches = source
    else:
        stream = TrainingStream(source, config.resolution, config.seed, config.random_crop, config.flip,
                                config.caption_dropout)
        workers = config.num_workers
        if workers is None:  # on a GPU, workers prepare the next batches meanwhile; on a CPU they'd take its cores
            workers = 2 if accelerator.device.type == "cuda" else 0
        batches = iter(training_batches(stream, config.batch_size, step * per_step, rank, world, workers,
                                        pin_memory=accelerator.device.type == "cuda"))
    prompts = config.validation_prompts or (list(SAMPLE_PROMPTS[:4]) if isinstance(source, ShapesDataset) else [])

    def checkpoint_now() -> None:
        process_state = {"stream": source.state_dict()} if isinstance(source, StreamedBatches) else {}
        state = {"step": step, "images_seen": images_seen, "processes": world}
        save_checkpoint(accelerator, output, state, ema, parameters, config.checkpoints_total_limit, process_state)

    max_steps = config.max_steps or math.inf
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    log = RunLog(output, per_step, config.log_every, max_steps, budget, step, accelerator.is_main_process)
    bad_in_a_row, skipped = 0, 0
    unet.train()
    text_encoder.train(parts.train_text_encoder)
    with stop_requests() as stop:
        while step < max_steps and not _any_process(accelerator, log.elapsed >= budget or bool(stop.requested)):
            losses = []
            for micro in range(config.gradient_accumulation_steps):
                batch = next(batches)
                generator = per_sample_generators((config.seed, step, micro), rank * config.batch_size,
                                                  len(batch["captions"]))
                with accelerator.accumulate(unet), accelerator.autocast():
                    x0 = batch["pixel_values"].to(accelerator.device, non_blocking=True)
                    if vae is not None:
                        with torch.no_grad():
                            x0 = vae.encode(x0).latent_dist.sample(generator) * vae.config.scaling_factor
                    with torch.set_grad_enabled(parts.train_text_encoder):
                        context = encode_prompts(parts.tokenizer, text_encoder, batch["captions"])
                    loss = diffusion_loss(forward_unet, x0, context, scheduler, generator, config.snr_gamma,
                                          config.offset_noise)
                    losses.append(loss.detach())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                        # The one host-device synchronisation of a step: NaN/Inf in any loss or gradient (on
                        # any process) skips the update, so NaN never reaches the weights.
                        finite = _all_finite(accelerator, torch.stack([*losses, grad_norm.float()]))
                        if finite:
                            optimizer.step()
                            lr_schedule.step()
                        optimizer.zero_grad(set_to_none=True)
            bad_in_a_row, skipped = (0, skipped) if finite else (bad_in_a_row + 1, skipped + 1)
            if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                raise FloatingPointError(f"loss or gradients were NaN/Inf for {bad_in_a_row} steps in a row at step "
                                         f"{step}; lower --learning-rate or check the data")
            if finite:
                ema.step(parameters)
            step += 1
            images_seen += per_step
            loss = torch.stack(losses).mean()
            if finite and world > 1:  # the whole global batch's loss, as one process with all of it would log
                loss = accelerator.reduce(loss, reduction="mean")
            log.step(step, loss if finite else None, lr_schedule.get_last_lr()[0])
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
        with ema_weights(accelerator, parts, unet, text_encoder, ema) as (final_unet, final_text_encoder), \
                replacing_folder_entries(output, last="model_index.json") as staging:
            NoiseUNetPipeline(unet=final_unet, text_encoder=final_text_encoder, tokenizer=parts.tokenizer,
                              scheduler=parts.scheduler, vae=parts.vae).save_pretrained(staging, safe_serialization=True)
        if prompts:
            validate(accelerator, parts, unet, text_encoder, ema, output, step, prompts)
        summary = {"steps": step, "images_seen": images_seen, "minutes": minutes, "skipped_steps": skipped,
                   "precision": accelerator.mixed_precision, "processes": world,
                   "images_per_second": images_seen / max(minutes * 60, 1e-9)}
        write_json(output / "train_summary.json", summary)
        accelerator.print(f"trained {step} steps ({images_seen:,} images) in {minutes:.1f} min -> {output}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output


def open_training_data(config: TrainConfig, rank: int, world: int) -> Dataset | StreamedBatches:
    """The run's data: a map-style source with its bad samples checked out, or, for tar shards and
    ``--streaming``, this process's share of a stream (checked as it streams)."""
    streamed = open_stream(config.data, config.streaming)
    if streamed is None:
        source = open_source(config.data, config.resolution, config.caption_column, config.image_column, config.seed)
        return usable_samples(source, config.resolution, config.on_bad_sample)
    return StreamedBatches(streamed, config.data, config.batch_size, config.resolution, config.seed, rank, world,
                           config.random_crop, config.flip, config.caption_dropout, config.image_column,
                           config.caption_column, config.on_bad_sample, config.shuffle_buffer)


def _all_finite(accelerator: Accelerator, value: torch.Tensor) -> bool:
    """Whether ``value`` is finite on every process, so that all processes skip a bad step together."""
    bad = (~torch.isfinite(value.detach().float())).any().float().reshape(1)
    return not (accelerator.reduce(bad, reduction="max") if accelerator.num_processes > 1 else bad).item()


def _any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether ``flag`` holds on any process: out of time or asked to stop, every process stops at the same step."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="max").item())


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
        rows = generate(pipe, prompts, images_per_prompt, num_inference_steps=20, guidance_scale=3.0,
                        precision=accelerator.mixed_precision)
    path = output / "samples" / f"step-{step}.png"
    return save_image(image_grid(rows, prompts, title=f"step {step}"), path)
