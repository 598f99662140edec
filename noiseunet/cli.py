"""Command line: ``noiseunet <command>`` (also ``python -m noiseunet``)."""

import argparse
import time

import torch


def smoke(args: argparse.Namespace) -> None:
    """Build the default NoiseUNet, take one training step and run a short sampling loop."""
    from diffusers import DDIMScheduler

    from noiseunet import NoiseUNet

    torch.manual_seed(args.seed)
    model = NoiseUNet()
    print(f"NoiseUNet: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    x0 = torch.randn(4, 3, 32, 32)
    text = torch.randn(4, 8, model.config.cross_attention_dim)
    noise, t = torch.randn_like(x0), torch.randint(0, 1000, (4,))
    start = time.perf_counter()
    loss = torch.nn.functional.mse_loss(model(x0 + noise, t, text).sample, noise)
    loss.backward()
    print(f"forward+backward: loss {loss.item():.4f} in {time.perf_counter() - start:.2f}s")
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t, text[:2]).sample, t, x).prev_sample
    print(f"sampling: 10 DDIM steps -> {tuple(x.shape)}, finite={bool(torch.isfinite(x).all())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="noiseunet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    job = commands.add_parser("main", help="the main job (for now: a model smoke test)")
    job.add_argument("--seed", type=int, default=0)
    job.set_defaults(run=smoke)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
