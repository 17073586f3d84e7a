"""Train the pose-conditioned video-prediction VAE (Lab 4).

    python Trainer.py --DR <dataset> --save_root <dir> [--fast_train]

Reads top to bottom: the template's functions, the model (the five networks and
their maths: the loss of a clip, the rollout, prediction from the true previous
frame), the template's methods (every one a hook the training loop calls), the
output-activation probe for checkpoints that do not record it, main(). The
flags live in utils/flags.py, the schedules in utils/schedules.py, what a
checkpoint carries into a run in utils/from_checkpoint.py, and the training
loop's state and mechanics in utils/training.py; docs/architecture.md draws
the layers.
"""
import argparse
import contextlib
import functools
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from dataloader import Dataset_Dance, epoch_loader, list_images, training_clips, validation_videos
from modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder
from utils import from_checkpoint, runlog, saveroot
from utils.batchnorm import FrameBatchNorm2d
from utils.checkpoint import atomic_save, check_dims, dims_of, load_checkpoint, plain_args
from utils.cli import progress_bar
from utils.config import ModelConfig
from utils.errors import UserError, choice, exit_on_user_error
from utils.flags import parse_args, validate_args
from utils.media import save_gif
from utils.metrics import psnr_per_frame
from utils.runtime import (autocast, describe_precision, pins_memory, require_amp_runs,
                           setup_distributed)
from utils.schedules import kl_annealing, learning_rate, teacher_forcing_ratio
from utils.training import Training

__all__ = ["Generate_PSNR", "kl_criterion", "kl_annealing", "VAE_Model", "main"]

LOGVAR_LIMIT = 10.0  # |logvar| <= 10 keeps exp(logvar) finite in fp32 and bf16
# Frames per call of the batched networks, by device type: on a CPU, calls of 8
# frames keep the activations cache-sized (docs/speed.md). Device types not listed
# take the whole clip in one call.
FRAME_CHUNK = {"cpu": 8}
# --loss: the reconstruction loss from the named terms of forward().
RECONSTRUCTION = {"mse": lambda t: t["mse"],                        # the template's
                  "l1": lambda t: t["l1"],
                  "l1_mse": lambda t: 0.5 * (t["l1"] + t["mse"])}
OUTPUT_ACTIVATIONS = {"sigmoid": torch.sigmoid,
                      "clamp": lambda x: x.clamp(0.0, 1.0),
                      "none": lambda x: x}
KL_REDUCTIONS = {"sum": lambda per_element: per_element.sum(1),     # the template's
                 "mean": lambda per_element: per_element.mean(1)}


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
    reduce = choice(KL_REDUCTIONS, reduction, "--kl_reduction")
    # exp(v) - 1 - v via expm1: no cancellation when the posterior is near the prior.
    per_element = 0.5 * (mu.pow(2) + torch.expm1(logvar) - logvar)
    return reduce(per_element.flatten(1)).mean()


def kl_criterion(mu, logvar, batch_size):
    """The template's KL: summed over every latent value, divided by batch size."""
    return kl_divergence(mu, logvar, "sum") * mu.shape[0] / batch_size


def reconstruction_loss(terms, loss):
    """The reconstruction loss --loss names, from forward()'s terms: "mse" (the
    template's), "l1", or "l1_mse" = 0.5 L1 + 0.5 MSE."""
    return choice(RECONSTRUCTION, loss, "--loss")(terms)


def apply_output_activation(x, activation):
    """The generator's output -> [0, 1] by --output_activation ("none": as is)."""
    return choice(OUTPUT_ACTIVATIONS, activation, "--output_activation")(x)


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


@torch.no_grad()
def validate(model, videos, seed):
    """Roll out every video of ``videos`` (batches of one (1, T, 3, H, W) video)
    through model.val_one_step, z drawn from a generator seeded by ``seed`` (the
    same z every epoch, so epochs compare): (mean loss, PSNR per predicted frame
    averaged over the videos, the first video's (prediction, truth, labels))."""
    generator = torch.Generator(model.device).manual_seed(seed)
    losses, psnrs, first_video = [], [], None
    for img, label in videos:
        img, label = img.to(model.device), label.to(model.device)
        loss, psnr, pred = model.val_one_step(img, label, generator)
        losses.append(loss)
        psnrs.append(psnr)
        if first_video is None:   # what --store_visualization shows
            first_video = (pred[0], img[0], label[0])
    return sum(losses) / len(losses), torch.stack(psnrs).mean(0), first_video


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


NETWORK_NAMES = ("frame_transformation", "label_transformation", "Gaussian_Predictor",
                 "Decoder_Fusion", "Generator")


class VAE_Model(nn.Module):
    """The five networks of the template, under the template's names, and their maths.

    ``VAE_Model(args)`` takes the parsed flags or any object with some of
    ModelConfig's fields (the defaults fill the rest). The template's methods
    keep their names and meanings, and each is a hook: the training loop, main()
    and Tester.py call it on the model, so a subclass that overrides one changes
    what runs. The training methods are the model's own code, working on the
    state of a Training (utils/training.py: optimizer, epoch, step, schedules)
    built the first time one of them is called, so a model built to test never
    gets an optimizer.
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
        self.to(memory_format=self.memory_format)
        self.cuda_graphs = False   # compiled with CUDA graphs (compile_networks)
        self._trainer = None
        self._resume = None   # a loaded checkpoint's run state, for the Training to come

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def memory_format(self):
        """--channels_last: how the weights are laid out, not what they compute."""
        return torch.channels_last if self.config.channels_last else torch.contiguous_format

    def rollout_stance(self):
        """Rollouts run CUDA-graph-compiled networks eagerly (see CUDA_GRAPH_MODES)."""
        if self.cuda_graphs:
            return torch.compiler.set_stance("force_eager")
        return contextlib.nullcontext()

    def autocast(self):
        """The autocast context of --amp on this model's device (utils/runtime.autocast)."""
        return autocast(self.config.amp, self.device.type)

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
        """Loss of a batch of clips: (loss, {term: value}), the loss to minimise
        and its named terms, detached: "mse", "l1" (per pixel) and "kl" (per
        frame). img, label: (B, T, 3, H, W); teacher_forcing: a bool or one bool
        per predicted frame; beta: the KL weight; noise: optional eps
        (B, T-1, N_dim, H, W).

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
        terms = {"mse": F.mse_loss(pred, truth), "l1": F.l1_loss(pred, truth),
                 "kl": kl_divergence(mu, logvar, self.config.kl_reduction)}
        loss = reconstruction_loss(terms, self.config.loss) + beta * terms["kl"]
        return loss, {name: value.detach() for name, value in terms.items()}

    # ----------------------------------------------------------------------- a video
    @torch.no_grad()
    def rollout(self, first_frame, labels, generator=None, z_scale=1.0, noise=None, chunk=64,
                progress=False, ensemble=()):
        """Autoregressive prediction from the prior: first_frame (B, 3, H, W),
        labels (B, T, 3, H, W) -> frames (B, T, 3, H, W), frames[:, 0] = first_frame.

        z_t = z_scale * eps with eps ~ N(0, I) drawn from ``generator`` (z_scale 1:
        a sample of the prior; 0: its mean), unless ``noise`` (B, T-1, N_dim, H, W)
        gives z. All B sequences advance together, one batched step per frame;
        labels are encoded ``chunk`` time steps at a time (bounded memory). The
        networks run in eval mode: the BatchNorm normalises as --bn_rollout says
        (each frame on its own by default, so sequences never influence each
        other) and its running statistics are left untouched.

        ensemble: other models whose predictions of each frame are averaged with
        this one's and fed back as one prediction (each draws its own z).
        """
        models = [self, *ensemble]
        if noise is not None and ensemble:
            raise ValueError("noise gives the z of one model; an ensemble draws its own")
        B, T = labels.shape[:2]
        out = torch.empty(B, T, *first_frame.shape[1:], device=first_frame.device)
        out[:, 0] = first_frame
        prev = first_frame
        z_shapes = [(B, model.config.N_dim, *first_frame.shape[-2:]) for model in models]
        steps = progress_bar(range(1, T), desc="rollout", leave=False) if progress else range(1, T)
        with contextlib.ExitStack() as modes, self.autocast(), self.rollout_stance():
            for model in models:
                modes.enter_context(inference_mode(model))
            for t in steps:
                if (t - 1) % chunk == 0:
                    # Time-major, so each step's features are one contiguous block.
                    label_feats = [model.per_frame(
                        model.label_transformation,
                        labels[:, t:t + chunk].transpose(0, 1))           # (chunk, B, L, H, W)
                        for model in models]
                frames = []
                for model, label_feat, z_shape in zip(models, label_feats, z_shapes):
                    if noise is not None:
                        z = noise[:, t - 1]
                    elif z_scale == 0:
                        z = torch.zeros(z_shape, device=out.device)
                    else:
                        z = z_scale * torch.randn(z_shape, device=out.device, generator=generator)
                    frames.append(model.decode(model.frame_transformation(prev),
                                               label_feat[(t - 1) % chunk], z))
                prev = frames[0] if len(frames) == 1 else torch.stack(
                    [frame.float() for frame in frames]).mean(0)
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
        with inference_mode(self), self.autocast(), self.rollout_stance():
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

    # ----------------------------------------------------------------------- the template's methods
    # Each is a hook: the training loop (utils/training.py), main() and Tester.py
    # call it on the model, never a copy of their own, so that a subclass which
    # overrides one changes what runs. The training methods work on self.trainer.
    @property
    def trainer(self):
        """The Training of this model (optimizer, epoch, step, schedules), built by
        the first training method called."""
        return self._trainer if self._trainer is not None else self.start_training()

    def start_training(self, dist=None):
        """A fresh Training of this model under ``dist`` (torchrun), at the state of
        the checkpoint load_checkpoint() read, if any."""
        self._trainer = Training(self, self.args, dist)
        if self._resume is not None:
            self._trainer.resume(self._resume)
        return self._trainer

    @functools.cached_property
    def train_set(self):
        """The training clips of --DR, decoded once."""
        return training_clips(self.args)

    @functools.cached_property
    def val_set(self):
        """The validation videos of --DR, decoded once."""
        return validation_videos(self.args)

    def training_stage(self):
        """For each epoch left: training_one_step on every batch of
        train_dataloader(), validation by eval(), save() of last.ckpt, best.ckpt
        and epoch=N.ckpt every --per_save epochs, then teacher_forcing_ratio_update()
        and the KL annealing move on. False when SIGINT/SIGTERM stopped it
        (last.ckpt holds the partial epoch)."""
        return self.trainer.training_stage()

    def training_one_step(self, img, label, adapt_TeacherForcing):
        """One optimizer step on a batch of clips: (loss, {term: value}), the terms
        of forward() and the gradient norm. The run stops before the update when
        a term is not finite."""
        trainer = self.trainer
        if self.cuda_graphs:   # a new step: the graphs may reuse the last step's memory
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            loss, terms = trainer.ddp_model(img, label, adapt_TeacherForcing, trainer.beta)
        values = dict(zip(["loss", *terms], torch.stack(
            [loss.detach().float(), *(v.float() for v in terms.values())]).tolist()))
        trainer.require_finite(values)
        trainer.optim.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        grad_norm = self.optimizer_step()
        return values.pop("loss"), {**values, "grad_norm": grad_norm}

    def optimizer_step(self):
        """Clip the gradients to --grad_clip, then step at this (epoch, step)'s LR;
        returns the gradient norm before clipping. fp16 skips a step whose
        gradients overflowed (the scaler's own check); elsewhere a non-finite
        norm stops the run before the update."""
        trainer = self.trainer
        scaler = trainer.scaler
        scaler.unscale_(trainer.optim)
        grad_norm = float(nn.utils.clip_grad_norm_(self.parameters(), self.args.grad_clip))
        trainer.require_finite({}, grad_norm)
        for group in trainer.optim.param_groups:
            group["lr"] = learning_rate(self.args, trainer.current_epoch, trainer.global_step)
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(trainer.optim)
        scaler.update()
        # The scaler lowers its scale exactly when it skipped the step.
        trainer.count_skip(scale is not None and scaler.get_scale() < scale)
        trainer.global_step += 1
        return grad_norm

    def train_dataloader(self):
        """The current epoch's batches of training clips (dataloader.epoch_loader)."""
        trainer = self.trainer
        return epoch_loader(self.train_set, self.args, trainer.current_epoch, trainer.dist,
                            pin_memory=pins_memory(self.device))

    def val_dataloader(self):
        """The validation videos, one at a time, in order."""
        return DataLoader(self.val_set, batch_size=1, shuffle=False)

    def teacher_forcing_ratio_update(self):
        """The ratio of the current epoch: --tfr, less --tfr_d_step per epoch from --tfr_sde."""
        trainer = self.trainer
        trainer.tfr = teacher_forcing_ratio(self.args, trainer.current_epoch)
        return trainer.tfr

    def tqdm_bar(self, mode, pbar, loss, lr):
        """The progress bar's text: loss, every loss term, beta, teacher forcing, lr."""
        return self.trainer.tqdm_bar(pbar, loss, lr)

    def save(self, path):
        """A checkpoint of the run, written atomically: weights, optimizer, the
        schedules' position, flags."""
        atomic_save(self.trainer.checkpoint(), path)

    def load_checkpoint(self, ckpt=None, resume=None):
        """Load --ckpt_path: its settings (utils/from_checkpoint.py: dims, output
        activation, a resumed run's flags), its weights and, to resume training
        (``resume``, by default unless --test), its run state, which the Training
        takes when it starts. ``ckpt``: the checkpoint, already read and its
        settings taken (main() does so first, to build the model at its dims)."""
        resume = not getattr(self.args, "test", False) if resume is None else resume
        if ckpt is None:
            ckpt = read_checkpoint(self.args, resume)
            self.adopt_settings()
        # The networks' own dims: a model is built before a checkpoint is read.
        check_dims(ckpt["state_dict"], argparse.Namespace(**dims_of(self.state_dict())),
                   self.args.ckpt_path)
        self.load_state_dict(ckpt["state_dict"])
        if resume:
            self._resume = from_checkpoint.resume_state(ckpt, self.args.ckpt_path)
            if self._trainer is not None:
                self._trainer.resume(self._resume)

    def adopt_settings(self):
        """Take this model's settings from self.args again, after a checkpoint's
        were taken into them; its networks were built at their dims already
        (load_checkpoint names any that differ)."""
        self.config = ModelConfig.of(self.args)
        self.to(memory_format=self.memory_format)
        for layer in self.modules():
            if isinstance(layer, FrameBatchNorm2d):
                layer.train_stats = self.config.bn_train
                layer.rollout_stats = self.config.bn_rollout

    def eval(self):
        """The template's validation: every val video of --DR rolled out from its
        first frame by val_one_step; (mean loss, PSNR per predicted frame, the
        first video). Unlike nn.Module.eval() it does not change the mode (use
        train(False))."""
        return validate(self, self.val_dataloader(), self.args.seed)


# --------------------------------------------------------------------------- checkpoints
ACTIVATION_PROBE_FRAMES = 48  # val frames rolled out per candidate output activation


def probe_output_activation(args, state_dict, candidates):
    """For a checkpoint that does not record its output activation: the val PSNR
    of each candidate over the first frames of the val video, with the same z,
    on the CPU (so that Trainer.py and Tester.py see the same figures and make
    the same choice). ({candidate: PSNR}, frames), or None without a val video."""
    val = Path(args.DR or "") / "val" / "val_img"
    frames = min(ACTIVATION_PROBE_FRAMES, len(list_images(val))) if args.DR and val.is_dir() else 0
    if frames < 2:
        return None
    video = DataLoader(Subset(Dataset_Dance(args.DR, None, "val", frames, cache="none",
                                            frame_size=(args.frame_H, args.frame_W)), [0]))
    psnr = {}
    for candidate in candidates:
        model = VAE_Model(argparse.Namespace(**{**vars(args), "output_activation": candidate}))
        model.load_state_dict(state_dict)
        psnr[candidate] = validate(model, video, args.seed)[1].mean().item()
    return psnr, frames


def read_checkpoint(args, resume):
    """--ckpt_path, read, and its settings taken into ``args`` for a run that
    resumes training from it or (without ``resume``) tests it."""
    ckpt = load_checkpoint(args.ckpt_path)
    from_checkpoint.take_settings(args, ckpt, args.ckpt_path, resume=resume,
                                  probe=probe_output_activation)
    return ckpt


# --------------------------------------------------------------------------- main
def build_model(args, device="cpu", ckpt=None):
    """VAE_Model(args) seeded by --seed on ``device``, loaded from ``ckpt`` (read
    by read_checkpoint) if given, compiled if --compile says so."""
    torch.manual_seed(args.seed)
    model = VAE_Model(args).to(device)
    if ckpt is not None:
        model.load_checkpoint(ckpt)
    return compile_networks(model, args)


# torch.compile modes that capture CUDA graphs. A rollout keeps a network's outputs
# across later calls (label features for 64 frames, each frame fed back), which
# a CUDA graph's replay overwrites: rollouts run those networks eagerly.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# Compiles of one network that Dynamo allows. Training, its sequential decoder
# (batch B), the val rollout (1 video) and the test rollout (5 sequences) are
# graphs of their own by grad mode, BatchNorm mode and shape: more than Dynamo's
# default of 8, past which a network runs uncompiled with only a warning.
RECOMPILE_LIMIT = 32
TRITON_CAPABILITY = (7, 0)   # Triton, inductor's GPU compiler, needs Volta or newer


def compile_networks(model, args):
    """--compile: torch.compile each network (how they run, not what they compute)."""
    if not args.compile:
        return model
    device = model.device
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < TRITON_CAPABILITY:
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(f"--compile: this GPU ({torch.cuda.get_device_name(device)}) has compute "
                        f"capability {major}.{minor}; torch.compile's GPU compiler (Triton) "
                        "needs 7.0 or newer. Train without --compile.")
    if args.compile_mode in CUDA_GRAPH_MODES and not hasattr(torch.compiler, "set_stance"):
        raise UserError(f"--compile_mode {args.compile_mode} captures CUDA graphs, which "
                        "rollouts must run without (torch.compiler.set_stance, torch 2.6 and "
                        f"newer; this is {torch.__version__}); use --compile_mode default.")
    for option in ("recompile_limit", "cache_size_limit"):   # the name since torch 2.6, before
        if hasattr(torch._dynamo.config, option):
            setattr(torch._dynamo.config, option,
                    max(getattr(torch._dynamo.config, option), RECOMPILE_LIMIT))
    for name in NETWORK_NAMES:
        getattr(model, name).compile(mode=args.compile_mode)
    model.cuda_graphs = args.compile_mode in CUDA_GRAPH_MODES
    return model


@exit_on_user_error
def main(args):
    """Train, or with --test validate a checkpoint once. Returns nothing on every rank:
    the results are the files in --save_root and the printed figures."""
    validate_args(args)
    if args.test and not args.ckpt_path:
        raise UserError("--test needs --ckpt_path: the checkpoint to validate.")
    ckpt = read_checkpoint(args, resume=not args.test) if args.ckpt_path else None
    if ckpt is not None and not args.test:   # before any file is touched
        state = from_checkpoint.resume_state(ckpt, args.ckpt_path)
        from_checkpoint.require_epochs_left(args, state["epoch"] - 1, state["source"])
    if "num_workers" in args.explicit_flags and args.data_cache != "none":
        print(f"note: --num_workers is read only with --data_cache none; the {args.data_cache} "
              "cache decodes every PNG once, before training.", file=sys.stderr)
    dist = setup_distributed(args.device, args.gpu)
    with contextlib.ExitStack() as held:
        held.callback(dist.close)
        save_root = saveroot.claim(args, dist, held)
        model = build_model(args, dist.device, ckpt)
        if args.test:
            if dist.is_main:  # every rank would print the same numbers
                val_loss, frame_psnr, _ = model.eval()
                print(f"val loss {val_loss:.6f}, val PSNR {frame_psnr.mean():.3f} dB "
                      f"over {len(frame_psnr)} frames")
            return
        trainer = model.start_training(dist)
        held.callback(trainer.close)   # before the process group closes
        model.val_set   # the smaller split first: a bad layout fails fast
        if dist.is_main:
            runlog.write_args(save_root, plain_args(args))
            runlog.truncate_metrics(save_root, trainer.current_epoch - 1)
            clips = len(model.train_set)
            per_epoch = (f", {args.clips_per_epoch} drawn each epoch"
                         if 0 < args.clips_per_epoch < clips else "")
            print(f"training on {dist.device} x{dist.world_size}: {clips} clips of "
                  f"{args.train_vi_len} frames{per_epoch}, epochs {trainer.current_epoch}.."
                  f"{args.num_epoch - 1}")
            print(describe_precision(args.amp, dist.device.type))
        trainer.install_stop_handlers()
        if not model.training_stage():
            raise SystemExit(130 if trainer.stop_signal == "SIGINT" else 143)
        if dist.is_main:
            print(f"done: best val PSNR {trainer.best_val_psnr:.2f} dB; checkpoints in "
                  f"'{save_root}'")


if __name__ == "__main__":
    main(parse_args())
