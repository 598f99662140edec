"""A training run: everything set up from a TrainConfig (data, models, optimizer, EMA, log, resume point),
and what it does between steps (checkpoints, validation) and at the end (the pipeline folder).

accelerate handles devices, mixed precision, gradient accumulation, several processes and the trackers;
diffusers gives the LR schedule and the EMA. The step itself is ``step.train_step``.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import AutoencoderKL
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn

from ..data import open_source
from ..data.batches import BatchSource, MapBatches
from ..data.buckets import BucketBatches, bucket_sizes
from ..data.checks import usable_samples
from ..data.mixture import PriorMixture
from ..data.streaming import StreamedBatches, open_stream
from ..files import replacing_folder_entries, write_json
from ..model.attention_maps import CrossAttentionMaps
from ..pipeline import NoiseUNetPipeline
from ..runtime import RunLog, largest, make_accelerator, resolve_trackers
from .cache import FrozenFeatureCache, build_cache
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .components import Components, build_components, unet_input_size
from .config import REFERENCE_BATCH, TrainConfig
from .ema import ImageCountedEMA
from .lora import save_lora
from .validation import ema_weights, pipeline_defaults, trained_parameters, validation_grid


@dataclass
class TrainingRun:
    config: TrainConfig
    accelerator: Accelerator
    batches: BatchSource
    parts: Components
    unet: nn.Module  # prepared by accelerate (wrapped for DDP); ``forward_unet`` is what the loss calls
    text_encoder: nn.Module
    forward_unet: nn.Module
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel
    log: RunLog
    prompts: list[str]
    cache: FrozenFeatureCache | None
    attention_maps: CrossAttentionMaps | None = None  # recorded for the grounding loss (--grounding-loss)
    step: int = 0
    images_seen: int = 0
    skipped: int | torch.Tensor = 0  # steps skipped for NaN/Inf, in all (on a GPU, a device tensor)
    bad_in_a_row: int | torch.Tensor = 0

    @property
    def skips_on_device(self) -> bool:
        return skips_on_device(self.accelerator.device)

    @property
    def output(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def images_per_step(self) -> int:
        return self.log.images_per_step

    @property
    def max_steps(self) -> float:
        return self.config.max_steps if self.config.max_steps is not None else math.inf

    @property
    def out_of_time(self) -> bool:
        return self.config.max_minutes is not None and self.log.elapsed >= self.config.max_minutes * 60

    @property
    def progress(self) -> float:
        """How far the run is towards whichever of its step and time budgets ends it first (0 without one)."""
        steps = self.step / self.config.max_steps if self.config.max_steps else 0.0
        time = self.log.elapsed / (self.config.max_minutes * 60) if self.config.max_minutes else 0.0
        return min(1.0, max(steps, time))

    @property
    def at_half_resolution(self) -> bool:
        """Whether this step trains at half the resolution (``--half-resolution-until``); every process alike."""
        share = self.config.half_resolution_until
        return bool(share) and largest(self.accelerator, self.progress) < share

    def cool_down(self) -> None:
        """Scale the learning rate the schedule just set by the cooldown factor at this point of the run."""
        if self.config.cooldown:  # every process must set the same rate, whatever its clock says
            factor = min(1.0, (1.0 - largest(self.accelerator, self.progress)) / self.config.cooldown)
            for group in self.optimizer.param_groups:
                group["lr"] *= factor

    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "images_seen": self.images_seen, "skipped": int(self.skipped),
                 "processes": self.accelerator.num_processes, "seconds": self.log.elapsed}
        return save_checkpoint(self.accelerator, self.output, state, self.ema, self.parameters,
                               self.config.checkpoints_total_limit, {"stream": self.batches.state_dict()})

    def validate(self) -> None:
        """samples/step-N.png from the main process, also sent to the trackers."""
        if self.prompts and self.accelerator.is_main_process:
            grid = validation_grid(self.accelerator, self.parts, self.unet, self.text_encoder, self.ema, self.output,
                                   self.step, self.prompts)
            self.log.image("validation", grid, self.step)

    def after_step(self) -> None:
        """Checkpoint and validation grid when they are due."""
        if self.step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        if self.config.validate_every and self.step % self.config.validate_every == 0:
            self.validate()


def start_run(config: TrainConfig) -> TrainingRun:
    """Set up a run: accelerator and trackers, data, models, optimizer, EMA; resume from a checkpoint."""
    output = Path(config.output_dir)
    # The LR schedule counts optimizer steps whatever the process count (accelerate would otherwise step it
    # once per process, warming up twice as fast on two processes as on one with the same global batch).
    accelerator = make_accelerator(
        config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False, log_with=resolve_trackers(config.report_to) or None,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")))
    config = config.for_device(accelerator.device, accelerator.num_processes)
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / "train_config.json", config.to_dict())
    accelerator.wait_for_everyone()

    batches = open_batches(config, accelerator.process_index, accelerator.num_processes, accelerator.device)
    parts = build_components(config, batches)
    if config.half_resolution_until:
        check_halvable(config.resolution, parts.unet, parts.vae)
    if config.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    parameters = trained_parameters(parts.unet, parts.text_encoder)
    attention_maps = CrossAttentionMaps(parts.unet) if config.grounding_loss else None
    # Fused: one kernel for the whole update. On a GPU it also skips a NaN/Inf step on the device (step.py). On
    # the CPU the per-tensor default is a few small ops per tensor from Python: for a folder's `small` model
    # (453 tensors, 2.4M parameters; AVX2 EPYC) the update took 34.8 ms against 7.2 fused, a tenth of a
    # training step on 4 x 4 patches. Killed and resumed, a fused run still ends bit for bit on the
    # uninterrupted one (tests/test_reliability.py).
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    lr_schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=config.warmup_steps)
    per_step = config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps  # global batch
    ema = ImageCountedEMA(parameters, per_step, REFERENCE_BATCH, decay=config.ema_max_decay, use_ema_warmup=True,
                          power=config.ema_power, foreach=True)
    unet, text_encoder, optimizer, lr_schedule = accelerator.prepare(parts.unet, parts.text_encoder, optimizer,
                                                                     lr_schedule)
    if parts.vae is not None:
        parts.vae.to(accelerator.device)
    ema.to(accelerator.device)
    text_encoder.train(parts.train_text_encoder)
    cache = build_cache(config, parts, batches, accelerator)

    step, images_seen, skipped, seconds = 0, 0, 0, 0.0
    checkpoint = resolve_resume(output, config.resume)
    if checkpoint is not None:
        state, process_state = load_checkpoint(accelerator, checkpoint, ema)
        step, images_seen, skipped = state["step"], state["images_seen"], state.get("skipped", 0)
        seconds = state.get("seconds", 0.0)  # the time budget counts the training before the stop too
        # Checkpoints of map-style data from before the batch-source protocol stored no position.
        batches.load_state_dict(process_state.get("stream", {"batches": step * config.gradient_accumulation_steps}))
        accelerator.print(f"resumed from {checkpoint} at step {step}")
    accelerator.init_trackers("train", config=_tracker_config(config))

    log = RunLog(output, per_step, config.log_every, config.max_steps or math.inf,
                 config.max_minutes * 60 if config.max_minutes else math.inf, step, accelerator.is_main_process,
                 accelerator, seconds)
    unet.train()
    return TrainingRun(
        config=config, accelerator=accelerator, batches=batches, parts=parts, unet=unet, text_encoder=text_encoder,
        forward_unet=compiled(unet, accelerator.device) if config.compile else unet, parameters=parameters, optimizer=optimizer,
        lr_schedule=lr_schedule, ema=ema, log=log, prompts=config.validation_prompts or batches.validation_prompts(),
        cache=cache, attention_maps=attention_maps, step=step, images_seen=images_seen, skipped=skipped)


def check_halvable(resolution: int, unet: nn.Module, vae: AutoencoderKL | None) -> None:
    """A one-line error unless half the UNet's input (images, or a VAE's latents) still divides into its levels."""
    size = unet_input_size(resolution, vae)
    factor = 2 ** (len(unet.config.block_out_channels) - 1)
    if size % (2 * factor):
        raise ValueError(f"--half-resolution-until halves the UNet's {size} px input to {size / 2:g}, which its {factor}x "
                         f"downsampling does not divide; pick a --resolution that gives {2 * factor} px multiples")


def skips_on_device(device: torch.device) -> bool:
    """Whether the step decides NaN/Inf skips on the device (fused CUDA AdamW's ``found_inf``) rather than on
    the host: on a GPU, reading a flag back every step would make the host wait for the device."""
    return device.type == "cuda"


def compiled(unet: nn.Module, device: torch.device) -> nn.Module:
    """``--compile``: inductor; on a GPU with CUDA graphs ("reduce-overhead"), so the host launches one graph
    per forward and backward instead of hundreds of small kernels."""
    return torch.compile(unet, mode="reduce-overhead" if device.type == "cuda" else None)


def open_batches(config: TrainConfig, rank: int = 0, world: int = 1,
                 device: torch.device = torch.device("cpu")) -> BatchSource:
    """Batches of process ``rank`` of ``world``: a map-style source with its bad samples checked out, or, for
    tar shards and ``--streaming``, its share of a stream (checked as it streams)."""
    streamed = open_stream(config.data, config.streaming)
    if streamed is not None and config.prior_data:
        raise ValueError(f"--prior-data: --data {config.data} is a stream; the prior mixes into map-style data only")
    if streamed is not None:
        if config.buckets:
            raise ValueError(f"--buckets: --data {config.data} is a stream; buckets need every image's size ahead")
        return StreamedBatches(streamed, config.data, config.batch_size, config.resolution, config.seed, rank, world,
                               config.random_crop, config.flip, config.caption_dropout, config.image_column,
                               config.caption_column, config.on_bad_sample, config.shuffle_buffer)
    source = open_source(config.data, config.resolution, config.caption_column, config.image_column, config.seed,
                         mixture=config.mixture)
    if config.prior_data:
        prior = open_source(config.prior_data, config.resolution, config.caption_column, config.image_column,
                            config.seed, option="--prior-data")
        source = PriorMixture(source, prior, config.prior_share or 0.5, config.seed)
    on_gpu = device.type == "cuda"
    workers = config.num_workers
    if workers is None:  # on a GPU, workers prepare the next batches meanwhile; on a CPU they'd take its cores
        workers = gpu_loader_workers() if on_gpu else 0
    if config.buckets:  # steps of 64 pixels (8 latent pixels) at SD sizes, 8 for small pixel-space models
        step = 64 if config.resolution >= 256 else 8
        smallest = min(min(size) for size in bucket_sizes(config.resolution, step))  # a narrow bucket's side
        usable = usable_samples(source, smallest, config.on_bad_sample)
        return BucketBatches(usable, config.batch_size, config.resolution, step, config.seed, rank, world,
                             config.random_crop, config.flip, config.caption_dropout)
    usable = usable_samples(source, config.resolution, config.on_bad_sample)
    return MapBatches(usable, config.batch_size, config.resolution, config.seed, rank, world, config.random_crop,
                      config.flip, config.caption_dropout, workers, pin_memory=on_gpu,
                      regions=config.grounding_loss > 0)


def gpu_loader_workers() -> int:
    """Data loader processes per GPU process: half this machine's cores shared among its GPU processes, 2 to
    8. One process renders about 4,500 built-in shapes images a second (2026-11-27, AMD EPYC), so a GPU
    step at the 20,000 img/s issue 17 aims for needs several."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(2, min(8, (os.cpu_count() or 4) // (2 * local_processes)))


def _tracker_config(config: TrainConfig) -> dict:
    """The options as the scalars trackers accept (TensorBoard's hparams take no lists, dicts or None)."""
    values = {**config.to_dict(), "unet": config.unet_config}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def finish_run(run: TrainingRun, stopped_by: int | None) -> Path:
    """Write the last log record, a checkpoint, the pipeline folder (EMA weights), a final grid and the summary."""
    accelerator, output = run.accelerator, run.output
    run.log.close()
    if stopped_by:
        accelerator.print(f"stopped by signal {stopped_by} at step {run.step}; saving")
    minutes = run.log.elapsed / 60
    run.save_checkpoint()
    if accelerator.is_main_process:
        parts = run.parts
        with ema_weights(accelerator, parts, run.unet, run.text_encoder, run.ema) as (unet, text_encoder):
            if parts.lora:
                save_lora(unet, output, text_encoder if parts.train_text_encoder else None,
                          kohya=run.config.lora_format == "kohya")
            else:
                with replacing_folder_entries(output, last="model_index.json") as staging:
                    pipe = NoiseUNetPipeline(unet=unet, text_encoder=text_encoder, tokenizer=parts.tokenizer,
                                             scheduler=parts.scheduler, vae=parts.vae, **pipeline_defaults(parts))
                    pipe.save_pretrained(staging, safe_serialization=True)
        run.validate()
        summary = {"steps": run.step, "images_seen": run.images_seen, "minutes": minutes,
                   "skipped_steps": int(run.skipped), "precision": accelerator.mixed_precision,
                   "processes": accelerator.num_processes,
                   "images_per_second": run.images_seen / max(minutes * 60, 1e-9)}
        write_json(output / "train_summary.json", summary)
        accelerator.print(f"trained {run.step} steps ({run.images_seen:,} images) in {minutes:.1f} min -> {output}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output
