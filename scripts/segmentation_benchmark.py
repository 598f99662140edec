"""Mean IoU of SegmentationUNet on the built-in shapes after a training budget, recorded in the README.

    python scripts/segmentation_benchmark.py            # 5 minutes, loss ce+dice
"""

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adherence_benchmark import machine  # noqa: E402
from readme_table import write_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--loss", default="ce+dice")
    parser.add_argument("--output", default="runs/segmentation-benchmark")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    noiseunet = [sys.executable, "-m", "noiseunet", "segment"]
    subprocess.run(noiseunet + ["train", "--max-minutes", str(args.minutes), "--loss", args.loss, "--output", args.output],
                   check=True)
    subprocess.run(noiseunet + ["evaluate", args.output], check=True)
    summary = json.loads((Path(args.output) / "train_summary.json").read_text())
    result = json.loads((Path(args.output) / "evaluation.json").read_text())
    table = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()} by `python scripts/segmentation_benchmark.py`.", "",
        "| budget | loss | steps | images seen | mean IoU | Dice | pixel accuracy | per-class IoU (bg, circle, square, triangle) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {args.minutes:g} min | {args.loss} | {summary['steps']} | {summary['images_seen']:,} | {result['mean_iou']:.4f} "
        f"| {result['dice']:.4f} | {result['pixel_accuracy']:.4f} | "
        + ", ".join(f"{v:.3f}" for v in result["per_class_iou"]) + " |",
        "", f"Evaluated on {result['images']} shapes images that training never drew.",
    ])
    print(table)
    if not args.no_readme:
        write_section("segmentation", table)


if __name__ == "__main__":
    main()
