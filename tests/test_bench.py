"""scripts/bench.py --quick as a smoke test: it runs end to end and reports every ratio (no timing asserts)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from noiseunet.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_reports_finite_positive_ratios(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--loop", "--json", str(out)],
                   check=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, timeout=300)
    report = json.loads(out.read_text())

    def finite_positive(x):
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    assert all(finite_positive(v) for v in report["peaks_tflop_per_s"].values())
    (result,) = report["configs"].values()
    # Timed in the precision the trainer picks on this machine (bf16 where the CPU runs it, else float32).
    fast = report["precision"]
    assert fast == ("bf16" if resolve_precision("auto", "cpu") == "bf16" else "fp32")
    timed = {f"train_{fast}", f"infer_{fast}", "infer_fp32"}
    assert set(result["images_per_s"]) == timed
    for key in (*timed, f"infer_{fast}_peak_mib", f"train_{fast}_peak_mib"):
        assert finite_positive(result["ratios"][key]["vs_diffusers"]), key
    for key in timed:
        assert finite_positive(result["ratios_best"][key]["vs_diffusers"]), key
        for model in ("noiseunet", "diffusers"):
            assert finite_positive(result["images_per_s"][key][model])
            assert finite_positive(result["tflop_per_s"][key][model])
    assert result["max_rel_error_fp32"] < 1e-4  # same weights, same mathematics
    loop = report["loop"]  # the whole `noiseunet train` loop against its bare step
    assert all(finite_positive(loop[k]) for k in ("loop_images_per_s", "bare_step_images_per_s", "loop_vs_bare"))


def test_cpu_bf16_attention_path_matches_sdpa():
    """The matmul + softmax attention that bf16 on the CPU takes (the path the bench speeds up) agrees with
    float32 SDPA, bias included, to bf16 precision; the float32 path is SDPA itself."""
    import torch
    import torch.nn.functional as F

    from noiseunet.model.attention import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 16, generator=g) for n in (64, 77, 77))
    bias = torch.zeros(2, 1, 1, 77)
    bias[0, ..., -5:] = -10000.0
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = attention(*(t.bfloat16() for t in (q, k, v)), bias.bfloat16())
    assert out.dtype == torch.bfloat16
    assert ((out.float() - expected).abs().max() / expected.abs().max()).item() < 2e-2
    assert torch.equal(attention(q, k, v, bias), expected)
