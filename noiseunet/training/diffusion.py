"""The training objective: noise an image to a random timestep and regress the noise (DDPM).

x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, with t uniform over the schedule (or drawn from
SD3's logit-normal density, Esser et al. 2024, which trains the middle of the schedule more often than its
ends); the loss is the mean squared error between the UNet's prediction and its target: eps itself (Ho et
al. 2020) or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022, "v-prediction").
"""

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_snr


Generator = torch.Generator | list[torch.Generator] | None


def per_sample_generators(key: tuple[int, ...], first: int, count: int) -> list[torch.Generator]:
    """CPU generators for samples ``first .. first + count - 1`` of a global batch, each seeded by ``key``
    (seed, step, micro-batch) and its index: the noise depends neither on how the batch is split over
    processes nor on the device."""
    return [torch.Generator().manual_seed(hash((*key, first + i)) % 2**63) for i in range(count)]


def step_generators(key: tuple[int, ...], first: int, count: int,
                    device: torch.device = torch.device("cpu")) -> Generator:
    """The generators of one process's micro-batch: on the CPU ``per_sample_generators``; on a GPU one
    generator on the device, seeded by ``key`` and ``first``.

    Per-sample CPU generators make the noise independent of the process count and the device, but draw
    sample by sample on the host: at a GPU's batch of hundreds that loop, not the GPU, would set the pace.
    The device generator draws the whole batch in one kernel; a resumed run on the same device and process
    count still draws exactly the same noise.
    """
    if device.type != "cuda":
        return per_sample_generators(key, first, count)
    return torch.Generator(device).manual_seed(hash((*key, first, -1)) % 2**63)


def draw_noise(x0: torch.Tensor, generator: Generator, num_timesteps: int, offset_noise: float = 0.0,
               timesteps_from: str = "uniform", logit_mean: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise like ``x0``, timesteps (B,)) on ``x0``'s device, drawn on the generators' device.

    Given one generator per sample, each sample's draws depend on its generator alone, so a batch split over
    processes draws exactly what the whole batch draws in one. CPU generators draw on the CPU and the batch
    is moved once: the same seeds give the same noise on every device. ``timesteps_from``: "uniform", or a
    density of diffusers' ``compute_density_for_timestep_sampling`` ("logit_normal": mean ``logit_mean``, std
    1, where a positive mean trains the noisier half more; "mode").
    """
    generators = generator if isinstance(generator, list) else [generator]
    where = generators[0].device if generators[0] is not None else x0.device
    shapes = [x0.shape] if len(generators) == 1 else [(1, *x0.shape[1:])] * len(generators)
    noise, timesteps = [], []
    for g, shape in zip(generators, shapes):
        noise.append(torch.randn(shape, generator=g, device=where, dtype=x0.dtype))
        if offset_noise:  # a per-channel constant shift, so the model can learn very dark or bright images
            noise[-1] += offset_noise * torch.randn(*shape[:2], 1, 1, generator=g, device=where, dtype=x0.dtype)
        if timesteps_from == "uniform":
            timesteps.append(torch.randint(0, num_timesteps, shape[:1], generator=g, device=where))
        else:
            u = compute_density_for_timestep_sampling(timesteps_from, shape[0], logit_mean=logit_mean, logit_std=1.0,
                                                      mode_scale=1.29, device=where, generator=g)
            timesteps.append((u * num_timesteps).long().clamp(max=num_timesteps - 1))
    return (torch.cat(noise).to(x0.device, non_blocking=True),
            torch.cat(timesteps).to(x0.device, non_blocking=True))


def diffusion_loss(
    unet,
    x0: torch.Tensor,
    context: torch.Tensor,
    scheduler: DDPMScheduler,
    generator: Generator = None,
    snr_gamma: float | None = None,
    offset_noise: float = 0.0,
    timesteps_from: str = "uniform",
    logit_mean: float = 0.0,
) -> torch.Tensor:
    """One Monte-Carlo sample of the diffusion loss for a batch of clean images (or latents) ``x0``."""
    noise, timesteps = draw_noise(x0, generator, scheduler.config.num_train_timesteps, offset_noise, timesteps_from,
                                  logit_mean)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, timesteps)
    else:
        target = noise
    prediction = unet(noisy, timesteps, encoder_hidden_states=context).sample
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is not None:  # Min-SNR-gamma (Hang et al. 2023): cap the weight of low-noise timesteps
        snr = compute_snr(scheduler, timesteps)
        weight = torch.minimum(snr, torch.full_like(snr, snr_gamma))
        loss = loss * (weight / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else weight / snr)
    return loss.mean()
