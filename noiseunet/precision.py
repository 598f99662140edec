"""Which floating-point precision to compute in, shared by training and sampling.

bf16 halves memory traffic and, on GPUs and on CPUs with AVX-512-BF16 or AMX, runs matmuls and
convolutions about twice as fast as float32; the weights stay float32 and autocast casts per operation.
"""

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, device: str | torch.device | None = None) -> str:
    """"auto" -> "bf16" on GPUs that support it (else "fp16") and on CPUs with AVX-512-BF16 or AMX, else
    "no" (float32). ``device`` defaults to the GPU when there is one, as training picks it."""
    if requested != "auto":
        return requested
    kind = torch.device(device).type if device is not None else "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu":
        return "bf16" if cpu_bf16_hardware() else "no"
    return "no"


def cpu_bf16_hardware() -> list[str]:
    """This CPU's bf16 matmul hardware by name, AVX-512-BF16 and AMX; empty where bf16 would be emulated
    (slower than float32), so "auto" trains in float32 there."""
    return [name for name, has in (("AVX-512-BF16", torch.cpu._is_avx512_bf16_supported()),
                                   ("AMX", torch.cpu._is_amx_tile_supported())) if has]


def autocast(device: str | torch.device, precision: str) -> torch.autocast:
    """torch.autocast for ``precision`` ("auto", "no", "bf16", "fp16") on ``device``; disabled for "no"."""
    device = torch.device(device)
    dtype = AUTOCAST_DTYPES.get(resolve_precision(precision, device))
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
