"""Command line: ``noiseunet train | sample | evaluate | main`` (also ``python -m noiseunet``)."""

import argparse
import json
import sys
from pathlib import Path

from .data.shapes import DEFAULT_MIXTURE, FAMILIES, LATER_MIXTURE, LATER_MIXTURE_FROM, RELATIONS_FIRST, SAMPLE_PROMPTS
from .options import literal_choices
from .pipeline import SAMPLING
from .training.config import MANY_CONCEPTS_GUIDANCE, MODEL_PRESETS, SHAPES_SAMPLER, TrainConfig


def choices(config_class: type, name: str) -> list:
    """A config field's allowed values, for argparse: the dataclass is the one place they are written."""
    import typing

    return [c for c in literal_choices(typing.get_type_hints(config_class)[name]) if c is not None]


def family_share(text: str) -> tuple[str, float]:
    """``FAMILY=SHARE`` of --mixture."""
    name, _, share = text.partition("=")
    try:
        return name, float(share)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FAMILY=SHARE, e.g. single=0.5; got {text!r}") from None


def shares_text(mixture: dict[str, float]) -> str:
    """A mixture as --mixture takes it: ``single=0.6 two_objects=0.08 ...``."""
    return " ".join(f"{name}={share:g}" for name, share in mixture.items())


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    a = parser.add_argument
    a("--data", default=None, help="image folder with metadata.jsonl/csv, a saved datasets folder, a dataset "
      "name, a folder or glob of WebDataset .tar shards, or 'shapes' (default: the built-in shapes data)")
    a("--output", dest="output_dir", default=defaults.output_dir, help="where the pipeline folder is written")
    a("--mixture", nargs="+", type=family_share, default=None, metavar="FAMILY=SHARE",
      help="task families of the built-in shapes data and their shares, e.g. single=0.3 relative_position=0.2 "
      "(families left out: 0; the whole run, where the default changes over it: "
      + shares_text(DEFAULT_MIXTURE) + f" for the first {LATER_MIXTURE_FROM:,} images, "
      + shares_text(LATER_MIXTURE) + " after; `main` over 10 minutes trains on "
      "relations first: --relations-first)")
    a("--caption-column", default=defaults.caption_column)
    a("--image-column", default=defaults.image_column)
    a("--resolution", type=int, default=defaults.resolution)
    a("--random-crop", action="store_true")
    a("--buckets", action="store_true", help="aspect-ratio buckets: non-square images keep their shape, each batch "
      "one bucket of about --resolution squared pixels (folders and datasets data)")
    a("--random-flip", dest="flip", action="store_true", help="mirror images half of the time (off by default: it "
      "makes digits, letters and text wrong; never done to captions that mention left or right)")
    a("--no-flip", dest="flip", action="store_false", help=argparse.SUPPRESS)  # the default; kept for old scripts
    a("--caption-dropout", type=float, default=defaults.caption_dropout)
    a("--on-bad-sample", default=defaults.on_bad_sample, choices=choices(TrainConfig, "on_bad_sample"),
      help="skip bad images/captions with a warning, or stop before training")
    a("--streaming", action="store_true", help="stream the --data hub dataset instead of downloading it "
      "(a folder or glob of .tar shards always streams)")
    a("--no-cache", dest="cache", action="store_false", help="encode images with the frozen VAE and captions "
      "with the frozen text encoder every step, instead of once before training")
    a("--prior-data", default=None, help="prior preservation: also train on this data (a folder, a datasets "
      "dataset, or 'shapes'), so a fine-tune keeps what the model knew; e.g. images the base generated with "
      "`noiseunet sample --out-dir`")
    a("--prior-share", type=float, default=None, help="share of each epoch from --prior-data (default 0.5)")
    a("--shuffle-buffer", type=int, default=defaults.shuffle_buffer, help="examples shuffled together when streaming")
    a("--pretrained", default=None, help="start from this pipeline: a noiseunet output folder, or a diffusers "
      "Stable Diffusion folder or hub name (its UNet, text encoder, tokenizer, VAE and noise schedule)")
    a("--model", default=defaults.model, choices=choices(TrainConfig, "model"),
      help="size of a new model (default: small-patches for the built-in shapes, small for --data): "
      + "; ".join(f"{name}: {p.suits}" for name, p in MODEL_PRESETS.items()))
    a("--text-encoder", default=None, help="CLIP text encoder name or folder (default: --pretrained's, or build "
      "the preset's)")
    a("--train-text-encoder", action=argparse.BooleanOptionalAction, default=None)
    a("--text-width", type=int, default=None, help="hidden size of the text encoder built from scratch (default: "
      "the preset's; wider tells more concepts apart)")
    a("--text-layers", type=int, default=None, help="its depth (default: the preset's)")
    a("--text-attention", default=defaults.text_attention, choices=choices(TrainConfig, "text_attention"),
      help="causal as CLIP's, or bidirectional: every token sees the whole caption (default: bidirectional for "
      "--data of many concepts, causal for the built-in shapes)")
    a("--vae", default=None, help="AutoencoderKL name or folder for latent diffusion (default: --pretrained's, "
      "or pixel space)")
    a("--patch-size", type=int, default=None, help="fold each P x P patch of pixels into channels (exactly, no "
      "weights), so the UNet runs at 1/P of the resolution yet draws every pixel (default: 2 for the built-in "
      "shapes, else plain pixels)")
    a("--allow-pickle", action="store_true", help="also load --text-encoder/--vae weights from pickle (.bin) files")
    a("--config", "--unet-config", dest="unet_config", default=None,
      help="JSON file or string of UNet config overrides of the preset (block_out_channels, ...)")
    a("--lora-rank", type=int, default=None, help="train LoRA adapters of this rank (PEFT) instead of the whole "
      "UNet; needs --pretrained; writes OUTPUT/pytorch_lora_weights.safetensors")
    a("--lora-alpha", type=float, default=None, help="adapter scale numerator (scale = alpha / rank; default rank)")
    a("--lora-targets", type=lambda text: text.split(","), default=None,
      help="comma-separated UNet layers to adapt (default: to_q,to_k,to_v,to_out.0)")
    a("--lora-format", default=defaults.lora_format, choices=choices(TrainConfig, "lora_format"),
      help="kohya: also write OUTPUT/lora_kohya.safetensors, the format A1111 and ComfyUI load")
    a("--beta-schedule", default=defaults.beta_schedule, choices=choices(TrainConfig, "beta_schedule"))
    a("--prediction-type", default=defaults.prediction_type, choices=choices(TrainConfig, "prediction_type"))
    a("--snr-gamma", type=float, default=defaults.snr_gamma, help="min-SNR-gamma weighting, e.g. 5 (default and 0: off)")
    a("--offset-noise", type=float, default=defaults.offset_noise)
    a("--grounding-loss", type=float, default=defaults.grounding_loss, help="weight of a loss that puts the "
      "cross-attention of the words naming each object on its pixels (built-in shapes data only; 0: off)")
    a("--timestep-sampling", default=defaults.timestep_sampling, choices=choices(TrainConfig, "timestep_sampling"),
      help="uniform over the schedule, or SD3's densities that train its middle more (default: uniform with "
      "--pretrained, else logit_normal)")
    a("--timestep-logit-mean", type=float, default=defaults.timestep_logit_mean,
      help="mean of logit_normal (default for a new model: its preset's, 1.8, mostly the noisier half, where layout "
      "and colour are decided; 1.5 for small, 1.2 for small-patches, 1 for sd15; 1 with --pretrained; 0: the middle)")
    a("--batch-size", type=int, default=defaults.batch_size, help="per process (default: 32 on a CPU, 512 on a GPU)")
    a("--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps)
    a("--learning-rate", type=float, default=defaults.learning_rate, help="default: 1e-3, and on a GPU with its "
      "default batch 1e-3 * sqrt(global batch / 32)")
    a("--warmup-steps", type=int, default=defaults.warmup_steps,
      help="learning-rate warmup (default 100; 30 for a new small-patches model at the CPU's batch)")
    a("--lr-cooldown", type=float, default=defaults.lr_cooldown, help="the last this share of the run (of "
      "--max-steps or --max-minutes) the learning rate falls linearly to 0 (warmup-stable-decay; 0: constant; "
      "default: 0.3 for a new model, 0 for a --pretrained one)")
    a("--half-resolution-until", type=float, default=defaults.half_resolution_until, help="train the first this share "
      "of the run at half the resolution, where steps are ~2.3x faster, then at full (0: always full)")
    a("--ema-power", type=float, default=defaults.ema_power, help="EMA warmup: at batch 32 the decay is 1 - "
      "(1 + step)^-power, and other batches average over as many images; lower follows the weights more closely")
    a("--ema-max-decay", type=float, default=defaults.ema_max_decay)
    a("--max-steps", type=int, default=None)
    a("--max-minutes", type=float, default=defaults.max_minutes, help="time budget (0 = none)")
    a("--mixed-precision", default=defaults.mixed_precision, choices=choices(TrainConfig, "mixed_precision"))
    a("--gradient-checkpointing", action="store_true")
    a("--compile", action="store_true", help="torch.compile the UNet")
    a("--seed", type=int, default=defaults.seed)
    a("--num-workers", type=int, default=defaults.num_workers)
    a("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    a("--log-every", type=int, default=defaults.log_every, help="steps per metrics.jsonl record")
    a("--report-to", default=defaults.report_to, choices=choices(TrainConfig, "report_to"),
      help="experiment tracker, logs in OUTPUT/logs (auto: tensorboard when installed)")
    a("--validation-prompts", nargs="+", default=None, help="prompts for samples/step-N.png grids")
    a("--validate-every", type=int, default=defaults.validate_every)
    a("--resume", default=None, help="'latest' or a checkpoint folder")


def train_config(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields}
    if args.unet_config:
        values["unet"] = json_object("--config", args.unet_config)
    values["snr_gamma"] = args.snr_gamma or None
    if args.mixture:
        values["mixture"] = dict(args.mixture)
    values["max_minutes"] = args.max_minutes or None
    return TrainConfig(**values)


def json_object(option: str, value: str) -> dict:
    """An option's JSON object, given inline (``'{"key": ...}'``) or as the path of a file that holds one.
    Inline JSON is never taken for a path: one longer than the system's file names would not even be looked up."""
    if not value.lstrip().startswith("{"):
        if not Path(value).is_file():
            raise ValueError(f"{option}: {value!r} is neither a JSON object nor a file")
        value = Path(value).read_text()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{option}: not valid JSON ({error})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{option}: expected a JSON object of UNet config keys, got {type(parsed).__name__}")
    return parsed


def run_train(args: argparse.Namespace) -> None:
    from .training import train

    train(train_config(args))


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    from .pipeline import SCHEDULERS

    parser.add_argument("--scheduler", default=None, choices=list(SCHEDULERS),
                        help="the sampler (default: the model's own, saved by noiseunet train: "
                             f"{SHAPES_SAMPLER[0]} for the built-in shapes, else {SAMPLING.scheduler})")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"sampling steps (default: the model's own: {SHAPES_SAMPLER[1]} for the built-in shapes, "
                             f"else {SAMPLING.steps})")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance (default: the model's own, saved by noiseunet train: "
                             f"{MANY_CONCEPTS_GUIDANCE:g} for folder and dataset data, else {SAMPLING.guidance_scale:g})")
    parser.add_argument("--seed", type=int, default=SAMPLING.seed)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--allow-pickle", action="store_true", help="also load pickle (.bin) weights")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the GPU if there is one)")
    parser.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                        help="the UNet's autocast; auto: bf16 on GPUs and on CPUs with AVX-512-BF16 or AMX")


def run_sample(args: argparse.Namespace) -> None:
    from .files import save_image
    from .grid import image_grid
    from .pipeline import generate, load_pipeline, use_scheduler

    pipe = use_scheduler(load_pipeline(args.dir, args.allow_pickle, args.device, args.lora, args.lora_scale),
                         args.scheduler)
    steps = pipe.sampler[1] if args.steps is None else args.steps
    rows = generate(pipe, args.prompts, args.num_images, args.seed, args.batch_size, args.negative_prompt,
                    args.precision, num_inference_steps=steps, guidance_scale=args.guidance_scale)
    print(f"grid: {save_image(image_grid(rows, args.prompts), args.out)}")
    if args.out_dir:
        save_captioned_folder(rows, args.prompts, args.seed, Path(args.out_dir))
        print(f"images and their captions (metadata.jsonl, usable as --data or --prior-data): {args.out_dir}")


def save_captioned_folder(rows: list[list], prompts: list[str], seed: int, folder: Path) -> None:
    """Every generated image, and a metadata.jsonl naming its prompt: a folder `noiseunet train` reads."""
    from .files import save_image, write_jsonl

    records = []
    for i, (row, prompt) in enumerate(zip(rows, prompts)):
        for k, image in enumerate(row):
            name = f"prompt{i:02d}_seed{seed + k}.png"
            save_image(image, folder / name)
            records.append({"file_name": name, "text": prompt})
    write_jsonl(folder / "metadata.jsonl", records)


def run_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate, format_report

    report = evaluate(args.dir, args.images_per_prompt, args.scheduler, args.steps, args.guidance_scale, args.seed,
                      args.batch_size, allow_pickle=args.allow_pickle, device=args.device,
                      precision=args.precision, families=args.families)
    print(format_report(report))
    print(f"report: {Path(args.dir) / 'evaluation.json'}, picture: {Path(args.dir) / 'evaluation.png'}")


def run_check_data(args: argparse.Namespace) -> None:
    from .data import open_source
    from .data.checks import check_source

    source = open_source(args.data, args.resolution, args.caption_column, args.image_column)
    good, problems = check_source(source, args.resolution)
    for problem in problems:
        print(problem)
    print(f"{len(good)} usable, {len(problems)} bad of {len(source)} samples")
    if problems:
        sys.exit(1)


def run_main(args: argparse.Namespace) -> None:
    """Train on the built-in shapes (``DEFAULT_MIXTURE`` of the task families, then ``LATER_MIXTURE``; a budget
    over 10 minutes first spends the rest on ``RELATIONS_FIRST``, training/curriculum.py), draw a grid of
    prompts, evaluate adherence on every family."""
    from .training import train
    from .training.curriculum import relations_first_minutes, relations_run, run_after_relations

    config = train_config(args)
    minutes = relations_first_minutes(config, args.relations_first)
    if minutes:
        print(f"relations first: {minutes:g} of the {config.max_minutes:g} minutes on {shares_text(RELATIONS_FIRST)}, "
              "then the main job's mixtures")
        config = run_after_relations(config, train(relations_run(config, minutes)), minutes)
    output = train(config)
    sampling = {"scheduler": None, "steps": None, "guidance_scale": None,  # the model's own
                "seed": SAMPLING.seed, "allow_pickle": False, "device": None, "precision": "auto"}
    run_sample(argparse.Namespace(dir=output, prompts=list(SAMPLE_PROMPTS), num_images=6, negative_prompt=None,
                                  out=str(output / "samples.png"), out_dir=None, batch_size=64, lora=None,
                                  lora_scale=None, **sampling))
    run_evaluate(argparse.Namespace(dir=output, images_per_prompt=args.images_per_prompt, batch_size=128,
                                    families=None, **sampling))


def run_segment_train(args: argparse.Namespace) -> None:
    from .segmentation.train import SegmentationConfig, train_segmentation

    train_segmentation(SegmentationConfig(
        output_dir=args.output, data=args.data, num_classes=args.num_classes, resolution=args.resolution,
        loss=args.loss, upsampling=args.upsampling, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_steps=args.max_steps, max_minutes=args.max_minutes or None, seed=args.seed))


def run_segment_evaluate(args: argparse.Namespace) -> None:
    from .segmentation.train import evaluate_segmentation

    result = evaluate_segmentation(args.dir, args.data)
    print(f"mean IoU {result['mean_iou']:.4f}  Dice {result['dice']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}"
          f"  ({result['images']} images)")
    print("per-class IoU: " + ", ".join(f"{v:.3f}" for v in result["per_class_iou"]))
    print(f"report: {Path(args.dir) / 'evaluation.json'}")


def run_segment_predict(args: argparse.Namespace) -> None:
    from .segmentation.train import predict_masks

    for path in predict_masks(args.dir, args.images, args.out_dir):
        print(path)


def add_segment_commands(commands) -> None:
    segment = commands.add_parser("segment", help="segmentation with the same UNet").add_subparsers(
        dest="segment_command", required=True)
    from .segmentation.train import SegmentationConfig

    defaults = SegmentationConfig()
    train = segment.add_parser("train", help="train a SegmentationUNet")
    train.add_argument("--data", default=None, help="folder with images/ and masks/ (default: built-in shapes)")
    train.add_argument("--output", default=defaults.output_dir)
    train.add_argument("--num-classes", type=int, default=None)
    train.add_argument("--resolution", type=int, default=defaults.resolution)
    train.add_argument("--loss", default=defaults.loss, choices=choices(SegmentationConfig, "loss"))
    train.add_argument("--upsampling", default=defaults.upsampling, choices=choices(SegmentationConfig, "upsampling"))
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--max-minutes", type=float, default=defaults.max_minutes)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.set_defaults(run=run_segment_train)
    evaluate = segment.add_parser("evaluate", help="mean IoU, Dice, pixel accuracy")
    evaluate.add_argument("dir")
    evaluate.add_argument("--data", default=None, help="default: built-in shapes images training never drew")
    evaluate.set_defaults(run=run_segment_evaluate)
    predict = segment.add_parser("predict", help="mask PNGs and colour overlays")
    predict.add_argument("dir")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--out-dir", default="masks")
    predict.set_defaults(run=run_segment_predict)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="noiseunet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train on image-caption pairs")
    add_train_arguments(train_parser)
    train_parser.set_defaults(run=run_train)

    sample_parser = commands.add_parser("sample", help="generate a labelled grid from prompts")
    sample_parser.add_argument("dir", help="a folder written by `noiseunet train`")
    sample_parser.add_argument("prompts", nargs="+")
    sample_parser.add_argument("--num-images", type=int, default=4, help="per prompt")
    sample_parser.add_argument("--negative-prompt", default=None)
    sample_parser.add_argument("--out", default="samples.png", help="the grid (a row per prompt)")
    sample_parser.add_argument("--out-dir", default=None, help="also save every image here, with a metadata.jsonl "
                               "of their prompts (a folder --data and --prior-data read)")
    sample_parser.add_argument("--lora", default=None, help="a LoRA file (or folder with pytorch_lora_weights."
                               "safetensors) to apply, in diffusers' or kohya's format")
    sample_parser.add_argument("--lora-scale", type=float, default=None, help="strength of --lora (default 1)")
    add_sampling_arguments(sample_parser)
    sample_parser.set_defaults(run=run_sample)

    evaluate_parser = commands.add_parser("evaluate", help="measure prompt adherence on the shapes prompts")
    evaluate_parser.add_argument("dir")
    evaluate_parser.add_argument("--images-per-prompt", type=int, default=4)
    evaluate_parser.add_argument("--families", nargs="+", default=None, choices=list(FAMILIES),
                                 help="evaluate only these task families (default: all)")
    add_sampling_arguments(evaluate_parser)
    evaluate_parser.set_defaults(run=run_evaluate)

    check_parser = commands.add_parser("check-data", help="list every bad sample without training")
    check_parser.add_argument("--data", required=True)
    check_parser.add_argument("--resolution", type=int, default=TrainConfig().resolution)
    check_parser.add_argument("--caption-column", default="text")
    check_parser.add_argument("--image-column", default="image")
    check_parser.set_defaults(run=run_check_data)

    main_parser = commands.add_parser("main", help="train on the built-in shapes, sample a grid, evaluate")
    add_train_arguments(main_parser)
    main_parser.add_argument("--images-per-prompt", type=int, default=4)
    main_parser.add_argument("--relations-first", type=float, default=None, metavar="MINUTES",
                             help="train a new model this many minutes of --max-minutes on relation prompts first "
                             "(written to OUTPUT/relations-first), then the rest on the main job's mixtures "
                             "(default: all but the last 10 minutes of a budget in minutes; 0: off)")
    main_parser.set_defaults(run=run_main, output_dir="runs/main")

    add_segment_commands(commands)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, FloatingPointError) as error:
        sys.exit(f"noiseunet {args.command}: error: {error}")


if __name__ == "__main__":
    main()
