"""One optimizer step of a TrainingRun: accumulate micro-batches, guard against NaN/Inf, update, EMA, log."""

from contextlib import nullcontext

import torch
from accelerate import Accelerator

from ..model.patches import PatchAutoencoder
from ..text import encode_prompts, word_token_positions
from .diffusion import diffusion_loss, step_generators
from .grounding import grounding_loss
from .run import TrainingRun

MAX_BAD_STEPS_IN_A_ROW = 5


def train_step(run: TrainingRun) -> None:
    """Advance ``run`` by one optimizer step (``gradient_accumulation_steps`` micro-batches on every process).

    Noise and timesteps come from generators seeded by (seed, step, micro-batch) and the sample's place in
    the global batch, so a resumed run, and on the CPU a run on another number of processes, draws the same
    ones (``step_generators``).
    """
    config, accelerator, parts = run.config, run.accelerator, run.parts
    rank, losses, grounding, half = accelerator.process_index, [], [], run.at_half_resolution
    for micro in range(config.gradient_accumulation_steps):
        batch = next(run.batches)
        generator = step_generators((config.seed, run.step, micro), rank * config.batch_size, len(batch["captions"]),
                                    accelerator.device)
        with accelerator.accumulate(run.unet), accelerator.autocast():
            x0, context = frozen_features(run, batch, generator)
            if x0 is None:
                x0 = batch["pixel_values"].to(accelerator.device, non_blocking=True)
                if parts.vae is not None:
                    with torch.no_grad():
                        x0 = parts.vae.encode(x0).latent_dist.sample(generator) * parts.vae.config.scaling_factor
            if half:
                x0 = half_resolution(x0, parts.vae)
            if context is None:
                with torch.set_grad_enabled(parts.train_text_encoder):
                    context = encode_prompts(parts.tokenizer, run.text_encoder, batch["captions"])
            loss, grounded = training_loss(run, batch, x0, context, generator)
            if grounded is not None:
                grounding.append(grounded.detach())
            losses.append(loss.detach())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(run.parameters, config.max_grad_norm)
                # NaN/Inf in any loss or gradient (on any process) skips the update, so NaN never reaches the
                # weights; every process decides alike.
                finite = update_unless_bad(run, all_finite(accelerator, torch.stack([*losses, grad_norm.float()])))
                run.optimizer.zero_grad(set_to_none=True)

    on_device = run.skips_on_device  # then ``finite`` is still a device tensor
    bad = ~finite if on_device else not finite
    run.bad_in_a_row = (run.bad_in_a_row + 1) * bad
    run.skipped = run.skipped + bad
    if not on_device or (run.step + 1) % config.log_every == 0:  # a device flag is read as the log reads losses
        if run.bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
            raise FloatingPointError(f"loss or gradients were NaN/Inf for {int(run.bad_in_a_row)} steps in a row "
                                     f"at step {run.step}; lower --learning-rate or check the data")
    run.step += 1
    if on_device or finite:
        run.ema.step(run.parameters)
        run.cool_down()  # the rate of the next step, from how far the run now is
    run.images_seen += run.images_per_step
    loss = torch.stack(losses).mean()
    terms = {"grounding_loss": torch.stack(grounding).mean()} if grounding else {}
    if accelerator.num_processes > 1:  # the whole global batch's losses, as one process would log them
        loss = accelerator.reduce(loss, reduction="mean")
        terms = {name: accelerator.reduce(value, reduction="mean") for name, value in terms.items()}
    run.log.step(run.step, loss, run.optimizer.param_groups[0]["lr"], grad_norm, finite, terms)


def training_loss(run: TrainingRun, batch: dict, x0: torch.Tensor, context: torch.Tensor,
                  generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The micro-batch's diffusion loss, plus ``--grounding-loss`` times the grounding loss of the
    cross-attention maps its forward pass recorded; and the grounding loss alone (None without it), for the log."""
    config, maps = run.config, run.attention_maps
    with maps.recording() if maps else nullcontext() as recorded:
        loss = diffusion_loss(run.forward_unet, x0, context, run.parts.scheduler, generator, config.snr_gamma,
                              config.offset_noise, *config.timestep_density)
    if not maps:
        return loss, None
    positions = [word_token_positions(run.parts.tokenizer, caption) for caption in batch["captions"]]
    grounded = grounding_loss(recorded, batch["regions"], positions)
    return loss + config.grounding_loss * grounded, grounded


def update_unless_bad(run: TrainingRun, finite: torch.Tensor) -> bool | torch.Tensor:
    """Step the optimizer and the LR schedule unless ``finite`` (a 0-d bool tensor) is False; returns it.

    On the CPU the flag is read here, the one host-device synchronisation of a step, and a bad step changes
    nothing. On a GPU (``run.skips_on_device``) the fused AdamW kernel takes it as ``found_inf`` and leaves the
    weights and their moments as they were; the schedule and the EMA step anyway (the EMA towards unchanged
    weights), and the flag is returned as the device tensor it is, so the host never waits for the step.
    """
    if run.skips_on_device:
        run.optimizer.optimizer.found_inf = (~finite).float()  # read by the fused kernel, as GradScaler sets it
        run.optimizer.step()
        run.lr_schedule.step()
        return finite
    if finite.item():
        run.optimizer.step()
        run.lr_schedule.step()
    return bool(finite)


def frozen_features(run: TrainingRun, batch: dict, generator: list[torch.Generator]):
    """(latents, text states) from the run's cache, each None where it is not cached."""
    if run.cache is None:
        return None, None
    device = run.accelerator.device
    return run.cache.latents(batch, generator, device), run.cache.context(batch["captions"], device)


def all_finite(accelerator: Accelerator, value: torch.Tensor) -> torch.Tensor:
    """Whether ``value`` is finite on every process (a 0-d bool tensor on the device), so that all processes
    skip a bad step together."""
    bad = (~torch.isfinite(value.detach().float())).any().float().reshape(1)
    return ~(accelerator.reduce(bad, reduction="max") if accelerator.num_processes > 1 else bad)[0].bool()


def half_resolution(x0: torch.Tensor, vae: torch.nn.Module | None) -> torch.Tensor:
    """The UNet's input at half the resolution (--half-resolution-until): 2x2 block averages of the pixels, or
    of a VAE's latents. Under patches the pixels are averaged, not the patches' channels, which would average
    every other pixel."""
    if isinstance(vae, PatchAutoencoder):
        return vae.encode(torch.nn.functional.avg_pool2d(vae.decode(x0).sample, 2)).latent_dist.mode()
    return torch.nn.functional.avg_pool2d(x0, 2)
