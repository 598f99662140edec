"""Real images from scratch: hundreds of emoji concepts, a few drawings each, judged against another artist.

1. Data. The npm packages ``emoji-datasource-google``, ``-twitter`` and ``-facebook`` (16.0.0) hold every
   emoji as a 64 px PNG and ``emoji.json`` with its name and category. They are fetched with ``npm pack``
   into ``--cache`` (only ``emoji.json`` and the 64 px PNGs of the kept emoji are extracted; nothing here is
   committed). Kept: every emoji of the categories below that all three vendors draw; its caption is its
   lower-cased name.
2. Split. The Google and Twitter drawings are the training folder (noiseunet's ``metadata.jsonl`` format);
   the Facebook drawings are never trained on: they are the judge's references.
3. Judge (``noiseunet.evaluation.retrieval``). One image per concept is generated at a fixed seed, and
   ranked against the references of all concepts: top-1 and top-5 retrieval of the prompt's concept,
   beside the ceiling (the training drawings themselves under the same judge) and chance; the share of
   near-copies of a training drawing; and whether 20 prompts give 20 different pictures for one seed.

    python scripts/real_benchmark.py --judges                       # the data and every judge's ceiling
    python scripts/real_benchmark.py --run runs/emoji               # measure a trained run folder
    python scripts/real_benchmark.py --budgets 10 30 --write-readme # train from scratch, measure, record
    python scripts/real_benchmark.py --budgets 1 --max-steps 5      # a smoke test of the plumbing
    python scripts/real_benchmark.py --budgets 10 -- --text-width 256  # with noiseunet train options
    python scripts/real_benchmark.py --budgets 10 -- --resolution 16   # train at 16 px, judged at 32
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from noiseunet.data.transforms import preprocess, to_pil
from noiseunet.evaluation.retrieval import (
    DEFAULT_JUDGE,
    JUDGES,
    as_array,
    distinctness,
    near_copy_share,
    near_copy_threshold,
    retrieval_ranks,
    top_k,
)
from noiseunet.files import save_image, write_json, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adherence_benchmark import machine
from readme_table import write_section

VERSION = "16.0.0"
VENDORS = ("google", "twitter", "facebook")
TRAIN_VENDORS = ("google", "twitter")
REFERENCE_VENDOR = "facebook"
CATEGORIES = ("Smileys & Emotion", "Objects", "Travel & Places", "Activities")
DISTINCT_PROMPTS = 20
SEED = 0


@dataclass(frozen=True)
class Concept:
    caption: str  # the emoji's name, lower-cased
    image: str  # its file name in every vendor's img/<vendor>/64/
    category: str


# --------------------------------------------------------------------------- data


def fetch(cache: Path) -> None:
    """Make ``cache/<vendor>/`` hold ``emoji.json`` and the 64 px PNGs of the kept emoji, for every vendor.

    A vendor's tarball is taken from ``cache`` when it is there (``npm pack`` writes it there otherwise) and
    deleted once extracted: the sprite sheets make up most of its 60-100 MB and are never used.
    ``emoji.json`` is written last, so a vendor folder that has it is complete.
    """
    for vendor in VENDORS:
        folder = cache / vendor
        if (folder / "emoji.json").exists():
            continue
        tarball = cache / f"emoji-datasource-{vendor}-{VERSION}.tgz"
        if not tarball.exists():
            npm_pack(f"emoji-datasource-{vendor}@{VERSION}", cache)
        extract(tarball, vendor, folder)
        tarball.unlink()


def npm_pack(package: str, destination: Path) -> None:
    """``npm pack package`` into ``destination``; a one-line exit when npm is missing or fails."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(f"real_benchmark: npm is not on PATH; install Node.js (npm) to fetch {package}, or put "
                 f"emoji-datasource-<vendor>-{VERSION}.tgz files in the --cache folder")
    destination.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", package], cwd=destination, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"real_benchmark: npm pack {package} failed: {last}")


def extract(tarball: Path, vendor: str, folder: Path) -> None:
    """``package/emoji.json`` and the 64 px PNGs of ``select(emoji.json)`` from a vendor's npm tarball."""
    prefix = f"package/img/{vendor}/64/"
    pngs, emoji = {}, None
    with tarfile.open(tarball) as archive:  # one pass: a gzipped tar has no index to seek by
        for member in archive:
            if member.name == "package/emoji.json":
                emoji = archive.extractfile(member).read()
            elif member.name.startswith(prefix) and member.isfile():
                pngs[member.name[len(prefix):]] = archive.extractfile(member).read()
    if emoji is None:
        sys.exit(f"real_benchmark: {tarball} has no package/emoji.json; is it an emoji-datasource tarball?")
    (folder / "64").mkdir(parents=True, exist_ok=True)
    for concept in select(json.loads(emoji)):
        (folder / "64" / concept.image).write_bytes(pngs[concept.image])
    (folder / "emoji.json").write_bytes(emoji)


def select(emoji: list[dict]) -> list[Concept]:
    """The emoji of ``CATEGORIES`` that every vendor draws (``has_img_<vendor>``), in ``emoji.json``'s order."""
    return [Concept(e["name"].lower(), e["image"], e["category"]) for e in emoji
            if e["category"] in CATEGORIES and all(e.get(f"has_img_{v}") for v in VENDORS)]


def concepts(cache: Path) -> list[Concept]:
    return select(json.loads((cache / VENDORS[0] / "emoji.json").read_text()))


def drawing(cache: Path, vendor: str, concept: Concept, resolution: int) -> Image.Image:
    """A vendor's drawing as training sees it: the trainer's own preprocessing (RGBA composited on white,
    bicubic resize), so the folder, the references and the training batches are the same pixels."""
    with Image.open(cache / vendor / "64" / concept.image) as image:
        return to_pil(preprocess(image, resolution)[None])[0]


def build_folders(cache: Path, work: Path, resolution: int) -> tuple[Path, Path]:
    """``work/emoji-<resolution>/train`` (Google and Twitter drawings, captioned) and ``.../references``
    (Facebook's, same format, never trained on). Returns the two folders."""
    root = work / f"emoji-{resolution}"
    listed = concepts(cache)
    folders = {}
    for split, vendors in (("train", TRAIN_VENDORS), ("references", (REFERENCE_VENDOR,))):
        folder = root / split
        rows = []
        for vendor in vendors:
            for concept in listed:
                name = f"{vendor}-{concept.image}"
                save_image(drawing(cache, vendor, concept, resolution), folder / name)
                rows.append({"file_name": name, "text": concept.caption})
        write_jsonl(folder / "metadata.jsonl", rows)
        folders[split] = folder
    return folders["train"], folders["references"]


def read_folder(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(file names, captions, images as an (N, H, W, 3) array in [0, 1]) of a metadata.jsonl folder."""
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    images = [Image.open(folder / row["file_name"]) for row in rows]
    return [r["file_name"] for r in rows], [r["text"] for r in rows], as_array(images)


# --------------------------------------------------------------------------- measures


def retrieval(judge: str, queries: np.ndarray, query_captions: list[str], references: np.ndarray,
              captions: list[str]) -> dict[str, float]:
    """Top-1 and top-5 retrieval of each query's concept among the references (one per caption in ``captions``)."""
    judged, index = JUDGES[judge], {caption: i for i, caption in enumerate(captions)}
    ranks = retrieval_ranks(judged(queries), judged(references), np.array([index[c] for c in query_captions]))
    return {"top1": top_k(ranks, 1), "top5": top_k(ranks, 5)}


def score(generated: np.ndarray, captions: list[str], references: np.ndarray, training: np.ndarray,
          training_captions: list[str], judge: str = DEFAULT_JUDGE) -> dict:
    """The benchmark's measures for ``generated[i]``, an image of ``captions[i]`` (the references' order).

    ``top1``/``top5``: retrieval of the prompt's concept among all references under ``judge``; ``ceiling``:
    the same for the training drawings; ``near_copies``: share of images closer to a training drawing than
    ``near_copy_threshold`` (which few pairs of two artists' drawings of one concept are); ``distinct``:
    ``DISTINCT_PROMPTS`` prompts spread over the list, compared pairwise.
    """
    threshold = near_copy_threshold(training, training_captions)
    picks = np.linspace(0, len(captions) - 1, min(DISTINCT_PROMPTS, len(captions))).round().astype(int)
    return {"concepts": len(captions), "judge": judge, "chance": {"top1": 1 / len(captions), "top5": min(1.0, 5 / len(captions))},
            **retrieval(judge, generated, captions, references, captions),
            "ceiling": retrieval(judge, training, training_captions, references, captions),
            "near_copy_threshold": threshold, "near_copies": near_copy_share(generated, training, threshold),
            "distinct": _named_closest(distinctness(generated[picks], threshold), [captions[i] for i in picks])}


def _named_closest(report: dict, captions: list[str]) -> dict:
    """``distinctness``'s report with its closest pair named by the prompts' captions, not their indices."""
    return {**report, "closest": [captions[i] for i in report["closest"]]}


def measure(run: Path, train_folder: Path, references_folder: Path, judge: str = DEFAULT_JUDGE,
            batch_size: int = 128, guidance_scale: float | None = None) -> dict:
    """Generate one image per concept (seed ``SEED``, the package's sampling settings, the pipeline's own
    guidance unless ``guidance_scale``) with the pipeline in ``run`` and ``score`` it; writes
    ``real_benchmark.json`` (``real_benchmark-guidance-G.json`` for a given guidance) and a grid of the
    distinctness prompts there."""
    from tqdm import tqdm

    from noiseunet.grid import image_grid
    from noiseunet.pipeline import SAMPLING, generate, load_pipeline, use_scheduler

    pipe = use_scheduler(load_pipeline(run), SAMPLING.scheduler)
    pipe.set_progress_bar_config(disable=True)
    _, captions, references = read_folder(references_folder)
    _, training_captions, training = read_folder(train_folder)
    guidance = pipe.guidance_scale if guidance_scale is None else guidance_scale
    images = []
    for first in tqdm(range(0, len(captions), batch_size), desc="generating", unit="batch"):
        rows = generate(pipe, captions[first:first + batch_size], 1, SEED, batch_size,
                        num_inference_steps=SAMPLING.steps, guidance_scale=guidance)
        images += [row[0] for row in rows]
    report = {"guidance_scale": guidance,
              **score(as_array(images, references.shape[1]), captions, references, training, training_captions, judge)}
    name = "real_benchmark" if guidance_scale is None else f"real_benchmark-guidance-{guidance:g}"
    write_json(run / f"{name}.json", report)
    picks = np.linspace(0, len(captions) - 1, report["distinct"]["prompts"]).round().astype(int)
    shown = [Image.fromarray((references[i] * 255).round().astype(np.uint8)) for i in picks]
    save_image(image_grid([[images[i], reference] for i, reference in zip(picks, shown)], [captions[i] for i in picks], cell=48,
                          title="generated | reference (never trained on)"), run / f"{name}.png")
    return report


def judge_table(train_folder: Path, references_folder: Path) -> str:
    """Every judge's ceiling (the training drawings retrieving their concept among the references) beside
    chance, and the near-copy threshold with the share of the references, a new artist's drawings, under it."""
    _, captions, references = read_folder(references_folder)
    _, training_captions, training = read_folder(train_folder)
    threshold = near_copy_threshold(training, training_captions)
    summary = (f"{len(captions)} concepts, {len(training)} training drawings at {references.shape[1]} px; chance top-1 "
               f"{1 / len(captions):.2%}, top-5 {5 / len(captions):.2%}. Near-copy threshold {threshold:.3f} RMS; "
               f"{near_copy_share(references, training, threshold):.1%} of the references fall under it.")
    lines = [summary, "", "| judge | ceiling top-1 | ceiling top-5 | seconds |", "|---|---|---|---|"]
    for name in JUDGES:
        started = time.perf_counter()
        ceiling = retrieval(name, training, training_captions, references, captions)
        lines.append(f"| `{name}`{' (default)' if name == DEFAULT_JUDGE else ''} | {ceiling['top1']:.1%} | "
                     f"{ceiling['top5']:.1%} | {time.perf_counter() - started:.2f} |")
    return "\n".join(lines)


def train_and_measure(train_folder: Path, references_folder: Path, work: Path, budgets: list[float],
                      resolution: int, max_steps: int | None, judge: str, options: list[str],
                      guidance_scale: float | None = None) -> list[dict]:
    """``noiseunet train --data train_folder [options]`` for each budget of CPU-minutes, then ``measure``.
    ``options`` are ``noiseunet train`` arguments (none: its defaults). The run trains at the judge's
    ``resolution`` unless ``options`` give ``--resolution``: then it trains and samples at that size, and its
    pictures are resized (bicubic) to the judge's."""
    from noiseunet.cli import add_train_arguments, train_config
    from noiseunet.training import train

    parser = argparse.ArgumentParser(prog="noiseunet train options after --")
    add_train_arguments(parser)
    chosen = train_config(parser.parse_args(options))
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "-", "-".join(option.lstrip("-") for option in options)).strip("-")[:80]
    own_size = any(option.startswith("--resolution") for option in options)
    rows = []
    for budget in budgets:
        out = work / f"run-{budget:g}min{'-' + label if label else ''}"
        train(dataclasses.replace(chosen, output_dir=str(out), data=str(train_folder),
                                  resolution=chosen.resolution if own_size else resolution,
                                  max_minutes=budget, max_steps=max_steps))
        steps = json.loads((out / "train_summary.json").read_text())["steps"]
        sampled = [] if guidance_scale is None else [f"(sampled at guidance {guidance_scale:g})"]
        rows.append({"budget": budget, "options": " ".join(options + sampled), "steps": steps,
                     **measure(out, train_folder, references_folder, judge, guidance_scale=guidance_scale)})
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    distinct = row["distinct"]
    return (f"| {row['budget']:g} min | {'`' + row['options'] + '`' if row.get('options') else 'defaults'} | {row['steps']} | {row['top1']:.2%} | {row['top5']:.2%} | "
            f"{row['top1'] / row['ceiling']['top1']:.0%} | {row['near_copies']:.1%} | "
            f"{'yes (0 same pairs)' if distinct['distinct'] else _same_pairs(distinct)} |")


def _same_pairs(distinct: dict) -> str:
    pairs = distinct["same_pairs"]
    return f"no ({pairs} same pair{'s' if pairs > 1 else ''}; closest: {' / '.join(distinct['closest'])})"


def table(rows: list[dict], resolution: int) -> str:
    first = rows[0]
    budgets = " ".join(f"{row['budget']:g}" for row in rows)
    header = (f"Measured {datetime.date.today().isoformat()} on {machine()} by `python scripts/real_benchmark.py "
              f"--budgets {budgets}`: {first['concepts']} concepts at {resolution} px, "
              f"judge `{first['judge']}` (ceiling top-1 {first['ceiling']['top1']:.1%}, top-5 "
              f"{first['ceiling']['top5']:.1%}; chance {first['chance']['top1']:.2%}).")
    columns = ("| budget | options | steps | top-1 | top-5 | top-1, of the ceiling | near-copies | "
               f"distinct ({DISTINCT_PROMPTS} prompts) |")
    return "\n".join([header, "", columns, "|---|---|---|---|---|---|---|---|", *map(format_row, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "noiseunet" / "emoji",
                        help="where the npm tarballs are fetched and their images extracted")
    parser.add_argument("--work", type=Path, default=Path("runs/real-benchmark"), help="data folders and runs")
    parser.add_argument("--resolution", type=int, default=32,
                        help="training and judging resolution (the drawings are 64 px; 32 is noiseunet's default)")
    parser.add_argument("--judge", default=DEFAULT_JUDGE, choices=list(JUDGES))
    parser.add_argument("--judges", action="store_true", help="print every judge's ceiling and chance")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance of the generated images (default: the model's own)")
    parser.add_argument("--run", type=Path, help="measure this trained run folder")
    parser.add_argument("--budgets", type=float, nargs="+", default=[], help="train from scratch for these CPU-minutes")
    parser.add_argument("--max-steps", type=int, default=None, help="also stop training here (smoke tests)")
    parser.add_argument("--write-readme", action="store_true", help="record the --budgets table in README.md")
    parser.add_argument("train_options", nargs="*", metavar="-- OPTION",
                        help="noiseunet train options for --budgets, after --, e.g. -- --text-width 256")
    args = parser.parse_args()

    fetch(args.cache)
    train_folder, references_folder = build_folders(args.cache, args.work, args.resolution)
    print(f"{len(concepts(args.cache))} concepts; training folder {train_folder}, references {references_folder}")
    if args.judges:
        print(judge_table(train_folder, references_folder))
    if args.run:
        print(json.dumps(measure(args.run, train_folder, references_folder, args.judge,
                                 guidance_scale=args.guidance_scale), indent=2))
    if args.budgets:
        rows = train_and_measure(train_folder, references_folder, args.work, args.budgets, args.resolution,
                                 args.max_steps, args.judge, args.train_options, args.guidance_scale)
        print(table(rows, args.resolution))
        if args.write_readme:
            write_section("real", table(rows, args.resolution))


if __name__ == "__main__":
    main()
