"""The course template's loops, one frame at a time: the reference that the
project's batched paths are tested and timed against.

``TemplateModel`` holds the five networks under the template's attribute names,
with the template's plain ``nn.BatchNorm2d``, so any checkpoint of either
codebase loads into it strictly. ``naive_rollout`` runs it as the template's
validation and tester do: BatchNorm in training mode, one sequence and one frame
per call, so each frame is normalised with its own statistics.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import Trainer
from modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder


class TemplateModel(nn.Module):
    """The template's VAE_Model networks, eager, with an Adam optimizer."""

    def __init__(self, args):
        super().__init__()
        self.args = args
        self.frame_transformation = RGB_Encoder(3, args.F_dim)
        self.label_transformation = Label_Encoder(3, args.L_dim)
        self.Gaussian_Predictor = Gaussian_Predictor(args.F_dim + args.L_dim, args.N_dim)
        self.Decoder_Fusion = Decoder_Fusion(args.F_dim + args.L_dim + args.N_dim, args.D_out_dim)
        self.Generator = Generator(input_nc=args.D_out_dim, output_nc=3)
        self.optim = torch.optim.Adam(self.parameters(), lr=args.lr)


def naive_clip_loss(model, img, label, teacher_forcing, beta, noise=None):
    """The template's training loop: (loss, {"mse", "kl"}) of a clip, one time step at a time.

    img, label: (B, T, 3, H, W); teacher_forcing: a bool or one bool per predicted
    frame; noise: optional eps (B, T-1, N_dim, H, W). At each step t the previous
    frame (ground truth under teacher forcing, else the previous prediction), the
    pose p_t and the frame x_t for the posterior are all encoded afresh.
    """
    steps = img.shape[1] - 1
    forcing = [bool(teacher_forcing)] * steps if isinstance(teacher_forcing, bool) \
        else list(teacher_forcing)
    prev = img[:, 0]
    mses, kls = [], []
    for t in range(1, steps + 1):
        if forcing[t - 1]:
            prev = img[:, t - 1]
        elif model.args.detach_prev:
            prev = prev.detach()
        prev_feat = model.frame_transformation(prev)
        label_feat = model.label_transformation(label[:, t])
        frame_feat = model.frame_transformation(img[:, t])
        _, mu, logvar = model.Gaussian_Predictor(frame_feat, label_feat)
        logvar = logvar.clamp(-Trainer.LOGVAR_LIMIT, Trainer.LOGVAR_LIMIT)
        eps = torch.randn_like(mu) if noise is None else noise[:, t - 1]
        z = mu + eps * torch.exp(0.5 * logvar)
        prev = Trainer.apply_output_activation(
            model.Generator(model.Decoder_Fusion(prev_feat, label_feat, z)),
            model.args.output_activation)
        mses.append(F.mse_loss(prev, img[:, t]))
        kls.append(Trainer.kl_divergence(mu, logvar, model.args.kl_reduction))
    mse, kl = torch.stack(mses).mean(), torch.stack(kls).mean()
    return mse + beta * kl, {"mse": mse.detach(), "kl": kl.detach()}


def naive_training_step(model, img, label, teacher_forcing, beta):
    """naive_clip_loss, backward, gradient clipping and an optimizer step (fp32)."""
    loss, _ = naive_clip_loss(model, img, label, teacher_forcing, beta)
    model.optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), model.args.grad_clip)
    model.optim.step()
    return loss.item()


@torch.no_grad()
def naive_rollout(model, first_frame, labels, noise=None, generator=None):
    """The template's test loop: one sequence at a time, one frame at a time, the
    pose encoded at each step, BatchNorm in training mode (the template never
    calls ``nn.Module.eval``). first_frame (S, 3, H, W), labels (S, T, 3, H, W),
    noise: optional z (S, T-1, N_dim, H, W), else drawn from ``generator``.
    Returns (S, T, 3, H, W). Like the template, it updates the BatchNorm's
    running statistics of ``model``.
    """
    model.train()
    sequences = []
    for s in range(labels.shape[0]):
        prev = first_frame[s:s + 1]                                          # (1, 3, H, W)
        frames = [prev]
        for t in range(1, labels.shape[1]):
            if noise is None:
                z = torch.randn((1, model.args.N_dim, *prev.shape[-2:]), device=prev.device,
                                generator=generator)
            else:
                z = noise[s:s + 1, t - 1]
            prev_feat = model.frame_transformation(prev)
            label_feat = model.label_transformation(labels[s:s + 1, t])
            prev = Trainer.apply_output_activation(
                model.Generator(model.Decoder_Fusion(prev_feat, label_feat, z)),
                model.args.output_activation)
            frames.append(prev)
        sequences.append(torch.stack(frames, dim=1))                        # (1, T, 3, H, W)
    return torch.cat(sequences)
