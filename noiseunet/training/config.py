"""Every training option, with its default and its allowed values, in one typed place; model presets."""

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch

from ..data.shapes import mixture_shares
from ..options import check_choices, check_range, cli_name


# Learning-rate warmup steps unless a new model's preset says (TrainConfig.for_device).
DEFAULT_WARMUP_STEPS = 100
# The share of a new model's budgeted run over which its learning rate falls to 0 (TrainConfig.cooldown).
NEW_MODEL_COOLDOWN = 0.3
# The logit-normal mean of a new model's training timesteps unless its preset says (TrainConfig.timestep_density).
NEW_MODEL_LOGIT_MEAN = 1.8


@dataclass(frozen=True)
class ModelPreset:
    """A UNet config (diffusers keys) and the size of the CLIP text transformer built with it from scratch."""

    unet: dict[str, Any]
    text_hidden_size: int
    text_layers: int
    text_heads: int
    max_text_length: int  # token length of the tokenizer built from scratch (CLIP's is 77)
    suits: str  # what data it is for, for --help and the README
    patch_size: int = 1  # pixel space: the UNet sees patch_size x patch_size patches of pixels (model/patches.py)
    # Mean of the logit-normal training timesteps of a new model of it (TrainConfig.timestep_density).
    timestep_logit_mean: float = NEW_MODEL_LOGIT_MEAN
    # Learning-rate warmup of a new model of it at the CPU's batch (TrainConfig.for_device).
    warmup_steps: int = DEFAULT_WARMUP_STEPS


def _levels(widths: tuple[int, ...], attends: tuple[bool, ...]) -> dict[str, Any]:
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends))
    return dict(block_out_channels=widths, down_block_types=down, up_block_types=up)


MODEL_PRESETS: dict[str, ModelPreset] = {
    # Two levels, one attending: smoke tests, debugging a data pipeline, a few hundred tiny images.
    "tiny": ModelPreset(dict(**_levels((32, 64), (False, True)), layers_per_block=1, attention_head_dim=2),
                        32, 1, 2, 16, "smoke tests and debugging; up to ~1k images at 32 px"),
    # Simple images at 32 px on two CPU cores: a new model of a folder or dataset. 2 x 2 patches of pixels (a
    # 32 px image is 16 x 16 latent pixels of 12 channels), then four levels (16 -> 2) with cross-attention at
    # 8, 4 and 2: the network of a 16 px model, at its price, drawing 32 px. At one step count a folder's
    # concepts are learned about alike at 16 and 32 px (the emoji benchmark), so what the patches buy is steps:
    # on an AVX2 CPU, 10 minutes gave 1346 steps and 3.16% top-1 retrieval against 488 and 0.41% on single
    # pixels (README, "Real data"). Logit mean 1.5, between the noisy steps that set a concept's layout and
    # the cleaner ones that draw its small features: after 10 minutes (bf16 EPYC) 1.8 drew "pensive face" and
    # "face with finger covering closed lips" as one yellow face, 1.2 told them apart at 23% of the emoji
    # benchmark's top-1 ceiling, 1.5 both (27%, the closest of 20 prompts' pictures 0.235 RMS apart).
    "small": ModelPreset(dict(**_levels((32, 64, 64, 64), (False, True, True, True)), layers_per_block=1,
                              attention_head_dim=2),
                         64, 2, 2, 16, "~1k-10k simple images at 32 px on a CPU (folders, datasets)", patch_size=2,
                         timestep_logit_mean=1.5),
    # The built-in shapes (the main job): 2 x 2 patches of pixels (a 32 px image is 16 x 16 latent pixels of 12
    # channels), then three levels (16 -> 4), the 4x4 level kept, with cross-attention at 8 and 4. Against
    # small on single pixels, the patches replace the plain level at full resolution and the 16 px level has no
    # transformer: those set that price, and a step costs a third of it. Its shapes' edges are learned at timesteps less noisy than small's
    # layout, hence logit mean 1.2, and a 5-minute run of ~730 steps gains from a warmup of 30. On an AVX2 CPU
    # single objects after 5 minutes: 86.1% / 77.8% (the main job; 90.6% / 83.3% and 86.1% / 83.3% in
    # `noiseunet train` with seeds 0 and 1) against 33.3% / 33.3% for small on single pixels (README, "Prompt
    # adherence"). A folder's many concepts need small's extra level and transformers (this preset with
    # attention at 16 px too: 1.1% top-1 on the emoji benchmark after 10 minutes).
    "small-patches": ModelPreset(dict(**_levels((32, 64, 64), (False, True, True)), layers_per_block=1,
                                      attention_head_dim=2, norm_num_groups=16),
                                 64, 2, 2, 16, "the built-in shapes in minutes on a CPU (the main job)", patch_size=2,
                                 timestep_logit_mean=1.2, warmup_steps=30),
    # Real images at 64 px (or SD latents of 512 px): two residual blocks per level, 8 heads.
    "base": ModelPreset(dict(**_levels((64, 128, 256, 256), (False, True, True, True)), layers_per_block=2,
                             attention_head_dim=8),
                        256, 4, 4, 32, "~10k-100k real images at 64 px, or 256-512 px with --vae; a GPU helps"),
    # Stable Diffusion 1.5's UNet (859.5M parameters) and CLIP ViT-L/14's text transformer width and depth.
    "sd15": ModelPreset(dict(**_levels((320, 640, 1280, 1280), (True, True, True, False)), layers_per_block=2,
                             attention_head_dim=8),
                        768, 12, 12, 77, "millions of images with --vae sd-vae; GPUs", timestep_logit_mean=1.0),
}

# The attention projections: what diffusers' and kohya's LoRA scripts adapt by default.
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP's attention

# The CPU recipe (learning rate, warmup, EMA horizon) was tuned at this batch.
REFERENCE_BATCH = 32
BASE_LEARNING_RATE = 1e-3
# A GPU's default batch. On one H100 the shapes UNet's bare step ran at 430 img/s in the loop at batch 64
# (host-bound), 7,136 img/s at 512 and 12,275 at 2,048 (issue 17): 512 keeps most of that rate while a
# 30-second run still takes hundreds of steps.
GPU_BATCH = 512


def scaled_learning_rate(batch: int) -> float:
    """BASE_LEARNING_RATE at REFERENCE_BATCH, scaled by the square root of the batch ratio: Adam's scaling rule
    (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"), under which the
    updates' noise per image stays the same. The warmup (--warmup-steps) covers the first, unstable steps."""
    return BASE_LEARNING_RATE * (batch / REFERENCE_BATCH) ** 0.5


# The classifier-free guidance a new model of data with many concepts (a folder, a dataset) saves with its
# pipeline, which samples with it unless told: on the emoji benchmark's 30-minute model (729 concepts) top-1
# retrieval was 8.5% at guidance 1.5, 13.2% at 3, 14.1% at 5, 15.1% at 8 and 13.9% at 12, while near-copies
# fell (19.5%, 18.5%, 15.4%, 9.9%, 3.3%); at 10 minutes 8 did as well as 3 (1.4%). With the bidirectional text
# encoder (today's preset) 8 is still the best: 19.2%, 19.9%, 18.5% at 5, 8, 12. The built-in shapes keep
# SAMPLING's 3, their best.
MANY_CONCEPTS_GUIDANCE = 8.0

# The sampler and steps a new model of the built-in shapes saves with its pipeline (``NoiseUNetPipeline.sampler``),
# which the main job evaluates with. DDPM's reverse process draws fresh noise at every step, which corrects what
# a briefly trained model gets wrong at the low noise levels it rarely trains on (logit-normal timesteps): with
# 20 deterministic DPM-Solver++ steps its squares kept ragged, rounded corners and were read as circles. The
# main job's models of 2026-11-28, 4 images per prompt (AVX2 EPYC; README, "Prompt adherence"): single
# objects after 5 minutes 94.4% / 88.9% against 86.1% / 77.8%, after 10 minutes 93.9% / 97.2% against 91.7% /
# 91.7%; the families' mean after 30 minutes 71.2% / 64.6% against 65.3% / 62.0% (at 10 minutes 40.0% / 29.2%
# against 45.5% / 33.0%). Folders and datasets keep SAMPLING's 20 DPM-Solver++ steps, as measured on emoji.
SHAPES_SAMPLER: tuple[str, int] = ("ddpm", 50)

# Kept for scripts that build the trainer's shapes UNet (scripts/bench.py).
SHAPES_PRESET: ModelPreset = MODEL_PRESETS["small-patches"]


@dataclass
class TrainConfig:
    output_dir: str = "runs/shapes"
    # Data.
    data: str | None = None  # None = the built-in shapes data
    caption_column: str = "text"
    image_column: str = "image"
    resolution: int = 32
    random_crop: bool = False
    # Aspect-ratio buckets of about resolution² pixels instead of square crops (data/buckets.py).
    buckets: bool = False
    # Off by default, as in diffusers' scripts: mirroring makes digits, letters and text wrong. Never applied
    # to captions that mention left or right.
    flip: bool = False
    caption_dropout: float = 0.1  # empty prompt this often, so classifier-free guidance works
    # Share of each task family in the built-in shapes data (data/shapes.py FAMILIES); None = DEFAULT_MIXTURE.
    mixture: dict[str, float] | None = None
    on_bad_sample: Literal["skip", "error"] = "skip"  # warn and train on the rest, or stop before training
    streaming: bool = False  # stream a hub dataset instead of downloading it (tar shards always stream)
    shuffle_buffer: int = 1000  # examples shuffled together when streaming
    # Compute the latents of a frozen VAE and the states of a frozen text encoder once (training/cache.py).
    cache: bool = True
    # Prior preservation (data/mixture.py): a second source (a folder, a datasets dataset, or "shapes") whose
    # items make --prior-share of every epoch, so a fine-tune on a few new images keeps what the model knew.
    prior_data: str | None = None
    prior_share: float | None = None  # None = 0.5 with --prior-data
    # Models.
    # Start from a pipeline: a noiseunet output folder, or a diffusers Stable Diffusion folder or hub name.
    # Its UNet, text encoder, tokenizer, VAE and noise schedule are used unless the options below replace them.
    pretrained: str | None = None
    # Preset for a new model; None: "small-patches" for the built-in shapes, "small" for other data.
    model: Literal["tiny", "small", "small-patches", "base", "sd15"] | None = None
    text_encoder: str | None = None  # hub name or folder; None = --pretrained's, or build the preset's
    train_text_encoder: bool | None = None  # default: only when built from scratch
    # Width and depth of the text transformer built from scratch; None = the preset's. A wider one gives the
    # UNet's cross-attention more room to tell many concepts apart (each attention reads a linear map of it).
    text_width: int | None = None
    text_layers: int | None = None
    # Causal as CLIP's, or every token attending to the whole caption (text.BidirectionalCLIPTextModel);
    # None: bidirectional for data of many concepts (see bidirectional_text), else causal.
    text_attention: Literal["causal", "bidirectional"] | None = None
    max_text_length: int | None = None  # tokens of the tokenizer built from scratch; None = the preset's, or the longest caption's
    vae: str | None = None  # latent diffusion with this AutoencoderKL; None = --pretrained's, or pixel space
    # Pixel space with each patch_size x patch_size patch folded into channels (model/patches.py), so the UNet
    # runs at 1/patch_size of the resolution and still draws every pixel. None: the preset's (2 for
    # small-patches, else 1), or 1 with --vae or --pretrained; 1: plain pixels. See the property ``patches``.
    patch_size: int | None = None
    allow_pickle: bool = False  # also load --text-encoder/--vae weights from pickle (.bin) files
    unet: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's UNet config
    # LoRA (Hu et al. 2021) through PEFT: low-rank adapters on these UNet layers train (and on the text
    # encoder's attention with --train-text-encoder), the base stays frozen, and the run saves
    # pytorch_lora_weights.safetensors (the file diffusers' load_lora_weights reads).
    lora_rank: int | None = None
    lora_alpha: float | None = None  # the adapters' scale is alpha / rank; None = rank (scale 1)
    lora_targets: list[str] | None = None  # None = LORA_TARGETS
    lora_format: Literal["diffusers", "kohya"] = "diffusers"  # kohya: also lora_kohya.safetensors (A1111, ComfyUI)
    # Diffusion. None: --pretrained's schedule, else these defaults for a new model.
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] | None = None  # new: cosine
    # v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022). On the built-in data at 10 minutes, epsilon
    # left a random flat background colour (2.8% all-correct); v-prediction learns the black background.
    prediction_type: Literal["epsilon", "v_prediction"] | None = None  # new: v_prediction
    # min-SNR-gamma weighting (Hang et al. 2023); None = plain MSE. With v-prediction it weights the loss by
    # about SNR at the noisiest timesteps, which is where the layout is decided: at 5.0 the model never
    # learned which side a shape goes on (position at chance after 10 minutes; 100% without it).
    snr_gamma: float | None = None
    offset_noise: float = 0.0
    # Weight of the grounding loss (training/grounding.py) beside the diffusion loss: the cross-attention of the
    # words naming an object should fall on its pixels, which the built-in data knows exactly. 0: off, the
    # default. On relation prompts alone (bf16 EPYC) 0.1 raised held-out relations after 2000 steps from 15.6% to
    # 43.8% (seen 50.0% both), but after 6000 steps the plain loss did as well (100% / 100% both); in the main
    # job's mixture (30 minutes) relations stayed at chance (22.9% / 12.5%) and held-out counting and sizes fell
    # (43.8% and 28.1% against 87.5% and 84.4%; README, "Composition").
    grounding_loss: float = 0.0
    # Which timesteps train: uniform over the schedule (DDPM), SD3's logit-normal density (std 1, mean
    # --timestep-logit-mean), or its mode density. None: uniform with --pretrained (as it was trained), else
    # logit-normal with mean 1, which rarely draws the quarter of the schedule with the least noise. On the
    # built-in data (5 minutes) it doubled the families' mean (31.0% against 16.2% seen): shapes came out right
    # far more often (85% against 41%); centred (mean 0) it also lost where objects go (position 32%).
    timestep_sampling: Literal["uniform", "logit_normal", "mode"] | None = None
    timestep_logit_mean: float | None = None  # of logit_normal; None: see the property ``timestep_density``
    # Optimisation.
    # Per process. None: picked for the device (for_device): 32 on a CPU, where short runs are short of steps
    # (at 5 minutes on the built-in shapes, 32 gave 600 steps and 91% against 347 steps and 80% for 64), and
    # GPU_BATCH on a GPU, where a CPU-sized batch leaves the device waiting on the host.
    batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    # None: BASE_LEARNING_RATE, scaled by sqrt(batch / REFERENCE_BATCH) when the batch is the GPU's pick.
    learning_rate: float | None = None
    # None: picked with the batch (for_device): 100, or the preset's for a new model at the CPU's batch.
    warmup_steps: int | None = None
    # Warmup-stable-decay (Hägele et al. 2024): over the last this share of the run (of --max-steps, or of
    # --max-minutes, whichever ends it first) the learning rate falls linearly to 0. A budgeted run then ends
    # annealed, whenever its budget ends; 0 keeps it constant. None: see the property ``cooldown``.
    lr_cooldown: float | None = None
    # Progressive resolution: the first this share of the run (as --lr-cooldown counts it) trains on the batch
    # downsampled to half the resolution (block averages), where a step costs less than half as much; the rest
    # at full resolution. 0: always full.
    half_resolution_until: float = 0.0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # EMA warmup, counted in images: the average spans REFERENCE_BATCH * (1 + images / REFERENCE_BATCH)^power
    # images (capped by ema_max_decay at REFERENCE_BATCH images per step), so at batch 32 the decay is
    # diffusers' 1 - (1 + step)^-power, and a larger batch averages over the same images, not the same steps.
    # 0.5 averages over about sqrt(step) steps; 0.75 (diffusers' example) over step^0.75, a quarter of a
    # 350-step run, which then scores the weights of 80 steps ago (80% all-correct at 5 minutes against 85%).
    ema_power: float = 0.5
    ema_max_decay: float = 0.999
    max_steps: int | None = None
    max_minutes: float | None = 10.0
    # "auto" = bf16 where the hardware has it, else float32 ("no").
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    # Bookkeeping.
    seed: int = 0
    num_workers: int | None = None  # data loader processes; None = 2-8 per GPU (run.gpu_loader_workers), 0 on a CPU
    log_every: int = 25
    # accelerate trackers, logs in OUTPUT/logs; "auto" = TensorBoard when it is installed.
    report_to: Literal["auto", "tensorboard", "wandb", "none"] = "auto"
    validation_prompts: list[str] | None = None  # None = the data's own (shapes prompts, or its first captions)
    validate_every: int = 500  # steps between samples/step-N.png grids (0 = only at the end)
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2
    resume: str | None = None  # a checkpoint folder or "latest"

    def __post_init__(self) -> None:
        check_choices(self)
        if self.lora_rank is None and (self.lora_alpha is not None or self.lora_targets is not None
                                       or self.lora_format != "diffusers"):
            raise ValueError("--lora-alpha, --lora-targets and --lora-format need --lora-rank")
        if self.lora_rank is not None and not self.pretrained:
            raise ValueError("--lora-rank adapts a pretrained UNet: give --pretrained")
        if self.prior_share is not None and self.prior_data is None:
            raise ValueError("--prior-share needs --prior-data")
        built = [cli_name(name) for name in ("text_width", "text_layers", "max_text_length") if getattr(self, name)]
        built += [f"--text-attention {self.text_attention}"] if self.text_attention else []
        if built and (self.text_encoder or self.pretrained):
            raise ValueError(f"{', '.join(built)} shape the text encoder built from scratch; --text-encoder or "
                             "--pretrained brings its own")
        heads = self.preset.text_heads
        if self.text_width is not None and self.text_width % heads:
            raise ValueError(f"text_width (--text-width) must be a multiple of the preset's {heads} attention "
                             f"heads; got {self.text_width}")
        if self.timestep_logit_mean is not None and self.timestep_density[0] != "logit_normal":
            raise ValueError("--timestep-logit-mean shifts --timestep-sampling logit_normal; give that too")
        if self.mixture is not None:  # checked before anything is written
            if self.data not in (None, "shapes"):
                raise ValueError(f"--mixture sets the families of the built-in shapes data, not of --data {self.data}")
            mixture_shares(self.mixture)
        if self.patch_size not in (None, 1) and (self.vae or self.pretrained):
            raise ValueError(f"--patch-size {self.patch_size} folds the pixels of a new model; --vae and --pretrained "
                             "bring their own latents")
        if self.patch_size is not None and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"--patch-size must be a power of 2 (1, 2, 4, ...), got {self.patch_size}")
        if self.resolution % self.patches:
            raise ValueError(f"--resolution {self.resolution} is not a multiple of the patch size {self.patches} "
                             f"(--patch-size, else the preset's; --patch-size 1 for single pixels)")
        if self.grounding_loss and (self.data not in (None, "shapes") or self.prior_data):
            raise ValueError("--grounding-loss needs the built-in shapes data (no --data or --prior-data), whose "
                             "objects' pixels are known exactly")
        if self.grounding_loss and self.gradient_checkpointing:
            raise ValueError("--grounding-loss reads the attention maps of the forward pass, which "
                             "--gradient-checkpointing recomputes without them; drop one")
        if self.buckets and self.data in (None, "shapes"):
            raise ValueError("--buckets needs --data: a folder or a datasets dataset (the built-in shapes are square)")
        if self.pretrained and (self.model or self.unet):
            raise ValueError(f"--pretrained {self.pretrained} brings its own UNet; --model and --config build a new "
                             "one (drop them, or drop --pretrained)")
        for name, low in (("resolution", 8), ("batch_size", 1), ("gradient_accumulation_steps", 1),
                          ("log_every", 1), ("checkpoint_every", 1), ("checkpoints_total_limit", 1),
                          ("validate_every", 0), ("warmup_steps", 0), ("learning_rate", 0), ("weight_decay", 0),
                          ("offset_noise", 0), ("grounding_loss", 0), ("max_steps", 0), ("shuffle_buffer", 1), ("max_text_length", 2), ("lora_rank", 1),
                          ("text_width", 1), ("text_layers", 1), ("patch_size", 1)):
            check_range(name, getattr(self, name), low)
        check_range("caption_dropout", self.caption_dropout, 0, 1)
        check_range("lr_cooldown", self.lr_cooldown, 0, 1)
        if self.lr_cooldown and not self.has_end:
            raise ValueError("--lr-cooldown needs an end to cool down to: --max-steps or --max-minutes")
        check_range("half_resolution_until", self.half_resolution_until, 0, 1, high_inclusive=False)
        if self.half_resolution_until and not self.has_end:
            raise ValueError("--half-resolution-until is a share of the run: give --max-steps or --max-minutes")
        check_range("prior_share", self.prior_share, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range("ema_max_decay", self.ema_max_decay, 0, 1)
        check_range("max_grad_norm", self.max_grad_norm, 0, low_inclusive=False)
        check_range("max_minutes", self.max_minutes, 0, low_inclusive=False)
        check_range("snr_gamma", self.snr_gamma, 0, low_inclusive=False)

    @property
    def timestep_density(self) -> tuple[str, float]:
        """(--timestep-sampling, its logit mean) with the defaults filled in: for a new model its preset's mean
        (NEW_MODEL_LOGIT_MEAN, 1.8, median timestep 858; small 1.5, median 818; small-patches 1.2, median 769;
        sd15 1, whose exact shape from scratch is unmeasured at 1.8), with --pretrained 1 (median 731; it
        samples uniformly unless told). What a small model must get right first, the layout and colours, is
        decided at the noisiest steps of sampling:
        - built-in shapes on the 4-level small UNet: single objects after 10 minutes 91.1% / 88.9% against
          36.1% / 30.6% at mean 1, families' mean 38.4% / 34.1% against 34.5% / 24.9% (AMD EPYC with AVX2 only,
          float32, 500 steps); after 5 minutes 94.4% / 97.2% against 52.2% / 55.6% (AMD EPYC with
          AVX-512-BF16, 545 steps);
        - on 2 x 2 patches (small-patches), where the layout comes easily and the shapes' edges are what is
          left, 1.2 did better after 5 minutes (AVX2 EPYC; README, "Prompt adherence");
        - the emoji benchmark (729 concepts): top-1 retrieval 27.7% against 25.5% after 3608 steps (near-copies
          2.1% against 7.3%), 3.4% against 1.9% after 10 minutes; on patches (small) 1.5 then kept the
          retrieval and told apart what 1.8 drew alike (the preset's comment).
        On the small UNet the other five task families pay for it at 5 and 10 minutes on seen prompts (at 10
        minutes their mean is 27.9% against 34.2%; size and colour binding most)."""
        sampling = self.timestep_sampling or ("uniform" if self.pretrained else "logit_normal")
        if self.timestep_logit_mean is not None:
            return sampling, self.timestep_logit_mean
        return sampling, 1.0 if self.pretrained else self.preset.timestep_logit_mean

    @property
    def preset(self) -> ModelPreset:
        """--model's preset, else small-patches for the built-in shapes and small for a folder or dataset."""
        return MODEL_PRESETS[self.model or ("small-patches" if self.data in (None, "shapes") else "small")]

    @property
    def patches(self) -> int:
        """The side of the pixel patches a new pixel-space model sees (1: single pixels): --patch-size, else the
        preset's; a VAE's latents (--vae, --pretrained's) are never patched."""
        if self.patch_size is not None:
            return self.patch_size
        return 1 if self.vae or self.pretrained else self.preset.patch_size

    @property
    def unet_config(self) -> dict[str, Any]:
        """The preset's UNet config, with the pooled text for data of many concepts, and this run's overrides."""
        return {**self.preset.unet, **self.pooled_text, **self.unet}

    @property
    def pooled_text(self) -> dict[str, Any]:
        """For data other than the built-in shapes (a folder, a dataset: many concepts, a wide vocabulary), a new
        model also adds the caption, pooled by attention, to the timestep embedding (diffusers'
        ``addition_embed_type="text"``), so every residual block, not only cross-attention, hears which concept
        is asked for. On the emoji benchmark (729 concepts, 10 minutes) it doubled top-1 retrieval (1.51%
        against 0.69%) and left 14 of the 190 pairs of 20 prompts alike instead of 41; on the built-in shapes it changed
        little (10 minutes: 49.4% / 37.6% over the families against 42.9% / 42.4%), so they keep the plain
        preset, as does sd15, which keeps SD 1.5's exact shape. ``--config '{"addition_embed_type": null}'``
        turns it off."""
        if not self.many_concepts:
            return {}
        return {"addition_embed_type": "text", "addition_embed_type_num_heads": self.preset.text_heads}

    @property
    def bidirectional_text(self) -> bool:
        """Whether the text encoder built from scratch lets every token see the whole caption: as
        --text-attention says, else for data of many concepts, where on the emoji benchmark (729 concepts) it
        raised top-1 retrieval from 15.1% to 19.9% after 30 minutes (1.4% to 2.1% after 10), every word of
        "face with tears of joy" then knowing the others. The built-in shapes keep CLIP's causal encoder: there the
        bidirectional one did worse on held-out prompts (5 minutes: 6.8% against 10.2% over the families)."""
        if self.text_attention is not None:
            return self.text_attention == "bidirectional"
        return self.many_concepts

    @property
    def has_end(self) -> bool:
        return self.max_steps is not None or self.max_minutes is not None

    @property
    def cooldown(self) -> float:
        """The share of the run over which the learning rate falls to 0: --lr-cooldown, else NEW_MODEL_COOLDOWN
        for a new model when the run has an end, else 0 (constant: a fine-tune, as in diffusers' scripts, or a
        run without an end). The EMA's short average (power 0.5, ~60 steps at the end of a 30-minute run) leaves
        the weights' noise in; annealing the rate takes it out:
        - the emoji benchmark (729 concepts, 30 minutes): top-1 retrieval 25.5% against 19.9% (top-5 44.9%
          against 36.2%);
        - the main job (AVX2 EPYC, float32): after 30 minutes the families' mean 80.2% / 65.2% against 71.2% /
          64.6% (two objects 91.7% / 81.2% against 77.1% / 75.0%, colour binding 93.8% seen against 77.1%),
          after 10 minutes 50.9% / 32.9% with single objects 95.0% / 97.2%; after 5 minutes it changed little
          (single objects 92.8% / 94.4%; README, "Composition")."""
        if self.lr_cooldown is not None:
            return self.lr_cooldown
        return NEW_MODEL_COOLDOWN if not self.pretrained and self.has_end else 0.0

    @property
    def many_concepts(self) -> bool:
        """A new model (not sd15's exact shape) of data other than the built-in shapes: a folder or a dataset,
        many concepts and a wide vocabulary, which gets the pooled text, a bidirectional text encoder and
        MANY_CONCEPTS_GUIDANCE."""
        return self.data not in (None, "shapes") and self.model != "sd15" and not self.pretrained

    def for_device(self, device: torch.device, processes: int = 1) -> "TrainConfig":
        """This config with the defaults that depend on the device filled in: the batch, and with the GPU's
        batch a learning rate scaled to the global batch (``processes`` x batch x accumulation), and the
        warmup: DEFAULT_WARMUP_STEPS, or a new model's preset's at the CPU's batch (small-patches: 30; on the
        main job's 5 minutes, about 730 steps, it did better than 100: 90.6% / 83.3% and 86.1% / 83.3% on single
        objects with seeds 0 and 1, against 86.1% / 83.3% and 75.6% / 75.0%). What the user set is kept."""
        on_gpu = self.batch_size is None and device.type == "cuda"
        batch = self.batch_size or (GPU_BATCH if on_gpu else REFERENCE_BATCH)
        rate = self.learning_rate
        if rate is None:
            global_batch = batch * processes * self.gradient_accumulation_steps
            rate = scaled_learning_rate(global_batch) if on_gpu else BASE_LEARNING_RATE
        warmup = self.warmup_steps
        if warmup is None:
            warmup = DEFAULT_WARMUP_STEPS if on_gpu or self.pretrained else self.preset.warmup_steps
        return replace(self, batch_size=batch, learning_rate=rate, warmup_steps=warmup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
