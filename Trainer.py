"""Train the pose-conditioned video-prediction VAE (Lab 4).

    python Trainer.py --DR <dataset> --save_root <dir> [--fast_train]

Reads top to bottom: flags, schedules (pure functions of epoch and step), the model
(one-frame prediction, clip loss, rollout), the training loop, main().
"""
import argparse
import contextlib
import functools
import math
import random
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from dataloader import Dataset_Dance, list_images
from modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder
from utils import runlog, saveroot
from utils.batchnorm import ROLLOUT_STATS, TRAIN_STATS, FrameBatchNorm2d
from utils.checkpoint import (FORMAT_VERSION, atomic_save, check_dims, dims_of,
                              is_template_checkpoint, load_checkpoint, plain_args)
from utils.cli import HelpFormatter, progress_bar
from utils.errors import UserError, exit_on_user_error
from utils.media import save_comparison_gif
from utils.metrics import psnr_per_frame
from utils.plots import plot_run
from utils.runtime import seed_for, setup_distributed

KL_TYPES = {"cyclical": "Cyclical", "monotonic": "Monotonic", "none": "None",
            "w/o": "None", "without": "None"}
# Flags that define the network: a checkpoint's values win unless contradicted.
MODEL_FLAGS = ("F_dim", "L_dim", "N_dim", "D_out_dim", "frame_H", "frame_W", "output_activation")
# Flags that say where and how to run, never taken from a checkpoint.
RUN_FLAGS = ("DR", "save_root", "ckpt_path", "device", "gpu", "num_workers", "test",
             "store_visualization", "overwrite", "explicit_flags")
LOGVAR_LIMIT = 10.0  # |logvar| <= 10 keeps exp(logvar) finite in fp32 and bf16
# Adam's first steps move every weight by about lr whatever its gradient; a linear
# warm-up keeps them small (README, "Quality").
WARMUP_STEPS = 100
CLIP_DRAW_SALT = 0x5EED  # the per-epoch clip draw has its own stream, apart from the shuffle
# Frames per call of the batched networks, by device type: on a CPU, calls of 8
# frames keep the activations cache-sized (README, "Speed"). Device types not listed
# take the whole clip in one call.
FRAME_CHUNK = {"cpu": 8}


# --------------------------------------------------------------------------- flags
def kl_type(value):
    try:
        return KL_TYPES[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown KL annealing type {value!r}; choose Cyclical, Monotonic or None") from None


def get_args_parser():
    p = argparse.ArgumentParser(description="Train the Lab 4 conditional VAE.",
                                formatter_class=HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--DR", required=True, help="dataset root (train/, val/, test/ inside)")
    data.add_argument("--save_root", required=True, help="folder for checkpoints, logs, plots")
    data.add_argument("--num_workers", type=int, default=4,
                      help="DataLoader workers (used with --data_cache none)")
    data.add_argument("--data_cache", choices=["memory", "none"], default="memory",
                      help="decode every PNG once into RAM (memory) or on every access (none)")
    data.add_argument("--partial", type=float, default=1.0, help="fraction of training frames used")
    data.add_argument("--clips_per_epoch", type=int, default=0,
                      help="clips drawn at random from all used ones each epoch; 0 = all")
    data.add_argument("--train_vi_len", type=int, default=16, help="training clip length (frames)")
    data.add_argument("--val_vi_len", type=int, default=630, help="validation video length")
    data.add_argument("--frame_H", type=int, default=32, help="frame height")
    data.add_argument("--frame_W", type=int, default=64, help="frame width")
    data.add_argument("--fast_train", action="store_true",
                      help="use --fast_partial of the data for the first --fast_train_epoch epochs")
    data.add_argument("--fast_partial", type=float, default=0.4, help="data fraction in fast epochs")
    data.add_argument("--fast_train_epoch", type=int, default=5, help="number of fast epochs")

    model = p.add_argument_group("model")
    model.add_argument("--F_dim", type=int, default=128, help="frame feature channels")
    model.add_argument("--L_dim", type=int, default=32, help="label (pose) feature channels")
    model.add_argument("--N_dim", type=int, default=12, help="latent z channels")
    model.add_argument("--D_out_dim", type=int, default=192, help="decoder fusion output channels")
    model.add_argument("--output_activation", choices=["sigmoid", "clamp", "none"],
                       default="sigmoid", help="maps the generator's output into [0, 1]")
    model.add_argument("--bn_rollout", choices=ROLLOUT_STATS, default="frame",
                       help="statistics of the label encoder's BatchNorm in validation and "
                       "test rollouts: each frame its own (the template's numbers) or the "
                       "running statistics (model.eval())")
    model.add_argument("--bn_train", choices=TRAIN_STATS, default="batch",
                       help="statistics of that BatchNorm in training: over the batch's "
                       "frames, or each frame its own (as in rollouts)")

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--batch_size", type=int, default=2,
                       help="clips per step per process: under torchrun the effective batch "
                       "is nproc x batch_size")
    optim.add_argument("--lr", type=float, default=0.001,
                       help="peak learning rate; at the default dims 3e-3 diverges, while "
                       "small models (the quickstart's) do best with 3e-3")
    optim.add_argument("--optim", choices=["Adam", "AdamW"], default="AdamW",
                       help="optimizer (template: Adam)")
    optim.add_argument("--lr_scheduler", choices=["cosine", "multistep", "constant"],
                       default="cosine", help="per-epoch LR schedule; multistep is the "
                       "template's MultiStepLR([2, 5], 0.1)")
    optim.add_argument("--warmup_steps", type=int, default=WARMUP_STEPS,
                       help="raise the LR linearly over the first N optimizer steps (0: off)")
    optim.add_argument("--num_epoch", type=int, default=70, help="number of epochs")
    optim.add_argument("--loss", choices=["mse", "l1_mse"], default="mse",
                       help="reconstruction loss: MSE (the template's), or 0.5 L1 + 0.5 MSE")
    optim.add_argument("--grad_clip", type=float, default=1.0, help="gradient-norm clip")
    optim.add_argument("--seed", type=int, default=0, help="random seed")
    optim.add_argument("--device", default="auto",
                       help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu")
    optim.add_argument("--gpu", type=int, default=0, help="CUDA device index for --device cuda")
    optim.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                       help="autocast precision; auto = bf16 where the device computes it "
                       "natively (CPUs with AVX512-BF16/AMX, CUDA GPUs with bf16), else off; "
                       "fp16 needs CUDA")
    optim.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                       help="keep convolution weights and activations channels-last (NHWC)")
    optim.add_argument("--compile", action="store_true", help="torch.compile the networks")
    optim.add_argument("--compile_mode", choices=["default", "reduce-overhead", "max-autotune"],
                       default="default", help="torch.compile mode with --compile "
                       "(reduce-overhead: CUDA graphs on a GPU)")

    tf = p.add_argument_group("teacher forcing")
    tf.add_argument("--tfr", type=float, default=0.0,
                    help="initial teacher-forcing ratio (template: 1.0)")
    tf.add_argument("--tfr_sde", type=int, default=10, help="epoch where the ratio starts to decay")
    tf.add_argument("--tfr_d_step", type=float, default=0.1, help="ratio decay per epoch")
    tf.add_argument("--tf_mode", choices=["batch", "frame"], default="batch",
                    help="draw teacher forcing once per batch or per frame (scheduled sampling)")
    tf.add_argument("--detach_prev", action="store_true",
                    help="stop gradients through the previous prediction")

    kl = p.add_argument_group("KL annealing")
    kl.add_argument("--kl_anneal_type", type=kl_type, default="None",
                    help="Cyclical, Monotonic or None (beta = 1) (template: Cyclical)")
    kl.add_argument("--kl_anneal_cycle", type=int, default=10, help="cycles (Cyclical)")
    kl.add_argument("--kl_anneal_ratio", type=float, default=1.0,
                    help="fraction of a cycle spent rising")
    kl.add_argument("--kl_reduction", choices=["sum", "mean"], default="sum",
                    help="KL per frame summed over latent elements (template) or averaged")

    out = p.add_argument_group("outputs")
    out.add_argument("--per_save", type=int, default=3, help="write epoch=N.ckpt every N epochs")
    out.add_argument("--ckpt_path", default=None, help="checkpoint to resume from (or test)")
    out.add_argument("--test", action="store_true", help="only validate --ckpt_path once")
    out.add_argument("--overwrite", action="store_true",
                     help="start a new run in a --save_root that holds one: its files move "
                     "into <save_root>/previous-<N>/ (nothing is deleted); without it such a "
                     "--save_root is refused unless --ckpt_path resumes from it")
    out.add_argument("--store_visualization", action="store_true",
                     help="save a GIF of each validation (prediction | truth | label)")
    return p


def parse_args(argv=None, parser=None):
    """Parse the command line and remember which flags were typed (their dests)."""
    parser = parser or get_args_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.explicit_flags = sorted({dest for dest in (typed_dest(parser, t) for t in argv) if dest})
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


def validate_args(args):
    """Reject values that cannot work, naming the flag."""
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
    if args.lr <= 0 or args.grad_clip <= 0:
        raise UserError("--lr and --grad_clip must be > 0.")
    for name in ("num_workers", "fast_train_epoch", "tfr_sde", "warmup_steps"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must be >= 0, got {getattr(args, name)}.")


def merge_checkpoint_args(args, saved, overridable=()):
    """Take the checkpoint's settings for every flag the user did not type.

    A typed model flag that contradicts the checkpoint is an error naming it;
    typed flags in ``overridable`` (a resumed run's recipe) win.
    """
    typed = set(getattr(args, "explicit_flags", []))
    conflicts = [f"--{k} {getattr(args, k)} (checkpoint: {saved[k]})" for k in MODEL_FLAGS
                 if k in typed and k in saved and getattr(args, k) != saved[k]]
    if conflicts:
        raise UserError("flags contradict the checkpoint: " + ", ".join(conflicts)
                        + ". Drop them: the checkpoint's values are used.")
    for key, value in saved.items():
        if hasattr(args, key) and key not in RUN_FLAGS and not (
                key in typed and key in overridable):
            setattr(args, key, kl_type(value) if key == "kl_anneal_type" else value)
    return args


# --------------------------------------------------------------------------- schedules
class kl_annealing:
    """Beta of the KL term per epoch (Fu et al. 2019, cyclical annealing).

    ``kl_annealing(args, current_epoch=k).get_beta()`` is what an
    uninterrupted run uses at epoch k.
    """

    def __init__(self, args, current_epoch=0):
        self.type, self.epoch = args.kl_anneal_type, current_epoch
        cycles = {"Cyclical": args.kl_anneal_cycle, "Monotonic": 1}.get(self.type)
        self.betas = None if cycles is None else self.frange_cycle_linear(
            args.num_epoch, 0.0, 1.0, cycles, args.kl_anneal_ratio)

    def get_beta(self):
        if self.betas is None:
            return 1.0
        return self.betas[min(self.epoch, len(self.betas) - 1)]

    @staticmethod
    def frange_cycle_linear(n_iter, start=0.0, stop=1.0, n_cycle=1, ratio=1):
        """Each of n_cycle periods rises linearly from start by
        (stop - start) / (period * ratio) per step while <= stop, then holds stop."""
        betas = [stop] * n_iter
        period = n_iter / n_cycle
        step = (stop - start) / (period * ratio)
        for cycle in range(n_cycle):
            i = 0
            while start + i * step <= stop + 1e-9 and int(i + cycle * period) < n_iter:
                betas[int(i + cycle * period)] = min(start + i * step, stop)
                i += 1
        return betas


def teacher_forcing_ratio(args, epoch):
    """tfr until epoch tfr_sde, then tfr_d_step less per epoch, never below 0."""
    return max(0.0, args.tfr - args.tfr_d_step * max(0, epoch - args.tfr_sde))


def lr_factor(args, epoch):
    """Multiplier of --lr at an epoch."""
    if args.lr_scheduler == "multistep":
        return 0.1 ** sum(epoch >= milestone for milestone in (2, 5))
    if args.lr_scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, args.num_epoch) / args.num_epoch))
    return 1.0


def warmup_factor(args, step):
    """Multiplier of the LR at an optimizer step (counted over the whole run)."""
    return min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps > 0 else 1.0


def learning_rate(args, epoch, step):
    """The LR of an optimizer step: set before every step, its only source."""
    return args.lr * lr_factor(args, epoch) * warmup_factor(args, step)


def template_lr(args, last_epoch, step):
    """The checkpoint's ``lr`` field, for the course template's Trainer, which
    restores it and continues with Adam at that rate: the rate this run would
    take next or, once the schedule has ended (cosine ends at 0), the peak --lr."""
    if last_epoch + 1 >= args.num_epoch:
        return args.lr
    return learning_rate(args, last_epoch + 1, step)


def kl_divergence(mu, logvar, reduction="sum"):
    """Analytic KL(N(mu, exp(logvar)) || N(0, I)) per frame, averaged over frames.

    mu, logvar: (N, C, H, W), N frames. 'sum' adds the C*H*W elements of a
    frame (the template's normalisation), 'mean' averages them.
    """
    # exp(v) - 1 - v via expm1: no cancellation when the posterior is near the prior.
    per_element = 0.5 * (mu.pow(2) + torch.expm1(logvar) - logvar)
    per_frame = per_element.flatten(1).sum(1) if reduction == "sum" else per_element.flatten(1).mean(1)
    return per_frame.mean()


# --------------------------------------------------------------------------- model
def non_finite_remedies(args, device_type):
    """The settings worth changing after a non-finite loss, for this run's flags."""
    remedies = [f"a lower --lr (this run: {args.lr:g})"]
    if resolve_amp(args.amp, device_type) != "off":
        remedies.append("--amp off")
    if args.kl_reduction == "sum":
        remedies.append("--kl_reduction mean")
    return ", ".join(remedies[:-1]) + " or " + remedies[-1] if len(remedies) > 1 else remedies[0]


def squash(x, activation):
    """The generator's output -> [0, 1] by --output_activation ("none": as is)."""
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "clamp":
        return x.clamp(0.0, 1.0)
    return x


@contextlib.contextmanager
def evaluating(module):
    """Eval mode for the duration of a with-block, then the previous mode again."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class VAE_Model(nn.Module):
    """The five networks plus what trains them (the template's shape)."""

    def __init__(self, args, dist=None):
        super().__init__()
        self.args = args
        self.frame_transformation = RGB_Encoder(3, args.F_dim)
        self.label_transformation = Label_Encoder(3, args.L_dim, norm_layer=functools.partial(
            FrameBatchNorm2d, train_stats=args.bn_train, rollout_stats=args.bn_rollout))
        self.Gaussian_Predictor = Gaussian_Predictor(args.F_dim + args.L_dim, args.N_dim)
        self.Decoder_Fusion = Decoder_Fusion(args.F_dim + args.L_dim + args.N_dim, args.D_out_dim)
        self.Generator = Generator(input_nc=args.D_out_dim, output_nc=3)
        # The posterior starts at the prior (mu = 0, logvar = 0): the KL term starts at
        # zero instead of dominating the first epoch, and the decoder learns from the
        # start to render from the pose and the previous frame, not from z.
        nn.init.zeros_(self.Gaussian_Predictor[-1].weight)
        nn.init.zeros_(self.Gaussian_Predictor[-1].bias)

        optimizer = torch.optim.AdamW if args.optim == "AdamW" else torch.optim.Adam
        self.optim = optimizer(self.parameters(), lr=args.lr)   # learning_rate() sets it per step
        self.scaler = torch.amp.GradScaler(enabled=args.amp == "fp16")
        self.dist = dist
        self.current_epoch, self.global_step = 0, 0
        self.best_val_psnr = -math.inf
        self.kl_annealing = kl_annealing(args, current_epoch=0)
        self.tfr = teacher_forcing_ratio(args, 0)
        self.stop_signal = None

    @property
    def device(self):
        return next(self.parameters()).device

    def autocast(self):
        precision = resolve_amp(self.args.amp, self.device.type)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # One path for a frame: every prediction (training, validation, test) uses it.
    def squash(self, x):
        return squash(x, self.args.output_activation)

    def decode(self, prev_feature, label_feature, z):
        """x̂_t = squash(G(Fusion(enc(x_{t-1}), enc(p_t), z_t)))."""
        # z is sampled in fp32 and often (N)CHW: give it the features' dtype and
        # layout so that the fusion's concatenation needs no format conversion.
        layout = (torch.channels_last if label_feature.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format)
        z = z.to(dtype=label_feature.dtype, memory_format=layout)
        return self.squash(self.Generator(self.Decoder_Fusion(prev_feature, label_feature, z)))

    def posterior(self, frame_feature, label_feature, noise=None):
        """q(z_t | x_t, p_t): returns z, mu, logvar with logvar clamped for safety."""
        # The network's own z is not used: it is drawn before logvar is clamped and
        # cannot take given noise. Calling the module (not its layers) keeps hooks
        # and --compile applying to it.
        _, mu, logvar = self.Gaussian_Predictor(frame_feature, label_feature)
        mu, logvar = mu.float(), logvar.float().clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)
        noise = torch.randn_like(mu) if noise is None else noise
        return mu + noise * torch.exp(0.5 * logvar), mu, logvar

    @staticmethod
    def encode_clip(net, *clips, chunk=None):
        """Apply a per-frame network to clips (N1, N2, C, H, W) -> (N1, N2, C', H, W),
        ``chunk`` frames per call (all N1*N2 frames in one call when None)."""
        frames = [clip.flatten(0, 1) for clip in clips]
        if chunk is None or chunk >= len(frames[0]):
            out = net(*frames)
        else:
            out = torch.cat([net(*parts) for parts in zip(*(f.split(chunk) for f in frames))])
        return out.unflatten(0, clips[0].shape[:2])

    def forward(self, img, label, teacher_forcing, beta, noise=None):
        """Loss of one clip. img, label: (B, T, 3, H, W); teacher_forcing: a bool
        or one bool per predicted frame; noise: optional eps (B, T-1, N_dim, H, W).

        Frames x_2..x_T are predicted. The ground-truth frames are encoded once:
        enc(x_t) feeds the posterior at t and, under teacher forcing, the
        decoder at t+1. Only the decoder is sequential, and only when a frame
        is predicted from the model's own previous prediction. Features are
        kept time-major, (T, B, ...), so every time step is a contiguous block.
        """
        B, T = img.shape[:2]
        steps = T - 1
        forcing = [bool(teacher_forcing)] * steps if isinstance(teacher_forcing, bool) \
            else list(teacher_forcing)
        chunk = FRAME_CHUNK.get(img.device.type)
        img_tb = img.transpose(0, 1)                                      # (T, B, 3, H, W)
        frame_feat = self.encode_clip(self.frame_transformation, img_tb,
                                      chunk=chunk)                        # (T, B, F, H, W)
        # One call over the clip: with --bn_train batch, the BatchNorm's statistics span
        # all its frames.
        label_feat = self.encode_clip(self.label_transformation,
                                      label.transpose(0, 1)[1:])          # (T-1, B, L, H, W)
        eps = None if noise is None else noise.transpose(0, 1).flatten(0, 1)
        z, mu, logvar = self.posterior(frame_feat[1:].flatten(0, 1), label_feat.flatten(0, 1),
                                       eps)                               # ((T-1)*B, N, H, W)
        z = z.unflatten(0, (steps, B))                                    # (T-1, B, N, H, W)

        if all(forcing):
            pred = self.encode_clip(self.decode, frame_feat[:-1], label_feat, z, chunk=chunk)
        else:
            frames, prev = [], None
            for t in range(steps):
                if forcing[t] or prev is None:
                    prev_feat = frame_feat[t]
                else:
                    prev_feat = self.frame_transformation(
                        prev.detach() if self.args.detach_prev else prev)
                prev = self.decode(prev_feat, label_feat[t], z[t])
                frames.append(prev)
            pred = torch.stack(frames)                                    # (T-1, B, 3, H, W)

        pred, truth = pred.float(), img_tb[1:].float()
        mse = F.mse_loss(pred, truth)
        reconstruction = mse if self.args.loss == "mse" else 0.5 * (F.l1_loss(pred, truth) + mse)
        kl = kl_divergence(mu, logvar, self.args.kl_reduction)
        return reconstruction + beta * kl, mse.detach(), kl.detach()

    @torch.no_grad()
    def rollout(self, first_frame, labels, generator=None, z_scale=1.0, noise=None, chunk=64,
                progress=False):
        """Autoregressive prediction from the prior: first_frame (B, 3, H, W),
        labels (B, T, 3, H, W) -> frames (B, T, 3, H, W), frames[:, 0] = first_frame.

        z_t = z_scale * eps with eps ~ N(0, I) drawn from ``generator`` (z_scale 1:
        a sample of the prior; 0: its mean), unless ``noise`` (B, T-1, N_dim, H, W)
        gives z. All B
        sequences advance together, one batched step per frame; labels are
        encoded ``chunk`` time steps at a time (bounded memory). The networks run
        in eval mode: the BatchNorm normalises as --bn_rollout says (each frame on
        its own by default, so sequences never influence each other) and its
        running statistics are left untouched.
        """
        B, T = labels.shape[:2]
        out = torch.empty(B, T, *first_frame.shape[1:], device=first_frame.device)
        out[:, 0] = first_frame
        prev = first_frame
        z_shape = (B, self.args.N_dim, *first_frame.shape[-2:])
        steps = progress_bar(range(1, T), desc="rollout", leave=False) if progress else range(1, T)
        with evaluating(self), self.autocast():
            for t in steps:
                if (t - 1) % chunk == 0:
                    # Time-major, so each step's features are one contiguous block.
                    label_feat = self.encode_clip(
                        self.label_transformation,
                        labels[:, t:t + chunk].transpose(0, 1))           # (chunk, B, L, H, W)
                if noise is not None:
                    z = noise[:, t - 1]
                elif z_scale == 0:
                    z = torch.zeros(z_shape, device=out.device)
                else:
                    z = z_scale * torch.randn(z_shape, device=out.device, generator=generator)
                prev = self.decode(self.frame_transformation(prev), label_feat[(t - 1) % chunk], z)
                out[:, t] = prev.float()
        return out

    @torch.no_grad()
    def one_step(self, frames, labels, chunk=64):
        """Every frame predicted from the true previous one, with z = 0 (the
        prior's mean): frames, labels (B, T, 3, H, W) -> (B, T, 3, H, W),
        out[:, 0] = frames[:, 0].

        The networks run as in rollout(), but no prediction is fed back, so no
        error can accumulate: against rollout(z_scale=0) it tells accumulated
        error from frames that are hard in themselves.
        """
        B, T = labels.shape[:2]
        out = torch.empty(frames.shape, device=frames.device)
        out[:, 0] = frames[:, 0]
        with evaluating(self), self.autocast():
            for t in range(1, T, chunk):
                label = labels[:, t:t + chunk].transpose(0, 1)           # (n, B, 3, H, W)
                prev = frames[:, t - 1:t - 1 + len(label)].transpose(0, 1)
                z = torch.zeros(*label.shape[:2], self.args.N_dim, *label.shape[-2:],
                                device=frames.device)                    # (n, B, N, H, W)
                pred = self.encode_clip(self.decode,
                                        self.encode_clip(self.frame_transformation, prev),
                                        self.encode_clip(self.label_transformation, label), z)
                out[:, t:t + len(label)] = pred.transpose(0, 1).float()
        return out

    # ----------------------------------------------------------------------- training
    def training_one_step(self, img, label, adapt_TeacherForcing, engine=None):
        """One optimizer step on a clip; returns (loss, mse, kl, grad_norm) floats.

        ``engine`` runs the forward pass: this model, or its DDP wrapper, which
        synchronises the gradients across processes.
        """
        beta = self.kl_annealing.get_beta()
        with self.autocast():
            loss, mse, kl = (engine or self)(img, label, adapt_TeacherForcing, beta)
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optim)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.args.grad_clip)
        values = torch.stack([loss.detach().float(), mse.float(), kl.float(),
                              grad_norm.float()]).tolist()
        if not all(math.isfinite(v) for v in values[:3]) or (
                not math.isfinite(values[3]) and self.args.amp != "fp16"):
            raise UserError(
                f"non-finite loss at epoch {self.current_epoch}, step {self.global_step} "
                f"(loss {values[0]}, MSE {values[1]}, KL {values[2]}, grad norm {values[3]}). "
                "Stopped before the update; the last good checkpoint is intact. "
                f"Try {non_finite_remedies(self.args, self.device.type)}.")
        for group in self.optim.param_groups:
            group["lr"] = learning_rate(self.args, self.current_epoch, self.global_step)
        self.scaler.step(self.optim)
        self.scaler.update()
        self.global_step += 1
        return values

    @torch.no_grad()
    def val_one_step(self, img, label, generator=None):
        """Roll out a validation video (B, T, 3, H, W) from its first frame.

        Returns the MSE loss and the PSNR of each predicted frame (T-1,),
        averaged over the batch after the log (correct for any batch size).
        """
        pred = self.rollout(img[:, 0], label, generator=generator)
        loss = F.mse_loss(pred[:, 1:], img[:, 1:]).item()
        return loss, psnr_per_frame(pred[:, 1:], img[:, 1:]).mean(0).cpu(), pred

    def train_dataloader(self, dataset, epoch):
        """Shuffled clips of one epoch; --fast_train uses the first fast_partial share.

        Under DDP each rank gets a disjoint 1/world_size share of a per-epoch
        shuffle (padded to equal length so every rank takes the same steps).
        """
        args = self.args
        if args.fast_train and epoch < args.fast_train_epoch:
            clips = int(len(dataset.frame_files) * args.fast_partial) // args.train_vi_len
            dataset = Subset(dataset, range(min(max(clips, 1), len(dataset))))
        if 0 < args.clips_per_epoch < len(dataset):
            # A fresh draw each epoch shows every motion of the set within a short epoch;
            # seeded by the epoch alone, so every rank and a resumed run draw the same.
            draw = torch.Generator().manual_seed(seed_for(args.seed, epoch) ^ CLIP_DRAW_SALT)
            chosen = torch.randperm(len(dataset), generator=draw)[:args.clips_per_epoch]
            dataset = Subset(dataset, chosen.sort().values.tolist())
        if self.dist is not None and self.dist.enabled:
            sampler = DistributedSampler(dataset, num_replicas=self.dist.world_size,
                                         rank=self.dist.rank, shuffle=True, seed=args.seed)
            sampler.set_epoch(epoch)
            shuffle, generator = False, None
        else:
            sampler, shuffle = None, True
            generator = torch.Generator().manual_seed(seed_for(args.seed, epoch))
        workers = 0 if args.data_cache == "memory" else args.num_workers
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=shuffle, sampler=sampler,
                            generator=generator, num_workers=workers, drop_last=True,
                            pin_memory=self.device.type == "cuda")
        if len(loader) == 0:
            # drop_last would silently train nothing and log zero losses.
            processes = self.dist.world_size if self.dist is not None else 1
            raise UserError(f"{len(dataset)} training clips over {processes} process(es) give "
                            f"no full batch of --batch_size {args.batch_size} (per process); "
                            "lower --batch_size or --train_vi_len, or use more data.")
        return loader

    def teacher_forcing_draws(self, rng, steps):
        if self.args.tf_mode == "frame":
            return [rng.random() < self.tfr for _ in range(steps)]
        return rng.random() < self.tfr

    def train_one_epoch(self, dataset, epoch, engine=None):
        args, rank = self.args, 0 if self.dist is None else self.dist.rank
        torch.manual_seed(seed_for(args.seed, epoch, rank))
        # The same teacher-forcing stream on every rank keeps DDP ranks in step.
        tf_rng = random.Random(seed_for(args.seed, epoch))
        loader = self.train_dataloader(dataset, epoch)
        self.train()
        totals, tf_on, batches = [0.0, 0.0, 0.0], 0.0, 0
        bar = progress_bar(loader, desc=f"train {epoch}", disable=not self.is_main, leave=False)
        for img, label in bar:
            img = img.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            forcing = self.teacher_forcing_draws(tf_rng, img.shape[1] - 1)
            loss, mse, kl, _ = self.training_one_step(img, label, forcing, engine)
            totals = [a + b for a, b in zip(totals, (loss, mse, kl))]
            tf_on += forcing if isinstance(forcing, bool) else sum(forcing) / len(forcing)
            batches += 1
            bar.set_postfix(loss=f"{loss:.4f}", mse=f"{mse:.4f}", kl=f"{kl:.3g}",
                            beta=f"{self.kl_annealing.get_beta():.2f}", tf=f"{self.tfr:.2f}",
                            lr=f"{self.optim.param_groups[0]['lr']:.2e}", refresh=False)
            if self.stop_requested():
                return None
        means = [v / max(batches, 1) for v in (*totals, tf_on)]
        if self.dist is not None:
            means = self.dist.mean(means)
        return dict(zip(("train_loss", "train_mse", "train_kl", "tf_on_frac"), means))

    @property
    def is_main(self):
        return self.dist is None or self.dist.is_main

    def stop_requested(self):
        """True once SIGINT/SIGTERM arrived on any rank."""
        flag = self.stop_signal is not None
        if self.dist is not None and self.dist.enabled:
            flag = self.dist.mean([float(flag)])[0] > 0
        return flag

    def validate(self, dataset):
        """Roll out every validation video with the same z every epoch (comparable PSNR)."""
        generator = torch.Generator(self.device).manual_seed(self.args.seed)
        losses, psnrs, first_video = [], [], None
        for index in range(len(dataset)):
            img, label = (x[None].to(self.device) for x in dataset[index])
            loss, psnr, pred = self.val_one_step(img, label, generator)
            losses.append(loss)
            psnrs.append(psnr)
            if first_video is None:   # what --store_visualization shows
                first_video = (pred[0], img[0], label[0])
        return sum(losses) / len(losses), torch.stack(psnrs).mean(0), first_video

    def training_stage(self, train_set, val_set, engine=None):
        args, save_root = self.args, Path(self.args.save_root)
        for epoch in range(self.current_epoch, args.num_epoch):
            started = time.time()
            self.current_epoch = epoch
            self.kl_annealing = kl_annealing(args, current_epoch=epoch)
            self.tfr = teacher_forcing_ratio(args, epoch)
            lr = args.lr * lr_factor(args, epoch)   # the epoch's rate; warm-up scales early steps
            train = self.train_one_epoch(train_set, epoch, engine)
            if train is None:
                self.save_interrupted()
            if self.is_main:
                val_loss, frame_psnr, (pred, truth, labels) = self.validate(val_set)
                val_psnr = frame_psnr.mean().item()
                improved = val_psnr > self.best_val_psnr
                self.best_val_psnr = max(self.best_val_psnr, val_psnr)
                runlog.write_frame_psnr(save_root, epoch, frame_psnr.tolist())
                runlog.append_metrics(save_root, dict(
                    epoch=epoch, lr=lr, tfr=self.tfr, beta=self.kl_annealing.get_beta(), **train,
                    val_loss=val_loss, val_psnr=val_psnr, best_val_psnr=self.best_val_psnr,
                    epoch_seconds=round(time.time() - started, 2)))
                self.save_epoch(improved)
                plot_run(save_root)
                if args.store_visualization:
                    save_comparison_gif(save_root / "visualization" / f"val_epoch{epoch}.gif",
                                        [pred, truth, labels])
                tqdm.write(f"epoch {epoch}: loss {train['train_loss']:.5f} (MSE "
                           f"{train['train_mse']:.5f}, KL {train['train_kl']:.4g}, beta "
                           f"{self.kl_annealing.get_beta():.2f}), tfr {self.tfr:.2f}, lr {lr:.2e}"
                           f" | val PSNR {val_psnr:.2f} dB (best {self.best_val_psnr:.2f})")
            if self.dist is not None:
                self.dist.barrier()

    # ----------------------------------------------------------------------- checkpoints
    def checkpoint(self, last_epoch):
        return {
            "format_version": FORMAT_VERSION,
            "state_dict": self.state_dict(),
            "optimizer": self.optim.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lr": template_lr(self.args, last_epoch, self.global_step),
            "tfr": self.tfr,
            "last_epoch": last_epoch,
            "global_step": self.global_step,
            "best_val_psnr": self.best_val_psnr,
            "args": plain_args(self.args),
        }

    def save(self, path, last_epoch=None):
        atomic_save(self.checkpoint(self.current_epoch if last_epoch is None else last_epoch), path)

    def save_epoch(self, improved):
        save_root = Path(self.args.save_root)
        self.save(save_root / "last.ckpt")
        if improved:
            self.save(save_root / "best.ckpt")
        if self.current_epoch % self.args.per_save == 0:
            self.save(save_root / f"epoch={self.current_epoch}.ckpt")

    def save_interrupted(self):
        """Keep the partial epoch's weights; a resume redoes this epoch."""
        path = Path(self.args.save_root) / "last.ckpt"
        if self.is_main:
            self.save(path, last_epoch=self.current_epoch - 1)
            print(f"\nstopped by {self.stop_signal} in epoch {self.current_epoch}; saved '{path}'.\n"
                  f"resume with: python Trainer.py --DR {self.args.DR} --save_root "
                  f"{self.args.save_root} --ckpt_path {path}", file=sys.stderr)
        raise SystemExit(130 if self.stop_signal == "SIGINT" else 143)

    def load_checkpoint(self, ckpt, source):
        """Load weights, and for this project's checkpoints the whole training state.

        The LR needs no state of its own: learning_rate(args, epoch, step) gives it.
        """
        check_dims(ckpt["state_dict"], self.args, source)
        self.load_state_dict(ckpt["state_dict"])
        self.current_epoch = int(ckpt.get("last_epoch", -1)) + 1
        if is_template_checkpoint(ckpt):
            print(f"note: '{source}' is a course-template checkpoint: weights loaded; it holds "
                  "no optimizer state, so the optimizer starts fresh.", file=sys.stderr)
            return
        self.optim.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and self.scaler.is_enabled():   # empty unless trained in fp16
            self.scaler.load_state_dict(ckpt["scaler"])
        self.global_step = int(ckpt.get("global_step", 0))
        self.best_val_psnr = float(ckpt.get("best_val_psnr", -math.inf))


# --------------------------------------------------------------------------- checkpoint settings
ACTIVATION_PROBE_FRAMES = 48  # val frames rolled out per candidate output activation


def take_checkpoint_settings(args, ckpt, source, resume=False):
    """Fill every flag the user did not type from the checkpoint to test or resume.

    This project's checkpoints store their flags. Others (the course template's,
    a classmate's) store none: the model dims are read off the weights' shapes,
    the frame size keeps its flags (no weight depends on it), the output
    activation is measured, and a resume takes their lr and tfr.
    """
    foreign = not isinstance(ckpt.get("args"), dict)
    if foreign:
        merge_checkpoint_args(args, dims_of(ckpt["state_dict"]))
    else:
        merge_checkpoint_args(args, ckpt["args"], overridable=set(vars(args)) - set(MODEL_FLAGS))
    validate_args(args)
    if resume:
        require_epochs_left(args, ckpt, source)
        if foreign:
            continue_foreign_schedule(args, ckpt, source)
    if foreign:
        choose_output_activation(args, ckpt["state_dict"], source)
    validate_args(args)
    return args


def require_epochs_left(args, ckpt, source):
    last = int(ckpt.get("last_epoch", -1))
    if last + 1 < args.num_epoch:
        return
    stretch = (" (the cosine schedule is then laid over the new --num_epoch, so the LR rises "
               "again)" if args.lr_scheduler == "cosine" else "")
    raise UserError(f"'{source}' is already at the last epoch: it finished epoch {last} and "
                    f"--num_epoch {args.num_epoch} ends at epoch {args.num_epoch - 1}, so "
                    "nothing is left to train. To train longer, resume with a larger "
                    f"--num_epoch, e.g. --num_epoch {last + 11}{stretch}; to evaluate it, "
                    "add --test.")


def continue_foreign_schedule(args, ckpt, source):
    """Resume a checkpoint without flags with its ``lr`` and ``tfr``, as the
    template's loader does, unless --lr or --tfr was typed.

    The LR here is a function of (epoch, step) around a peak --lr, so the
    checkpoint's lr becomes --lr, the peak of the resumed run's schedule. Its
    tfr is the ratio of its last epoch: --tfr becomes the initial ratio that
    --tfr_sde and --tfr_d_step decay to it by then, so the decay carries on.
    """
    epoch, typed, notes = int(ckpt.get("last_epoch", -1)) + 1, args.explicit_flags, []
    if "lr" not in typed and float(ckpt.get("lr", 0)) > 0:
        args.lr = float(ckpt["lr"])
        warmup = (f" once the {args.warmup_steps}-step warm-up of the fresh optimizer is over"
                  if args.warmup_steps else "")
        notes.append(f"--lr {args.lr:g} (the checkpoint's lr) is the peak of --lr_scheduler "
                     f"{args.lr_scheduler}: epoch {epoch} runs at "
                     f"{args.lr * lr_factor(args, epoch):.3g}{warmup}")
    if "tfr" not in typed and "tfr" in ckpt:
        stored = float(ckpt["tfr"])
        args.tfr = min(1.0, stored + args.tfr_d_step * max(0, epoch - 1 - args.tfr_sde))
        notes.append(f"--tfr {args.tfr:g}, from which --tfr_sde {args.tfr_sde} and --tfr_d_step "
                     f"{args.tfr_d_step:g} reach the checkpoint's tfr {stored:g} at epoch "
                     f"{epoch - 1}: epoch {epoch} uses {teacher_forcing_ratio(args, epoch):g}")
    if notes:
        print(f"note: resuming '{source}', which records no flags, with its lr and tfr: "
              + "; ".join(notes) + ". Type --lr or --tfr to choose otherwise.", file=sys.stderr)


def choose_output_activation(args, state_dict, source):
    """The output activation of a checkpoint that does not record it, by measurement.

    The template's generator has none (clamping is its fix), many students add a
    sigmoid, and the weights cannot tell. Each candidate rolls out the first
    frames of the val video with the same z; the better PSNR wins. A typed
    --output_activation wins over both. Measured on the CPU, so that the Trainer
    and the Tester see the same figures and make the same choice.
    """
    if "output_activation" in args.explicit_flags:
        return args.output_activation
    val = Path(args.DR) / "val" / "val_img"
    frames = min(ACTIVATION_PROBE_FRAMES, len(list_images(val))) if val.is_dir() else 0
    if frames < 2:
        args.output_activation = "clamp"
        print(f"note: '{source}' does not record its output activation and '{val}' holds no "
              "val video to measure it on: using --output_activation clamp (the template's "
              "generator has none); type --output_activation sigmoid if yours ends in a "
              "sigmoid.", file=sys.stderr)
        return args.output_activation
    video = Subset(Dataset_Dance(args.DR, None, "val", frames, cache=False,
                                 frame_size=(args.frame_H, args.frame_W)), [0])
    psnr = {}
    for candidate in ("sigmoid", "clamp"):
        model = VAE_Model(argparse.Namespace(**{**vars(args), "output_activation": candidate}))
        model.load_state_dict(state_dict)
        psnr[candidate] = model.validate(video)[1].mean().item()
    args.output_activation = max(psnr, key=psnr.get)
    other = "clamp" if args.output_activation == "sigmoid" else "sigmoid"
    print(f"note: '{source}' does not record its output activation; rolled out over the first "
          f"{frames} val frames, sigmoid gives {psnr['sigmoid']:.2f} dB and clamp "
          f"{psnr['clamp']:.2f} dB: using --output_activation {args.output_activation} (type "
          f"--output_activation {other} to override).", file=sys.stderr)
    return args.output_activation


# --------------------------------------------------------------------------- main
def prepare_save_root(path):
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"--save_root '{path}' is not writable ({error.strerror}); "
                        "choose a folder you can write to.") from None
    return path


def claim_save_root(args, dist, held):
    """Rank 0 makes --save_root ready and, to train, holds its lock until ``held``
    closes; under torchrun the other ranks learn whether it could and stop if not."""
    failure = None
    if dist.is_main:
        try:
            save_root = prepare_save_root(args.save_root)
            if not args.test:   # --test only reads: it may run beside a training run
                held.enter_context(saveroot.exclusive(save_root))
                aside = saveroot.make_room(save_root, args.ckpt_path, args.overwrite, args.DR)
                if aside is not None:
                    print(f"--overwrite: the earlier run in '{save_root}' was moved into "
                          f"'{aside}'.", file=sys.stderr)
        except UserError as error:
            failure = error
    if dist.mean([float(failure is not None)])[0] > 0:
        if failure is not None:
            raise failure
        raise SystemExit(2)   # rank 0 prints why
    return Path(args.save_root)


CPUINFO = Path("/proc/cpuinfo")


def cpu_computes_bf16():
    """AVX512-BF16 or AMX on this CPU: torch's own check where this torch has one,
    else the flags Linux lists (torch 2.4 has no check; elsewhere: no)."""
    if hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache
def resolve_amp(amp, device_type):
    """--amp auto -> bf16 where the device type has native bf16 arithmetic, else off.

    args keep the requested value, so a checkpoint trained with auto runs in
    bf16 where that is native and in fp32 elsewhere (an old GPU, a laptop CPU).
    """
    if amp != "auto":
        return amp
    if device_type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    elif device_type == "cpu":
        native = cpu_computes_bf16()
    else:
        native = False
    return "bf16" if native else "off"


def apply_runtime_options(model, args):
    """--channels_last and --compile: how the networks run, not what they compute."""
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.compile:
        for name in ("frame_transformation", "label_transformation", "Gaussian_Predictor",
                     "Decoder_Fusion", "Generator"):
            getattr(model, name).compile(mode=args.compile_mode)
    return model


def build_model(args, dist=None, ckpt=None, source=None):
    torch.manual_seed(args.seed)
    device = dist.device if dist else torch.device("cpu")
    model = VAE_Model(args, dist).to(device)
    if ckpt is not None:
        model.load_checkpoint(ckpt, source)
    return apply_runtime_options(model, args)


def install_stop_handlers(model):
    def request_stop(signum, frame):
        if model.stop_signal is not None:   # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        model.stop_signal = signal.Signals(signum).name
        tqdm.write(f"{model.stop_signal} received: saving after this step...")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


@exit_on_user_error
def main(args):
    """Train, or with --test validate a checkpoint once. Returns nothing on every rank:
    the results are the files in --save_root and the printed figures."""
    validate_args(args)
    ckpt = load_checkpoint(args.ckpt_path) if args.ckpt_path else None
    if ckpt is not None:
        take_checkpoint_settings(args, ckpt, args.ckpt_path, resume=not args.test)
    dist = setup_distributed(args.device, args.gpu)
    with contextlib.ExitStack() as held:
        held.callback(dist.close)
        save_root = claim_save_root(args, dist, held)
        frame_size = (args.frame_H, args.frame_W)
        cache = args.data_cache == "memory"
        val_set = Dataset_Dance(args.DR, None, "val", args.val_vi_len, 1.0,
                                frame_size=frame_size, cache=cache)
        model = build_model(args, dist, ckpt, args.ckpt_path)
        if args.test:
            if ckpt is None:
                raise UserError("--test needs --ckpt_path: the checkpoint to validate.")
            if dist.is_main:  # every rank would print the same numbers
                val_loss, frame_psnr, _ = model.validate(val_set)
                print(f"val loss {val_loss:.6f}, val PSNR {frame_psnr.mean():.3f} dB "
                      f"over {len(frame_psnr)} frames")
            return
        train_set = Dataset_Dance(args.DR, None, "train", args.train_vi_len, args.partial,
                                  frame_size=frame_size, cache=cache)
        if dist.is_main:
            runlog.write_args(save_root, plain_args(args))
            runlog.truncate_metrics(save_root, model.current_epoch - 1)
            per_epoch = (f", {args.clips_per_epoch} drawn each epoch"
                         if 0 < args.clips_per_epoch < len(train_set) else "")
            print(f"training on {dist.device} x{dist.world_size}: {len(train_set)} clips of "
                  f"{args.train_vi_len} frames{per_epoch}, epochs {model.current_epoch}.."
                  f"{args.num_epoch - 1}")
        install_stop_handlers(model)
        model.training_stage(train_set, val_set, engine=dist.wrap(model))
        if dist.is_main:
            print(f"done: best val PSNR {model.best_val_psnr:.2f} dB; checkpoints in '{save_root}'")


if __name__ == "__main__":
    main(parse_args())
