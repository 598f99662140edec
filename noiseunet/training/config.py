"""Every training option, with its default, in one typed place."""

from dataclasses import asdict, dataclass, field
from typing import Any

# The UNet the trainer builds when it starts from scratch: small enough to learn the built-in shapes on
# two CPU cores in minutes. Four levels (32 -> 4 pixels) with cross-attention at 16, 8 and 4: at 4x4 every
# position touches the zero padding, which is how a convolutional net knows left from right. It also runs
# faster than three levels (84 against 77 img/s here).
SMALL_UNET: dict[str, Any] = dict(
    block_out_channels=(32, 64, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,
)
# The CLIP text transformer built when no --text-encoder is given.
SMALL_TEXT_ENCODER: dict[str, int] = dict(hidden_size=64, num_layers=2, num_heads=2)


@dataclass
class TrainConfig:
    output_dir: str = "runs/shapes"
    # Data.
    data: str | None = None  # None = the built-in shapes data
    caption_column: str = "text"
    image_column: str = "image"
    resolution: int = 32
    random_crop: bool = False
    flip: bool = True  # never applied to captions that mention left or right
    caption_dropout: float = 0.1  # empty prompt this often, so classifier-free guidance works
    on_bad_sample: str = "skip"  # "skip" (warn, train on the rest) or "error" (stop before training)
    streaming: bool = False  # stream a hub dataset instead of downloading it (tar shards always stream)
    shuffle_buffer: int = 1000  # examples shuffled together when streaming
    # Models.
    text_encoder: str | None = None  # hub name or folder; None = build a small CLIP text model
    train_text_encoder: bool | None = None  # default: only when built from scratch
    max_text_length: int = 16  # token length of the tokenizer built from scratch (CLIP's is 77)
    vae: str | None = None  # latent diffusion with this AutoencoderKL; None = pixel space
    allow_pickle: bool = False  # also load --text-encoder/--vae weights from pickle (.bin) files
    unet: dict[str, Any] = field(default_factory=lambda: dict(SMALL_UNET))
    # Diffusion.
    beta_schedule: str = "squaredcos_cap_v2"  # "linear", "scaled_linear" or "squaredcos_cap_v2" (cosine)
    # v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022). On the built-in data at 10 minutes, epsilon
    # left a random flat background colour (2.8% all-correct); v-prediction learns the black background.
    prediction_type: str = "v_prediction"  # or "epsilon"
    # min-SNR-gamma weighting (Hang et al. 2023); None = plain MSE. With v-prediction it weights the loss by
    # about SNR at the noisiest timesteps, which is where the layout is decided: at 5.0 the model never
    # learned which side a shape goes on (position at chance after 10 minutes; 100% without it).
    snr_gamma: float | None = None
    offset_noise: float = 0.0
    # Optimisation.
    batch_size: int = 64  # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    ema_power: float = 0.75  # EMA warmup: decay = 1 - (1 + step)^-power, capped at ema_max_decay
    ema_max_decay: float = 0.999
    max_steps: int | None = None
    max_minutes: float | None = 10.0
    mixed_precision: str = "auto"  # "auto" = bf16 where the hardware has it, else "no"; or "no", "bf16", "fp16"
    gradient_checkpointing: bool = False
    compile: bool = False
    # Bookkeeping.
    seed: int = 0
    num_workers: int | None = None  # data loader processes; None = 2 on a GPU, 0 on a CPU
    log_every: int = 25
    validation_prompts: list[str] | None = None  # None = a few shapes prompts when training on shapes
    validate_every: int = 500  # steps between samples/step-N.png grids (0 = only at the end)
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2
    resume: str | None = None  # a checkpoint folder or "latest"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
