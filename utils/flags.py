"""The command line of Trainer.py and Tester.py: one set of flags, in groups.

Both scripts accept every flag (users' scripts pass the template's training
flags to Tester.py too), but each lists in ``-h`` only the flags it reads.
The model flags' defaults are ModelConfig's (utils/config.py).
"""
import argparse
import functools
import sys

from utils.cli import HelpFormatter
from utils.config import CHOICES, DEFAULTS
from utils.errors import UserError, choice
from utils.framecache import DATA_CACHES
from utils.metrics import FRAMES_PER_SEQUENCE
from utils.schedules import WARMUP_STEPS

KL_TYPES = {"cyclical": "Cyclical", "monotonic": "Monotonic", "none": "None",
            "w/o": "None", "without": "None"}
AUGMENTATION = ("Training clips only, one transform per clip drawn from (--seed, epoch, "
                "clip) and applied to all its frames and labels (utils/augment.py); all off "
                "by default.")
EPOCH_LENGTH = ("--partial keeps the first share of the training frames; --fast_train "
                "trains the first --fast_train_epoch epochs on the first --fast_partial of "
                "them; --clips_per_epoch then draws that many of the remaining clips afresh "
                "each epoch.")


def kl_type(value):
    try:
        return KL_TYPES[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown KL annealing type {value!r}; choose Cyclical, Monotonic or None") from None


def get_args_parser(for_testing=False, paths_required=True):
    """The parser of Trainer.py or, ``for_testing``, of Tester.py, where the
    training flags are accepted but not listed. Without ``paths_required``,
    --DR and --save_root may be left out (a tool that writes no run)."""
    p = argparse.ArgumentParser(
        description="Train the Lab 4 conditional VAE.", formatter_class=HelpFormatter,
        epilog="Trainer.py's flags are accepted too (a script that passes them keeps "
        "working) and do nothing here." if for_testing else None)
    shown = lambda text: argparse.SUPPRESS if for_testing else text  # noqa: E731
    data = p.add_argument_group("data")
    epoch = p.add_argument_group("epoch length", None if for_testing else EPOCH_LENGTH)
    model = p.add_argument_group("model")
    optim = p.add_argument_group("optimisation")
    runtime = p.add_argument_group("runtime")
    tf = p.add_argument_group("teacher forcing")
    kl = p.add_argument_group("KL annealing")
    aug = p.add_argument_group("augmentation", None if for_testing else AUGMENTATION)
    out = p.add_argument_group("outputs")
    # The flags are added in one fixed order: it is the order of the args a
    # checkpoint stores.
    data.add_argument("--DR", required=paths_required,
                      help="dataset root (train/, val/, test/ inside)")
    data.add_argument("--save_root", required=paths_required,
                      help="folder for submission.csv and the GIFs" if for_testing else
                      "folder for checkpoints, logs, plots")
    data.add_argument("--num_workers", type=int, default=4,
                      help=shown("DataLoader workers; read only with --data_cache none"))
    data.add_argument("--data_cache", choices=DATA_CACHES, default="disk",
                      help="disk: decode every PNG once into a file in --cache_dir that "
                      "later starts (and every torchrun rank) memory-map; memory: decode "
                      "into this process's RAM; none: decode on every access")
    data.add_argument("--cache_dir", default=None,
                      help="folder of the disk cache; default <DR>/.lab4_cache, or "
                      "$XDG_CACHE_HOME/lab4-vae (~/.cache/lab4-vae) where --DR is read-only")
    epoch.add_argument("--partial", type=float, default=1.0,
                       help=shown("fraction of training frames used"))
    epoch.add_argument("--clips_per_epoch", type=int, default=0,
                       help=shown("clips drawn at random each epoch; 0 = all"))
    data.add_argument("--train_vi_len", type=int, default=16,
                      help=shown("training clip length (frames)"))
    data.add_argument("--val_vi_len", type=int, default=FRAMES_PER_SEQUENCE,
                      help=shown("validation video length"))
    data.add_argument("--frame_H", type=int, default=DEFAULTS.frame_H, help="frame height")
    data.add_argument("--frame_W", type=int, default=DEFAULTS.frame_W, help="frame width")
    epoch.add_argument("--fast_train", action="store_true",
                       help=shown("shorter first epochs (see above)"))
    epoch.add_argument("--fast_partial", type=float, default=0.4,
                       help=shown("data fraction in fast epochs"))
    epoch.add_argument("--fast_train_epoch", type=int, default=5,
                       help=shown("number of fast epochs"))

    model.add_argument("--F_dim", type=int, default=DEFAULTS.F_dim,
                       help="frame feature channels")
    model.add_argument("--L_dim", type=int, default=DEFAULTS.L_dim,
                       help="label (pose) feature channels")
    model.add_argument("--N_dim", type=int, default=DEFAULTS.N_dim, help="latent z channels")
    model.add_argument("--D_out_dim", type=int, default=DEFAULTS.D_out_dim,
                       help="decoder fusion output channels")
    model.add_argument("--output_activation", choices=CHOICES["output_activation"],
                       default=DEFAULTS.output_activation,
                       help="maps the generator's output into [0, 1]")
    model.add_argument("--bn_rollout", choices=CHOICES["bn_rollout"], default=DEFAULTS.bn_rollout,
                       help="statistics of the label encoder's BatchNorm in validation and "
                       "test rollouts: each frame its own (the template's numbers) or the "
                       "running statistics")
    model.add_argument("--bn_train", choices=CHOICES["bn_train"], default=DEFAULTS.bn_train,
                       help=shown("statistics of that BatchNorm in training: over the batch's "
                                  "frames, or each frame its own (as in rollouts)"))

    optim.add_argument("--batch_size", type=int, default=2,
                       help=shown("clips per step per process: under torchrun the effective "
                                  "batch is nproc x batch_size"))
    optim.add_argument("--lr", type=float, default=0.001,
                       help=shown("peak learning rate; at the default dims 3e-3 diverges, "
                                  "while small models (the quickstart's) do best with 3e-3"))
    optim.add_argument("--optim", choices=["Adam", "AdamW"], default="AdamW",
                       help=shown("optimizer (template: Adam)"))
    optim.add_argument("--lr_scheduler", choices=["cosine", "multistep", "constant"],
                       default="cosine", help=shown("per-epoch LR schedule; multistep is the "
                                                    "template's MultiStepLR([2, 5], 0.1)"))
    optim.add_argument("--warmup_steps", type=int, default=WARMUP_STEPS,
                       help=shown("raise the LR linearly over the first N optimizer steps "
                                  "(0: off)"))
    optim.add_argument("--num_epoch", type=int, default=70, help=shown("number of epochs"))
    optim.add_argument("--loss", choices=CHOICES["loss"], default=DEFAULTS.loss,
                       help=shown("reconstruction loss: MSE (the template's), L1, or 0.5 L1 "
                                  "+ 0.5 MSE"))
    optim.add_argument("--grad_clip", type=float, default=1.0, help=shown("gradient-norm clip"))
    runtime.add_argument("--seed", type=int, default=0,
                         help="random seed (training's draws; the rollouts' z)")
    runtime.add_argument("--device", default="auto",
                         help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu")
    runtime.add_argument("--gpu", type=int, default=0,
                         help="CUDA device index for --device cuda")
    runtime.add_argument("--amp", choices=CHOICES["amp"], default=DEFAULTS.amp,
                         help="autocast precision (default: auto = bf16 where the device "
                         "computes it natively: CUDA compute capability 8.0+, CPUs with "
                         "AVX512-BF16/AMX; fp16 with a gradient scaler on CUDA 7.x: T4, V100, "
                         "RTX 20xx; else off, fp32); fp16 needs a device whose scaler runs")
    runtime.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                         help="keep convolution weights and activations channels-last (NHWC)")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the networks")
    runtime.add_argument("--compile_mode", choices=["default", "reduce-overhead", "max-autotune"],
                         default="default", help="torch.compile mode with --compile "
                         "(reduce-overhead: CUDA graphs on a GPU)")

    tf.add_argument("--tfr", type=float, default=0.0,
                    help=shown("initial teacher-forcing ratio (template: 1.0)"))
    tf.add_argument("--tfr_sde", type=int, default=10,
                    help=shown("epoch where the ratio starts to decay"))
    tf.add_argument("--tfr_d_step", type=float, default=0.1, help=shown("ratio decay per epoch"))
    tf.add_argument("--tf_mode", choices=["batch", "frame"], default="batch",
                    help=shown("draw teacher forcing once per batch or per frame (scheduled "
                               "sampling)"))
    tf.add_argument("--detach_prev", action="store_true", default=DEFAULTS.detach_prev,
                    help=shown("stop gradients through the previous prediction"))

    kl.add_argument("--kl_anneal_type", type=kl_type, default="None",
                    help=shown("Cyclical, Monotonic or None (beta = 1) (template: Cyclical)"))
    kl.add_argument("--kl_anneal_cycle", type=int, default=10, help=shown("cycles (Cyclical)"))
    kl.add_argument("--kl_anneal_ratio", type=float, default=1.0,
                    help=shown("fraction of a cycle spent rising"))
    kl.add_argument("--kl_reduction", choices=CHOICES["kl_reduction"], default=DEFAULTS.kl_reduction,
                    help=shown("KL per frame summed over latent elements (template) or "
                               "averaged"))

    aug.add_argument("--aug_flip", type=float, default=0.0,
                     help=shown("probability of mirroring a clip left-right"))
    aug.add_argument("--aug_shift", type=float, default=0.0,
                     help=shown("largest horizontal shift of a clip, as a fraction of the "
                                "frame width (whole pixels; the edge pixels fill in)"))
    aug.add_argument("--aug_scale", type=float, nargs=2, default=[1.0, 1.0],
                     metavar=("LOW", "HIGH"),
                     help=shown("zoom a clip by a factor drawn log-uniformly between LOW and "
                                "HIGH (< 1 zooms out, > 1 in, toward a close-up)"))
    aug.add_argument("--aug_color", type=float, default=0.0,
                     help=shown("largest change of a clip's brightness (each channel varies "
                                "by half as much more); frames only, labels keep their "
                                "colours"))

    out.add_argument("--per_save", type=int, default=3,
                     help=shown("write epoch=N.ckpt every N epochs"))
    out.add_argument("--ckpt_path", default=None,
                     help="checkpoint to test" if for_testing else
                     "checkpoint to resume from (or, with --test, to validate)")
    out.add_argument("--test", action="store_true",
                     help=shown("only validate --ckpt_path once"))
    out.add_argument("--overwrite", action="store_true",
                     help=shown("start a new run in a --save_root that holds one: its files "
                                "move into <save_root>/previous-<N>/ (nothing is deleted); "
                                "without it such a --save_root is refused unless --ckpt_path "
                                "resumes from it"))
    out.add_argument("--store_visualization", action="store_true",
                     help=shown("save a GIF of each validation (prediction | truth | label)"))
    return p
def parse_args(argv=None, parser=None):
    """Parse the command line and remember which flags were typed (their dests)."""
    parser = parser or get_args_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.explicit_flags = sorted({dest for dest in (typed_dest(parser, t) for t in argv) if dest})
    return args


def default_args(*argv, **values):
    """Trainer.py's flags for code that is not a command line (a test, a
    benchmark): the defaults, then ``argv`` parsed as the command line would be,
    then ``values`` by name. No dataset or --save_root is needed."""
    args = parse_args(argv, get_args_parser(paths_required=False))
    for name, value in values.items():
        if not hasattr(args, name):
            raise TypeError(f"Trainer.py has no flag --{name}")
        setattr(args, name, value)
    return args


def typed_dest(parser, token):
    """The dest a command-line token names: its flag spelled out or, as argparse
    accepts, abbreviated to an unambiguous prefix (--ckpt for --ckpt_path)."""
    if not token.startswith("--"):
        return None
    option = token.split("=", 1)[0]
    dest_of = {name: a.dest for a in parser._actions for name in a.option_strings}
    if option in dest_of:
        return dest_of[option]
    matches = {dest for name, dest in dest_of.items() if name.startswith(option)}
    return matches.pop() if len(matches) == 1 else None


@functools.lru_cache
def flag_choices():
    """{dest: its choices} of every choice-valued flag."""
    return {a.dest: tuple(a.choices) for a in get_args_parser(paths_required=False)._actions
            if a.choices is not None}


def validate_args(args):
    """Reject values that cannot work, naming the flag: from the command line, a
    checkpoint's stored args or code, every choice-valued flag holds one of its
    choices and every number its range."""
    for dest, values in flag_choices().items():
        if hasattr(args, dest):
            choice(dict.fromkeys(values), getattr(args, dest), f"--{dest}")
    choice(dict.fromkeys(KL_TYPES.values()), args.kl_anneal_type, "--kl_anneal_type")
    positive = ("num_epoch", "batch_size", "train_vi_len", "val_vi_len", "frame_H", "frame_W",
                "F_dim", "L_dim", "N_dim", "D_out_dim", "per_save", "kl_anneal_cycle")
    for name in positive:
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}.")
    if args.clips_per_epoch < 0:
        raise UserError(f"--clips_per_epoch must be 0 (all clips) or positive, "
                        f"got {args.clips_per_epoch}.")
    if args.train_vi_len < 2 or args.val_vi_len < 2:
        raise UserError("--train_vi_len and --val_vi_len need at least 2 frames.")
    for name in ("tfr", "tfr_d_step"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UserError(f"--{name} must lie in [0, 1], got {getattr(args, name)}.")
    for name in ("partial", "fast_partial"):
        if not 0.0 < getattr(args, name) <= 1.0:
            raise UserError(f"--{name} must lie in (0, 1], got {getattr(args, name)}.")
    if args.kl_anneal_ratio <= 0:
        raise UserError(f"--kl_anneal_ratio must be > 0, got {args.kl_anneal_ratio}.")
    if args.kl_anneal_type == "Cyclical" and args.kl_anneal_cycle > args.num_epoch / 2:
        # A cycle shorter than 2 epochs restarts at beta = 0 every epoch: no annealing.
        fit = (f"at most {args.num_epoch // 2} fit" if args.num_epoch >= 2
               else "Cyclical needs --num_epoch 2 or more")
        raise UserError(f"--kl_anneal_cycle {args.kl_anneal_cycle} is too many cycles for "
                        f"--num_epoch {args.num_epoch}: each cycle needs at least 2 epochs, "
                        f"or beta is 0 in every epoch; {fit}.")
    for name in ("aug_flip", "aug_shift", "aug_color"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UserError(f"--{name} must lie in [0, 1], got {getattr(args, name)}.")
    low, high = args.aug_scale
    if not 0.0 < low <= high:
        raise UserError(f"--aug_scale takes LOW HIGH with 0 < LOW <= HIGH (1 1: no zoom), "
                        f"got {low:g} {high:g}.")
    if args.lr <= 0 or args.grad_clip <= 0:
        raise UserError("--lr and --grad_clip must be > 0.")
    for name in ("num_workers", "fast_train_epoch", "tfr_sde", "warmup_steps"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must be >= 0, got {getattr(args, name)}.")
