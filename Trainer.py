"""Train the pose-conditioned video-prediction VAE (Lab 4).

    python Trainer.py --DR <dataset> --save_root <dir> [--fast_train]

Reads top to bottom: the template's functions, the model (the five networks and
their maths: the loss of a clip, the rollout, prediction from the true previous
frame, and the template's methods), the settings a checkpoint brings, main().
The flags live in utils/flags.py, the schedules in utils/schedules.py, and the
training mechanics (optimizer, epoch loop, validation, checkpoints, logs) in
utils/training.py; docs/architecture.md draws the layers.
"""
import argparse
import contextlib
import functools
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from dataloader import Dataset_Dance, list_images
from modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder
from utils import runlog, saveroot
from utils.batchnorm import FrameBatchNorm2d
from utils.checkpoint import check_dims, dims_of, load_checkpoint, plain_args
from utils.cli import progress_bar
from utils.config import ModelConfig
from utils.errors import UserError, exit_on_user_error
from utils.flags import MODEL_FLAGS, merge_checkpoint_args, parse_args, validate_args
from utils.media import save_gif
from utils.metrics import psnr_per_frame
from utils.runtime import resolve_amp, setup_distributed
from utils.schedules import (epoch_learning_rate, initial_tfr_reaching, kl_annealing,
                             teacher_forcing_ratio)
from utils.training import Training, val_videos, validate

__all__ = ["Generate_PSNR", "kl_criterion", "kl_annealing", "VAE_Model", "main"]

LOGVAR_LIMIT = 10.0  # |logvar| <= 10 keeps exp(logvar) finite in fp32 and bf16
# Frames per call of the batched networks, by device type: on a CPU, calls of 8
# frames keep the activations cache-sized (docs/speed.md). Device types not listed
# take the whole clip in one call.
FRAME_CHUNK = {"cpu": 8}


# --------------------------------------------------------------------------- the template's functions
def Generate_PSNR(imgs1, imgs2, data_range=1.):
    """PSNR of a batch of frames, the mean of each frame's own PSNR (the log is
    taken per frame, so the figure is right for any batch size)."""
    return psnr_per_frame(imgs1, imgs2, data_range).mean()


def kl_divergence(mu, logvar, reduction="sum"):
    """Analytic KL(N(mu, exp(logvar)) || N(0, I)) per frame, averaged over frames.

    mu, logvar: (N, C, H, W), N frames. 'sum' adds the C*H*W elements of a
    frame (the template's normalisation), 'mean' averages them.
    """
    # exp(v) - 1 - v via expm1: no cancellation when the posterior is near the prior.
    per_element = 0.5 * (mu.pow(2) + torch.expm1(logvar) - logvar)
    per_frame = per_element.flatten(1).sum(1) if reduction == "sum" else per_element.flatten(1).mean(1)
    return per_frame.mean()


def kl_criterion(mu, logvar, batch_size):
    """The template's KL: summed over every latent value, divided by batch size."""
    return kl_divergence(mu, logvar, "sum") * mu.shape[0] / batch_size


def reconstruction_loss(pred, truth, loss, mse=None):
    """--loss between predicted and true frames: "mse" (the template's), "l1", or
    "l1_mse" = 0.5 L1 + 0.5 MSE. ``mse``: the MSE if already computed."""
    mse = F.mse_loss(pred, truth) if mse is None else mse
    if loss == "mse":
        return mse
    l1 = F.l1_loss(pred, truth)
    return l1 if loss == "l1" else 0.5 * (l1 + mse)


def apply_output_activation(x, activation):
    """The generator's output -> [0, 1] by --output_activation ("none": as is)."""
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "clamp":
        return x.clamp(0.0, 1.0)
    return x


@contextlib.contextmanager
def inference_mode(model):
    """Networks in eval mode for a with-block, then the previous mode again.
    (VAE_Model.eval() is the template's validation, so the mode is set with train().)"""
    was_training = model.training
    model.train(False)
    try:
        yield model
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- the model
def template_networks(dims, norm_layer=nn.BatchNorm2d):
    """The template's five networks for ``dims`` (F_dim, L_dim, N_dim, D_out_dim),
    by the attribute names its VAE_Model gives them, in its order."""
    frame_and_label = dims.F_dim + dims.L_dim
    return {
        "frame_transformation": RGB_Encoder(3, dims.F_dim),
        "label_transformation": Label_Encoder(3, dims.L_dim, norm_layer=norm_layer),
        "Gaussian_Predictor": Gaussian_Predictor(frame_and_label, dims.N_dim),
        "Decoder_Fusion": Decoder_Fusion(frame_and_label + dims.N_dim, dims.D_out_dim),
        "Generator": Generator(input_nc=dims.D_out_dim, output_nc=3),
    }


class VAE_Model(nn.Module):
    """The five networks of the template, under the template's names, and their maths.

    ``VAE_Model(args)`` takes the parsed flags or any object with some of
    ModelConfig's fields (the defaults fill the rest). The template's training
    methods keep their names and meanings; a Training (utils/training.py),
    built on first use, carries them out, so a model built to test never gets
    an optimizer.
    """

    def __init__(self, args):
        super().__init__()
        self.args, self.config = args, ModelConfig.of(args)
        norm = functools.partial(FrameBatchNorm2d, train_stats=self.config.bn_train,
                                 rollout_stats=self.config.bn_rollout)
        # frame_transformation, label_transformation, Gaussian_Predictor,
        # Decoder_Fusion, Generator: the template's names, so checkpoints move freely.
        for name, network in template_networks(self.config, norm).items():
            setattr(self, name, network)
        # The posterior starts at the prior (mu = 0, logvar = 0): the KL term starts at
        # zero instead of dominating the first epoch, and the decoder learns from the
        # start to render from the pose and the previous frame, not from z.
        nn.init.zeros_(self.Gaussian_Predictor[-1].weight)
        nn.init.zeros_(self.Gaussian_Predictor[-1].bias)
        self._trainer = None

    @property
    def device(self):
        return next(self.parameters()).device

    def autocast(self):
        precision = resolve_amp(self.config.amp, self.device.type)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # ----------------------------------------------------------------------- one frame
    def decode(self, prev_feature, label_feature, z):
        """x̂_t = act(G(Fusion(enc(x_{t-1}), enc(p_t), z_t))): every prediction
        (training, validation, test) takes this one path."""
        # z is sampled in fp32 and often (N)CHW: give it the features' dtype and
        # layout so that the fusion's concatenation needs no format conversion.
        layout = (torch.channels_last if label_feature.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format)
        z = z.to(dtype=label_feature.dtype, memory_format=layout)
        frame = self.Generator(self.Decoder_Fusion(prev_feature, label_feature, z))
        return apply_output_activation(frame, self.config.output_activation)

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
    def per_frame(net, *clips, chunk=None):
        """Apply a per-frame network to clips (N1, N2, C, H, W) -> (N1, N2, C', H, W),
        ``chunk`` frames per call (all N1*N2 frames in one call when None)."""
        frames = [clip.flatten(0, 1) for clip in clips]
        if chunk is None or chunk >= len(frames[0]):
            out = net(*frames)
        else:
            out = torch.cat([net(*parts) for parts in zip(*(f.split(chunk) for f in frames))])
        return out.unflatten(0, clips[0].shape[:2])

    # ----------------------------------------------------------------------- a clip's loss
    def forward(self, img, label, teacher_forcing=True, beta=1.0, noise=None):
        """Loss of a batch of clips: (loss, mse, kl). img, label: (B, T, 3, H, W);
        teacher_forcing: a bool or one bool per predicted frame; beta: the KL
        weight; noise: optional eps (B, T-1, N_dim, H, W).

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
        frame_feat = self.per_frame(self.frame_transformation, img_tb,
                                    chunk=chunk)                          # (T, B, F, H, W)
        # One call over the clip: with --bn_train batch, the BatchNorm's statistics span
        # all its frames.
        label_feat = self.per_frame(self.label_transformation,
                                    label.transpose(0, 1)[1:])            # (T-1, B, L, H, W)
        eps = None if noise is None else noise.transpose(0, 1).flatten(0, 1)
        z, mu, logvar = self.posterior(frame_feat[1:].flatten(0, 1), label_feat.flatten(0, 1),
                                       eps)                               # ((T-1)*B, N, H, W)
        z = z.unflatten(0, (steps, B))                                    # (T-1, B, N, H, W)

        if all(forcing):
            pred = self.per_frame(self.decode, frame_feat[:-1], label_feat, z, chunk=chunk)
        else:
            frames, prev = [], None
            for t in range(steps):
                if forcing[t] or prev is None:
                    prev_feat = frame_feat[t]
                else:
                    prev_feat = self.frame_transformation(
                        prev.detach() if self.config.detach_prev else prev)
                prev = self.decode(prev_feat, label_feat[t], z[t])
                frames.append(prev)
            pred = torch.stack(frames)                                    # (T-1, B, 3, H, W)

        pred, truth = pred.float(), img_tb[1:].float()
        mse = F.mse_loss(pred, truth)
        kl = kl_divergence(mu, logvar, self.config.kl_reduction)
        return (reconstruction_loss(pred, truth, self.config.loss, mse) + beta * kl,
                mse.detach(), kl.detach())

    # ----------------------------------------------------------------------- a video
    @torch.no_grad()
    def rollout(self, first_frame, labels, generator=None, z_scale=1.0, noise=None, chunk=64,
                progress=False):
        """Autoregressive prediction from the prior: first_frame (B, 3, H, W),
        labels (B, T, 3, H, W) -> frames (B, T, 3, H, W), frames[:, 0] = first_frame.

        z_t = z_scale * eps with eps ~ N(0, I) drawn from ``generator`` (z_scale 1:
        a sample of the prior; 0: its mean), unless ``noise`` (B, T-1, N_dim, H, W)
        gives z. All B sequences advance together, one batched step per frame;
        labels are encoded ``chunk`` time steps at a time (bounded memory). The
        networks run in eval mode: the BatchNorm normalises as --bn_rollout says
        (each frame on its own by default, so sequences never influence each
        other) and its running statistics are left untouched.
        """
        B, T = labels.shape[:2]
        out = torch.empty(B, T, *first_frame.shape[1:], device=first_frame.device)
        out[:, 0] = first_frame
        prev = first_frame
        z_shape = (B, self.config.N_dim, *first_frame.shape[-2:])
        steps = progress_bar(range(1, T), desc="rollout", leave=False) if progress else range(1, T)
        with inference_mode(self), self.autocast():
            for t in steps:
                if (t - 1) % chunk == 0:
                    # Time-major, so each step's features are one contiguous block.
                    label_feat = self.per_frame(
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
    def predict_from_truth(self, frames, labels, chunk=64):
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
        with inference_mode(self), self.autocast():
            for t in range(1, T, chunk):
                label = labels[:, t:t + chunk].transpose(0, 1)           # (n, B, 3, H, W)
                prev = frames[:, t - 1:t - 1 + len(label)].transpose(0, 1)
                z = torch.zeros(*label.shape[:2], self.config.N_dim, *label.shape[-2:],
                                device=frames.device)                    # (n, B, N, H, W)
                pred = self.per_frame(self.decode,
                                      self.per_frame(self.frame_transformation, prev),
                                      self.per_frame(self.label_transformation, label), z)
                out[:, t:t + len(label)] = pred.transpose(0, 1).float()
        return out

    @torch.no_grad()
    def val_one_step(self, img, label, generator=None):
        """Roll out a validation video (B, T, 3, H, W) from its first frame: the MSE
        loss, the PSNR of each predicted frame (T-1,) averaged over the batch after
        the log (right for any batch size), and the predicted frames."""
        pred = self.rollout(img[:, 0], label, generator=generator)
        loss = F.mse_loss(pred[:, 1:], img[:, 1:]).item()
        return loss, psnr_per_frame(pred[:, 1:], img[:, 1:]).mean(0).cpu(), pred

    def make_gif(self, images_list, img_name):
        """Frames (T, 3, H, W) in [0, 1] -> a looping GIF at ``img_name``."""
        return save_gif(img_name, torch.stack(list(images_list)))

    # ----------------------------------------------------------------------- the template's training methods
    @property
    def trainer(self):
        """The Training that carries out the training methods below."""
        return self._trainer if self._trainer is not None else self.start_training()

    def start_training(self, dist=None):
        """A fresh Training of this model (its optimizer), under ``dist`` (torchrun)."""
        self._trainer = Training(self, self.args, dist)
        return self._trainer

    def training_stage(self):
        """For each epoch left: training_one_step on every batch, validation,
        epoch=N.ckpt every --per_save epochs, then the schedules move on. False
        when SIGINT/SIGTERM stopped it (last.ckpt holds the partial epoch)."""
        return self.trainer.training_stage()

    def training_one_step(self, img, label, adapt_TeacherForcing):
        """One optimizer step on a batch of clips: (loss, mse, kl, grad_norm)."""
        return self.trainer.training_one_step(img, label, adapt_TeacherForcing)

    def optimizer_step(self):
        """Clip the gradients (done in training_one_step) and step at this step's LR."""
        return self.trainer.optimizer_step()

    def train_dataloader(self):
        return self.trainer.train_dataloader()

    def val_dataloader(self):
        return self.trainer.val_dataloader()

    def teacher_forcing_ratio_update(self):
        """The ratio of the current epoch: --tfr, less --tfr_d_step per epoch from --tfr_sde."""
        return self.trainer.teacher_forcing_ratio_update()

    def tqdm_bar(self, mode, pbar, loss, lr):
        return self.trainer.tqdm_bar(mode, pbar, loss, lr)

    def save(self, path):
        """A checkpoint of the run: weights, optimizer, schedules' position, flags."""
        return self.trainer.save(path)

    def load_checkpoint(self):
        """Resume from --ckpt_path: the weights and the training state."""
        ckpt = load_checkpoint(self.args.ckpt_path)
        check_dims(ckpt["state_dict"], self.config, self.args.ckpt_path)
        self.load_state_dict(ckpt["state_dict"])
        self.trainer.resume(ckpt, self.args.ckpt_path)

    def eval(self):
        """The template's validation: every val video of --DR rolled out from its
        first frame; (mean loss, PSNR per predicted frame, the first video).
        Unlike nn.Module.eval() it does not change the mode (use train(False))."""
        videos = self._trainer.datasets()[1] if self._trainer is not None else val_videos(self.args)
        return validate(self, videos, self.args.seed)


# --------------------------------------------------------------------------- checkpoint settings
ACTIVATION_PROBE_FRAMES = 48  # val frames rolled out per candidate output activation


def take_checkpoint_settings(args, ckpt, source, resume=False):
    """Fill every flag the user did not type from the checkpoint to test or resume.

    This project's checkpoints store their flags. Others (the course template's,
    a classmate's) store none: the model dims are read off the weights' shapes,
    the frame size keeps its flags (no weight depends on it), the output
    activation is measured, and a resume takes their lr and tfr.
    """
    recorded = isinstance(ckpt.get("args"), dict)
    if recorded:
        merge_checkpoint_args(args, ckpt["args"], overridable=set(vars(args)) - set(MODEL_FLAGS))
    else:
        merge_checkpoint_args(args, dims_of(ckpt["state_dict"]))
    validate_args(args)
    if resume:
        require_epochs_left(args, ckpt, source)
        if not recorded:
            continue_unrecorded_schedule(args, ckpt, source)
    if not recorded:
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


def continue_unrecorded_schedule(args, ckpt, source):
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
                     f"{epoch_learning_rate(args, epoch):.3g}{warmup}")
    if "tfr" not in typed and "tfr" in ckpt:
        stored = float(ckpt["tfr"])
        args.tfr = initial_tfr_reaching(args, stored, epoch - 1)
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
        psnr[candidate] = validate(model, video, args.seed)[1].mean().item()
    args.output_activation = max(psnr, key=psnr.get)
    other = "clamp" if args.output_activation == "sigmoid" else "sigmoid"
    print(f"note: '{source}' does not record its output activation; rolled out over the first "
          f"{frames} val frames, sigmoid gives {psnr['sigmoid']:.2f} dB and clamp "
          f"{psnr['clamp']:.2f} dB: using --output_activation {args.output_activation} (type "
          f"--output_activation {other} to override).", file=sys.stderr)
    return args.output_activation


# --------------------------------------------------------------------------- main
def apply_runtime_options(model, args):
    """--channels_last and --compile: how the networks run, not what they compute."""
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.compile:
        for name in ("frame_transformation", "label_transformation", "Gaussian_Predictor",
                     "Decoder_Fusion", "Generator"):
            getattr(model, name).compile(mode=args.compile_mode)
    return model


def build_model(args, device="cpu", state_dict=None, source=None):
    """VAE_Model(args) seeded by --seed on ``device``, with a checkpoint's weights."""
    torch.manual_seed(args.seed)
    model = VAE_Model(args).to(device)
    if state_dict is not None:
        check_dims(state_dict, model.config, source)
        model.load_state_dict(state_dict)
    return apply_runtime_options(model, args)


@exit_on_user_error
def main(args):
    """Train, or with --test validate a checkpoint once. Returns nothing on every rank:
    the results are the files in --save_root and the printed figures."""
    validate_args(args)
    if args.test and not args.ckpt_path:
        raise UserError("--test needs --ckpt_path: the checkpoint to validate.")
    ckpt = load_checkpoint(args.ckpt_path) if args.ckpt_path else None
    if ckpt is not None:
        take_checkpoint_settings(args, ckpt, args.ckpt_path, resume=not args.test)
    if "num_workers" in args.explicit_flags and args.data_cache == "memory":
        print("note: --num_workers is read only with --data_cache none; the memory cache "
              "decodes every PNG once, before training.", file=sys.stderr)
    dist = setup_distributed(args.device, args.gpu)
    with contextlib.ExitStack() as held:
        held.callback(dist.close)
        save_root = saveroot.claim(args, dist, held)
        model = build_model(args, dist.device, ckpt and ckpt["state_dict"], args.ckpt_path)
        if args.test:
            if dist.is_main:  # every rank would print the same numbers
                val_loss, frame_psnr, _ = model.eval()
                print(f"val loss {val_loss:.6f}, val PSNR {frame_psnr.mean():.3f} dB "
                      f"over {len(frame_psnr)} frames")
            return
        trainer = model.start_training(dist)
        if ckpt is not None:
            trainer.resume(ckpt, args.ckpt_path)
        train_set, _ = trainer.datasets()
        if dist.is_main:
            runlog.write_args(save_root, plain_args(args))
            runlog.truncate_metrics(save_root, trainer.current_epoch - 1)
            per_epoch = (f", {args.clips_per_epoch} drawn each epoch"
                         if 0 < args.clips_per_epoch < len(train_set) else "")
            print(f"training on {dist.device} x{dist.world_size}: {len(train_set)} clips of "
                  f"{args.train_vi_len} frames{per_epoch}, epochs {trainer.current_epoch}.."
                  f"{args.num_epoch - 1}")
        trainer.install_stop_handlers()
        if not model.training_stage():
            raise SystemExit(130 if trainer.stop_signal == "SIGINT" else 143)
        if dist.is_main:
            print(f"done: best val PSNR {trainer.best_val_psnr:.2f} dB; checkpoints in "
                  f"'{save_root}'")


if __name__ == "__main__":
    main(parse_args())
