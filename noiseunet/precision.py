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
        return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "no"
    return "no"


def autocast(device: str | torch.device, precision: str) -> torch.autocast:
    """torch.autocast for ``precision`` ("auto", "no", "bf16", "fp16") on ``device``; disabled for "no"."""
    device = torch.device(device)
    dtype = AUTOCAST_DTYPES.get(resolve_precision(precision, device))
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
