"""Benchmark NoiseUNet against diffusers' UNet2DConditionModel with the same config and weights.

For each config it measures, interleaved (the models alternate within every repetition, and the median
over repetitions is reported, so a slow phase of the machine hits every model alike):

* training step images/s: forward, MSE loss, backward, AdamW step, in the precision noiseunet picks on this
  machine: bf16 autocast where the hardware runs bf16, float32 on a CPU without AVX-512-BF16 or AMX
  (``--fp32`` adds the float32 step where that is bf16);
* inference forward images/s (``torch.inference_mode``), in that precision and in float32;
* achieved FLOP/s: FLOPs counted once with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
  convolutions, forward and backward) divided by the measured time, compared with this machine's peaks,
  which the script measures itself (a large matmul and a 3x3 convolution in float32, and in bf16 where
  that is the timed precision);
* peak memory: the growth of the resident set (Linux VmHWM, reset through /proc/self/clear_refs) while
  running the step, in a fresh subprocess per model, so allocator caches of the other models do not hide
  or inflate anything. It counts what the process really took from the OS: activations, gradients, AdamW
  state, allocator slack, oneDNN scratch, not the weights (allocated before the measurement starts).

``--compile`` adds diffusers under ``torch.compile`` (inductor; compiling takes minutes on a 2-core CPU).
The table prints NoiseUNet / diffusers ratios (> 1: NoiseUNet is faster; for memory < 1: it uses less).

    python scripts/bench.py                      # the three configs, batch from each config
    python scripts/bench.py --quick --json out.json   # tiny CI smoke (< 1 minute)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import UNet2DConditionModel  # noqa: E402

from noiseunet import NoiseUNet  # noqa: E402
from noiseunet.model.diffusers_compat import max_relative_error  # noqa: E402
from noiseunet.precision import resolve_precision  # noqa: E402
from noiseunet.training.config import GPU_BATCH, SHAPES_PRESET  # noqa: E402

# The UNet `noiseunet train` builds for the built-in shapes (32 px images in 2 x 2 patches), with the text
# encoder's width.
SMALL_UNET, PATCH = SHAPES_PRESET.unet, SHAPES_PRESET.patch_size
SHAPES = dict(sample_size=32 // PATCH, in_channels=3 * PATCH**2, out_channels=3 * PATCH**2,
              cross_attention_dim=SHAPES_PRESET.text_hidden_size, **SMALL_UNET)
# Stable Diffusion 1.5's layout (4 levels, 2 resnets per level, 8 heads, CLIP-L text width, 77 tokens)
# at a width and latent size a CPU can train.
SD15_SMALL = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(64, 128, 256, 256),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2, attention_head_dim=8, cross_attention_dim=768,
)
# Stable Diffusion 1.5's UNet itself (859.5M parameters) at 64x64 latents (512 px images): for --device cuda.
SD15 = dict(SD15_SMALL, sample_size=64, block_out_channels=(320, 640, 1280, 1280))
QUICK = dict(SHAPES, sample_size=16, block_out_channels=(32,) * len(SHAPES["block_out_channels"]))
QUICK_TRAIN_UNET = {k: QUICK[k] for k in SMALL_UNET}


def default_config() -> dict:
    return {k: v for k, v in dict(NoiseUNet().config).items() if not k.startswith("_")}


def configs(quick: bool, device: str = "cpu") -> dict[str, tuple[dict, int]]:
    """name -> (config, default batch): on a GPU the shapes UNet at the trainer's GPU batch, and SD 1.5."""
    if quick:
        return {"quick": (QUICK, 1)}
    if device == "cuda":
        return {"shapes": (SHAPES, GPU_BATCH), "default": (default_config(), 64), "sd15-small": (SD15_SMALL, 64),
                "sd15": (SD15, 32)}
    return {"shapes": (SHAPES, 32), "default": (default_config(), 16), "sd15-small": (SD15_SMALL, 8)}


def make_inputs(config: dict, batch: int, device: str, tokens: int = 77):
    """Noisy sample, timesteps, text features (77 tokens, as every SD pipeline pads to) and the target noise."""
    g = torch.Generator().manual_seed(0)
    size = config["sample_size"]
    sample = torch.randn(batch, config["in_channels"], size, size, generator=g)
    text = torch.randn(batch, tokens, config["cross_attention_dim"], generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    noise = torch.randn(batch, config["out_channels"], size, size, generator=g)
    return [x.to(device) for x in (sample, t, text, noise)]


def build_models(config: dict, device: str, compile_: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**config).to(device)
    models = {"noiseunet": NoiseUNet.from_diffusers(reference), "diffusers": reference}
    if compile_:
        models["diffusers-compiled"] = torch.compile(copy.deepcopy(reference))
    return models


def autocast(device: str, dtype: torch.dtype | None):
    return torch.autocast(device, dtype=dtype, enabled=dtype is not None)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Runner:
    """One model's training step and inference forward, with its own AdamW."""

    def __init__(self, model: torch.nn.Module, inputs, device: str):
        self.model, self.inputs, self.device = model, inputs, device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cpu" or None)

    def train_step(self, dtype):
        sample, t, text, noise = self.inputs
        self.model.train()
        with autocast(self.device, dtype):
            out = self.model(sample, t, text).sample
        loss = F.mse_loss(out.float(), noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def forward(self, dtype):
        sample, t, text, _ = self.inputs
        self.model.eval()
        with torch.inference_mode(), autocast(self.device, dtype):
            self.model(sample, t, text)

    def run(self, mode: str, dtype):
        (self.train_step if mode == "train" else self.forward)(dtype)


def count_flops(model: torch.nn.Module, inputs, mode: str) -> int:
    """FLOPs of one training step (forward + backward) or one forward, as FlopCounterMode counts them.

    Attention runs on SDPA's math backend here because FlopCounterMode does not see inside the fused CPU
    kernels (it would count 0 for them); the math backend is made of the matmuls it does count.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    sample, t, text, noise = inputs
    counter = FlopCounterMode(display=False)
    model.train(mode == "train")
    with counter, sdpa_kernel([SDPBackend.MATH]):
        if mode == "train":
            F.mse_loss(model(sample, t, text).sample, noise).backward()
        else:
            with torch.no_grad():
                model(sample, t, text)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_call(fn, device: str, iters: int) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def measure_peaks(device: str, quick: bool, precision: str) -> dict[str, float]:
    """This machine's FLOP/s on a large matmul and a 3x3 convolution, in float32 and, where it is the timed
    ``precision``, bf16 (emulated bf16 on a CPU without it would take minutes to say it is slow)."""
    if quick:
        n, (b, c, hw) = 512, (4, 64, 16)
    else:  # large enough to reach the peak: a GPU needs far bigger operands than a 2-core CPU
        n, (b, c, hw) = (8192, (64, 512, 64)) if device == "cuda" else (2048, (32, 128, 32))
    peaks = {}
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if precision == "bf16" else {})}
    for name, dtype in dtypes.items():
        a, w = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        x = torch.randn(b, c, hw, hw, device=device, dtype=dtype)
        k = torch.randn(c, c, 3, 3, device=device, dtype=dtype)
        with torch.no_grad():
            for _ in range(2):
                a @ w, F.conv2d(x, k, padding=1)
            iters = 3 if quick else 10
            peaks[f"matmul_{name}"] = 2 * n**3 / min(time_call(lambda: a @ w, device, iters) for _ in range(3))
            conv_flops = 2 * b * c * c * 9 * hw * hw
            peaks[f"conv_{name}"] = conv_flops / min(
                time_call(lambda: F.conv2d(x, k, padding=1), device, iters) for _ in range(3))
    return peaks


# ---- peak memory: one fresh process per model ---------------------------------------------------------

def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(spec: dict) -> dict:
    """Runs in a subprocess: build one model, then report how far each phase raised the resident set."""
    device, batch, config = spec["device"], spec["batch"], spec["config"]
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**config).to(device)
    model = NoiseUNet.from_diffusers(reference) if spec["model"] == "noiseunet" else reference
    if spec["model"] == "noiseunet":
        del reference
    runner = Runner(model, make_inputs(config, batch, device), device)
    result = {}
    precision = spec["precision"]
    for mode in ("infer", "train"):  # inference first: peaks only grow
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak resident set) to the current RSS
            base = _rss_kib("VmRSS") * 1024
        for _ in range(spec["steps"]):
            runner.run(mode, DTYPES[precision])
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else _rss_kib("VmHWM") * 1024
        result[f"{mode}_{precision}_peak_mib"] = (peak - base) / 2**20
    return result


def measure_memory(config: dict, batch: int, device: str, precision: str, steps: int) -> dict[str, dict]:
    out = {}
    for model in ("noiseunet", "diffusers"):
        spec = json.dumps(dict(config=config, batch=batch, device=device, model=model, steps=steps,
                               precision=precision))
        proc = subprocess.run([sys.executable, __file__, "--memory-child", spec], capture_output=True, text=True,
                              check=True, env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())))
        out[model] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ---- the whole training loop against its bare step ---------------------------------------------------

def bench_loop(device: str, batch: int, warmup: int, steps: int, quick: bool) -> dict:
    """images/s of ``noiseunet train`` on the built-in shapes against the bare step of the same models.

    The bare step is what the loop cannot do without: encode the captions, the diffusion loss, backward,
    gradient clipping and the AdamW update, on one fixed batch already on the device. The loop adds data
    loading, noise generators, the NaN guard, the EMA and logging. Its rate is read from metrics.jsonl
    between the first and last record, so start-up and the final save are left out. The bare step is
    timed before and after the loop and the faster of the two is kept.
    """
    import tempfile

    from noiseunet.precision import autocast as precision_autocast
    from noiseunet.text import encode_prompts
    from noiseunet.training import train
    from noiseunet.training.components import build_components
    from noiseunet.training.config import TrainConfig
    from noiseunet.training.diffusion import diffusion_loss
    from noiseunet.training.run import open_batches

    with tempfile.TemporaryDirectory() as tmp:
        overrides = dict(resolution=16, unet=dict(QUICK_TRAIN_UNET)) if quick else {}
        config = TrainConfig(output_dir=tmp, batch_size=batch, max_steps=warmup + steps, max_minutes=None,
                             log_every=warmup, checkpoint_every=10**9, validate_every=0, **overrides)
        assert steps % warmup == 0, "steps must be a multiple of warmup (the log interval)"

        precision = resolve_precision(config.mixed_precision)
        batches = open_batches(config)
        parts = build_components(config, batches)
        unet, text_encoder = parts.unet.to(device), parts.text_encoder.to(device)
        parameters = [*unet.parameters(), *text_encoder.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=1e-4)  # as the loop's
        fixed = next(batches)
        x0 = fixed["pixel_values"].to(device)
        if parts.vae is not None:  # the shapes' 2 x 2 patches of pixels, as the step encodes them
            x0 = parts.vae.to(device).encode(x0).latent_dist.mode()

        def bare_step():
            with precision_autocast(device, precision):  # as the loop's accelerator.autocast()
                context = encode_prompts(parts.tokenizer, text_encoder, fixed["captions"])
                loss = diffusion_loss(unet, x0, context, parts.scheduler)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def bare_rate() -> float:
            for _ in range(warmup):
                bare_step()
            return batch / time_call(bare_step, device, steps)

        before = bare_rate()
        train(config)
        after = bare_rate()
        records = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    loop = (last["step"] - first["step"]) * batch / ((last["minutes"] - first["minutes"]) * 60)
    bare = max(before, after)
    return {"batch": batch, "steps": steps, "precision": precision, "loop_images_per_s": loop,
            "bare_step_images_per_s": bare, "bare_before_after": [before, after], "loop_vs_bare": loop / bare}


# ---- main -------------------------------------------------------------------------------------------

DTYPES = {"bf16": torch.bfloat16, "fp32": None}


def fast_precision(device: str) -> str:
    """The precision noiseunet trains and samples in here ("auto"): bf16 on GPUs and on CPUs with AVX-512-BF16
    or AMX, else float32. On a CPU without either, bf16 is emulated (15x slower than float32 for the shapes
    step on an AMD EPYC with AVX2 only), so timing it there would measure a path nobody takes."""
    return "bf16" if resolve_precision("auto", device) == "bf16" else "fp32"


def timed_modes(precision: str, fp32: bool) -> list[tuple[str, str]]:
    """The training step and inference in ``precision``, inference in float32, and with ``fp32`` (--fp32)
    the float32 training step too."""
    modes = [("train", precision), ("infer", precision), ("infer", "fp32"), *([("train", "fp32")] if fp32 else [])]
    return list(dict.fromkeys(modes))


def bench_config(name, config, batch, args, precision: str) -> dict:
    device = args.device
    models = build_models(config, device, args.compile)
    inputs = make_inputs(config, batch, device)
    runners = {k: Runner(m, inputs, device) for k, m in models.items()}
    modes = timed_modes(precision, args.fp32)
    result = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}, "batch": batch}

    flops = {mode: count_flops(models["diffusers"], inputs, mode) for mode in ("train", "infer")}
    result["gflop_per_image"] = {mode: f / batch / 1e9 for mode, f in flops.items()}

    with torch.no_grad():  # the equivalence the speed comparison relies on, in float32
        outs = {k: m.eval()(*inputs[:3]).sample for k, m in models.items() if k != "diffusers-compiled"}
        result["max_rel_error_fp32"] = max_relative_error(outs["noiseunet"], outs["diffusers"])
        fp32 = outs["diffusers"]
        with autocast(device, torch.bfloat16):
            outs = {k: models[k](*inputs[:3]).sample.float() for k in ("noiseunet", "diffusers")}
        # bf16 autocast: NoiseUNet vs diffusers, next to diffusers' own bf16-vs-float32 error for scale.
        result["max_rel_error_bf16"] = max_relative_error(outs["noiseunet"], outs["diffusers"])
        result["max_rel_error_bf16_diffusers_vs_fp32"] = max_relative_error(outs["diffusers"], fp32)

    times: dict[str, dict[str, list[float]]] = {f"{m}_{d}": {k: [] for k in runners} for m, d in modes}
    for mode, dt in modes:
        for k, r in runners.items():  # warm-up (and compilation) outside the timed repetitions
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                r.run(mode, DTYPES[dt])
            if k == "diffusers-compiled":
                result.setdefault("compile_s", {})[f"{mode}_{dt}"] = time.perf_counter() - t0
    for _ in range(args.reps):
        for mode, dt in modes:
            for k, r in runners.items():
                times[f"{mode}_{dt}"][k].append(time_call(lambda: r.run(mode, DTYPES[dt]), device, args.iters))

    result["images_per_s"], result["tflop_per_s"], best = {}, {}, {}
    for key, per_model in times.items():
        mode = key.split("_")[0]
        result["images_per_s"][key] = {k: batch / statistics.median(v) for k, v in per_model.items()}
        result["tflop_per_s"][key] = {k: flops[mode] / statistics.median(v) / 1e12 for k, v in per_model.items()}
        best[key] = {k: batch / min(v) for k, v in per_model.items()}
    # Speed ratios from the medians; ratios_best uses each model's fastest repetition instead, which is the
    # steadier number on a machine shared with other jobs (their bursts only ever slow a repetition down).
    result["ratios"], result["ratios_best"] = (
        {key: {f"vs_{k}": v["noiseunet"] / v[k] for k in v if k != "noiseunet"} for key, v in ips.items()}
        for ips in (result["images_per_s"], best)
    )
    if not args.no_memory:
        mem = measure_memory(config, batch, device, precision, steps=1 if args.quick else 2)
        result["peak_memory_mib"] = mem
        for key in mem["noiseunet"]:
            result["ratios"][key] = {"vs_diffusers": mem["noiseunet"][key] / max(mem["diffusers"][key], 1e-9)}
    return result


def precision_peak(report: dict) -> float:
    """The machine's measured TFLOP/s in the timed precision: the faster of its matmul and convolution."""
    peaks, precision = report["peaks_tflop_per_s"], report["precision"]
    return max(peaks[f"matmul_{precision}"], peaks[f"conv_{precision}"])


def print_table(report: dict) -> None:
    if "loop" in report:
        loop = report["loop"]
        print(f"\ntraining loop: {loop['loop_images_per_s']:.1f} img/s, bare step {loop['bare_step_images_per_s']:.1f} "
              f"img/s (before/after the loop: {loop['bare_before_after'][0]:.1f}/{loop['bare_before_after'][1]:.1f}) "
              f"-> loop / bare = {loop['loop_vs_bare']:.2f} (batch {loop['batch']}, {loop['precision']})"
              + (f", {100 * loop['share_of_peak']:.1f}% of the {report['precision']} peak" if "share_of_peak" in loop
                 else ""))
    peak = precision_peak(report)
    print("\nmachine peaks (TFLOP/s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["peaks_tflop_per_s"].items()))
    header = f"{'config':<11} {'measure':<22} {'noiseunet':>10} {'diffusers':>10} {'compiled':>10} " \
             f"{'/eager':>7} {'/comp':>7} {'nu %' + report['precision'] + 'pk':>10} {'best /eager':>11}"
    print(header + "\n" + "-" * len(header))
    for name, res in report["configs"].items():
        for key, per_model in res["images_per_s"].items():
            tf = res["tflop_per_s"][key]["noiseunet"]
            comp = per_model.get("diffusers-compiled")
            r = res["ratios"][key]
            print(f"{name:<11} {key + ' img/s':<22} {per_model['noiseunet']:>10.1f} {per_model['diffusers']:>10.1f} "
                  f"{comp if comp is None else round(comp, 1)!s:>10} {r['vs_diffusers']:>7.2f} "
                  f"{r.get('vs_diffusers-compiled', float('nan')):>7.2f} {100 * tf / peak:>9.1f}% "
                  f"{res['ratios_best'][key]['vs_diffusers']:>11.2f}")
        for key, per_model in res.get("peak_memory_mib", {}).get("noiseunet", {}).items():
            d = res["peak_memory_mib"]["diffusers"][key]
            print(f"{name:<11} {key:<22} {per_model:>10.0f} {d:>10.0f} {'':>10} {res['ratios'][key]['vs_diffusers']:>7.2f}")
        print(f"{name:<11} max rel error fp32 {res['max_rel_error_fp32']:.1e} bf16 {res['max_rel_error_bf16']:.1e} "
              f"(diffusers' own bf16 vs fp32: {res['max_rel_error_bf16_diffusers_vs_fp32']:.1e}), "
              f"batch {res['batch']}, "
              f"GFLOP/image train {res['gflop_per_image']['train']:.2f} infer {res['gflop_per_image']['infer']:.2f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config, 1 repetition: a smoke test")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, help="batch size for every config (default: per config)")
    parser.add_argument("--configs", nargs="*", help="subset of shapes, default, sd15-small, and on cuda sd15 "
                        "(none: only --loop)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    parser.add_argument("--iters", type=int, default=2, help="calls per timed repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fp32", action="store_true", help="also time the float32 training step (where the "
                        "machine trains in bf16)")
    parser.add_argument("--compile", action="store_true", help="also time diffusers under torch.compile (slow)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--loop", action="store_true", help="also time the whole `noiseunet train` loop against "
                        "its bare step")
    parser.add_argument("--loop-batch", type=int, help="the loop's batch (default: the trainer's "
                        f"{GPU_BATCH} on a GPU; 64 on a CPU, as the README's records)")
    parser.add_argument("--loop-steps", type=int, default=40, help="timed loop steps (a multiple of 10)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return {}
    if args.quick:
        args.reps, args.iters, args.warmup = 1, 1, 1
        # One thread: tiny tensors gain nothing from two, and a single thread does not stall in OpenMP
        # barriers when the CI machine's cores are busy with other jobs.
        torch.set_num_threads(1)

    precision = fast_precision(args.device)
    peaks = measure_peaks(args.device, args.quick, precision)
    report = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "precision": precision, "peaks_tflop_per_s": {k: v / 1e12 for k, v in peaks.items()},
              "configs": {}}
    for name, (config, batch) in configs(args.quick, args.device).items():
        if args.configs and name not in args.configs:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        report["configs"][name] = bench_config(name, config, args.batch or batch, args, precision)
        print(f"[bench] {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if args.json:  # after every config, so a run stopped early keeps what it measured
            args.json.write_text(json.dumps(report, indent=2))
    if args.loop:
        print("[bench] training loop ...", file=sys.stderr, flush=True)
        warmup, steps = (2, 4) if args.quick else (10, args.loop_steps)
        batch = 4 if args.quick else args.loop_batch or (GPU_BATCH if args.device == "cuda" else 64)
        report["loop"] = bench_loop(args.device, batch, warmup, steps, args.quick)
        shapes = report["configs"].get("shapes")
        if shapes:  # the same UNet as the loop's: its FLOPs per image against the machine's peak
            peak = precision_peak(report)
            tflops = report["loop"]["loop_images_per_s"] * shapes["gflop_per_image"]["train"] / 1e3
            report["loop"]["share_of_peak"] = tflops / peak
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
