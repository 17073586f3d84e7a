"""The label encoder's BatchNorm, with a choice of statistics for training and rollouts.

The course template never calls ``nn.Module.eval``: its validation and tester run
the BatchNorm in training mode on one sequence at a time, so every frame is
normalised with its own mean and variance over H x W. On real pose images (about
95% white, faint strokes) that is what works: the running variance of the
faint-stroke channels ends up tiny, features of an unseen sequence land far outside
it, and rollouts with the running statistics have collapsed below copying the
first frame. This layer keeps the template's per-frame numbers without its side
effects: frames never share statistics, whatever the batch, and a rollout never
touches the running statistics.
"""
import torch
import torch.nn as nn

TRAIN_STATS = ("batch", "frame")
ROLLOUT_STATS = ("frame", "running")


def per_frame_norm(x, weight, bias, eps):
    """BatchNorm of each frame on its own: (N, C, H, W), statistics over (H, W).

    Equal to ``nn.BatchNorm2d`` in training mode called on one frame at a time
    (biased variance). Statistics are taken in fp32 so that bf16 activations
    normalise like fp32 ones; the memory layout of ``x`` is kept.
    """
    x32 = x.float()
    var, mean = torch.var_mean(x32, dim=(2, 3), keepdim=True, correction=0)
    scale = weight.float()[:, None, None] * torch.rsqrt(var + eps)              # (N, C, 1, 1)
    return ((x32 - mean) * scale + bias.float()[:, None, None]).to(x.dtype)


class FrameBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the same parameters and buffers (checkpoints load both
    ways) whose statistics are chosen per mode:

    - training: ``"batch"`` (PyTorch's, over every frame of the batch) or
      ``"frame"`` (each frame its own, as at test time);
    - eval (rollouts): ``"frame"`` (the template's numbers) or ``"running"``
      (PyTorch's ``eval()``).

    The running statistics are updated from the batch in training only, in both
    training modes, so ``"running"`` stays available for comparison.
    """

    def __init__(self, num_features, train_stats="batch", rollout_stats="frame", **kwargs):
        super().__init__(num_features, **kwargs)
        if train_stats not in TRAIN_STATS or rollout_stats not in ROLLOUT_STATS:
            raise ValueError(f"train_stats must be one of {TRAIN_STATS} and rollout_stats one "
                             f"of {ROLLOUT_STATS}, got {train_stats!r}, {rollout_stats!r}")
        self.train_stats, self.rollout_stats = train_stats, rollout_stats

    def forward(self, x):
        if not self.training:
            if self.rollout_stats == "running":
                return super().forward(x)
            return per_frame_norm(x, self.weight, self.bias, self.eps)
        if self.train_stats == "batch":
            return super().forward(x)
        with torch.no_grad():   # keep the running statistics current for "running" rollouts
            super().forward(x.detach())
        return per_frame_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{super().extra_repr()}, train_stats={self.train_stats}, "
                f"rollout_stats={self.rollout_stats}")
