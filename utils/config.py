"""The model's settings with their defaults: what a VAE_Model needs to be built.

The command line's defaults for these flags are these defaults (utils/flags.py),
so a test, a benchmark or a tool builds a model with the dims it needs and
nothing else: ``VAE_Model(ModelConfig(F_dim=16, D_out_dim=24))``.
"""
from dataclasses import dataclass, fields

from utils.batchnorm import ROLLOUT_STATS, TRAIN_STATS
from utils.errors import choice
from utils.submission import FRAME_SIZE

# The values each choice-valued setting takes: the command line's choices too.
CHOICES = {
    "output_activation": ("sigmoid", "clamp", "none"),
    "bn_train": TRAIN_STATS,
    "bn_rollout": ROLLOUT_STATS,
    "loss": ("mse", "l1", "l1_mse"),
    "kl_reduction": ("sum", "mean"),
    "amp": ("auto", "off", "bf16", "fp16"),
}


@dataclass
class ModelConfig:
    F_dim: int = 128           # frame feature channels
    L_dim: int = 32            # label (pose) feature channels
    N_dim: int = 12            # latent z channels
    D_out_dim: int = 192       # decoder fusion output channels
    frame_H: int = FRAME_SIZE[0]   # the size frames are loaded at: Kaggle's 32x64
    frame_W: int = FRAME_SIZE[1]
    output_activation: str = "sigmoid"   # maps the generator's output into [0, 1]
    bn_train: str = "batch"    # the label encoder's BatchNorm statistics in training
    bn_rollout: str = "frame"  # ... and in rollouts: each frame its own (the template's)
    loss: str = "mse"          # reconstruction loss: "mse", "l1" or "l1_mse"
    kl_reduction: str = "sum"  # KL per frame summed (the template's) or averaged
    detach_prev: bool = False  # stop gradients through the previous prediction
    amp: str = "auto"          # autocast precision (utils/runtime.resolve_amp)
    channels_last: bool = True  # convolution weights and activations channels-last (NHWC)

    def __post_init__(self):
        for name, values in CHOICES.items():
            choice(dict.fromkeys(values), getattr(self, name), f"--{name}")

    @classmethod
    def of(cls, settings):
        """A config from any object (the parsed flags, a namespace, a config) holding
        some of its fields; the defaults fill the rest."""
        if isinstance(settings, cls):
            return settings
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)
                      if hasattr(settings, f.name)})


DEFAULTS = ModelConfig()
