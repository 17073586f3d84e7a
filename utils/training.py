"""The training engine: the state of one training run and its epoch loop.

``Training(model, args, dist)`` exists only while a model trains (a model built
to test never gets an optimizer). It holds what changes from step to step and
epoch to epoch: the optimizer and gradient scaler, the epoch and step, the
teacher-forcing ratio, the KL annealing, the best PSNR, a stop request.

The loop calls the model only through the template's methods, as a Lightning
Trainer calls a module's hooks: ``train_dataloader``, ``training_one_step``
(which calls ``optimizer_step``), ``tqdm_bar``, ``eval`` (which calls
``val_dataloader`` and ``val_one_step``), ``save``, ``make_gif`` and
``teacher_forcing_ratio_update``. A VAE_Model subclass that overrides one
changes what runs (docs/architecture.md). The model's training methods work on
this state (its optimizer, scaler, epoch and step); the checkpoint's contents
and the stop on a non-finite loss are here.
"""
import functools
import gc
import math
import random
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from utils import runlog
from utils.checkpoint import FORMAT_VERSION, plain_args
from utils.cli import progress_bar
from utils.errors import UserError, choice
from utils.from_checkpoint import require_epochs_left
from utils.media import side_by_side
from utils.plots import plot_run
from utils.runtime import Distributed, require_amp_runs, resolve_amp, seed_for, to_device
from utils.schedules import epoch_learning_rate, kl_annealing, teacher_forcing_ratio, template_lr

OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
TF_MODES = {"batch": False, "frame": True}   # --tf_mode: a draw per frame?
# fp16: the scaler halves its scale on each step it skips, so this many in a row
# (from 65536 to below 1e-3) means gradients that no scale keeps finite.
MAX_SKIPPED_IN_A_ROW = 25


def non_finite_remedies(args, device_type):
    """The settings worth changing after a non-finite loss, for this run's flags."""
    remedies = [f"a lower --lr (this run: {args.lr:g})"]
    if resolve_amp(args.amp, device_type) != "off":
        remedies.append("--amp off")
    if args.kl_reduction == "sum":
        remedies.append("--kl_reduction mean")
    return ", ".join(remedies[:-1]) + " or " + remedies[-1] if len(remedies) > 1 else remedies[0]


def step_result(result):
    """A training_one_step's result as (loss, {term: value}): this project's
    (loss, terms), or the bare loss a template-style override returns."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        loss, terms = result
    else:
        loss, terms = result, {}
    as_float = lambda v: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)  # noqa: E731
    return as_float(loss), {name: as_float(v) for name, v in terms.items() if v is not None}


class Training:
    """One training run of ``model``: its optimizer and the state that changes
    from step to step and from epoch to epoch."""

    def __init__(self, model, args, dist=None):
        self.model, self.args = model, args
        self.dist = dist or Distributed(device=model.device)
        optimizer = choice(OPTIMIZERS, args.optim, "--optim")
        self.optim = optimizer(model.parameters(), lr=args.lr)   # learning_rate() sets it per step
        device_type = model.device.type
        require_amp_runs(args.amp, device_type)
        # Built for the device it runs on (a CUDA-only scaler disables itself on a CPU
        # or MPS with a warning, and fp16 would then train unscaled).
        self.scaler = torch.amp.GradScaler(
            device_type, enabled=resolve_amp(args.amp, device_type) == "fp16")
        self.skipped_steps, self.skipped_in_a_row = 0, 0   # fp16 steps the scaler skipped
        self.current_epoch, self.global_step = 0, 0
        # True while an epoch's steps run: a checkpoint written then (a stop) holds
        # the epoch before as the last one finished.
        self.mid_epoch = False
        self.best_val_psnr = -math.inf
        self.beta_schedule = kl_annealing(args, current_epoch=0)
        self.tfr = teacher_forcing_ratio(args, 0)
        self.last_terms = {}       # the latest step's named loss terms, for the progress bar
        self.stop_signal = None

    @property
    def is_main(self):
        return self.dist.is_main

    @property
    def beta(self):
        return self.beta_schedule.get_beta()

    @functools.cached_property
    def ddp_model(self):
        """The module that runs the forward pass: under torchrun a DDP wrapper, which
        averages the gradients across processes; else the model itself."""
        return self.dist.wrap(self.model)

    # ----------------------------------------------------------------------- state
    def start_at(self, epoch):
        """Every schedule at ``epoch``: what an uninterrupted run has there."""
        self.current_epoch = epoch
        self.beta_schedule = kl_annealing(self.args, current_epoch=epoch)
        self.tfr = teacher_forcing_ratio(self.args, epoch)

    def resume(self, state):
        """Continue from utils.from_checkpoint.resume_state(): the epoch and, where
        the checkpoint has them, the optimizer, scaler, step and best PSNR."""
        require_epochs_left(self.args, state["epoch"] - 1, state["source"])
        self.start_at(state["epoch"])
        if "optimizer" not in state:
            print(f"note: '{state['source']}' is a course-template checkpoint: weights loaded; "
                  "it holds no optimizer state, so the optimizer starts fresh.", file=sys.stderr)
            return
        self.optim.load_state_dict(state["optimizer"])
        if state["scaler"] and self.scaler.is_enabled():   # empty unless trained in fp16
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]
        self.best_val_psnr = state["best_val_psnr"]

    def next_epoch(self):
        """The template's end of an epoch: the teacher-forcing ratio and the KL
        annealing move on (the LR is a function of the epoch, nothing to step)."""
        self.current_epoch += 1
        self.model.teacher_forcing_ratio_update()
        self.beta_schedule.update()

    # ----------------------------------------------------------------------- a step
    def require_finite(self, values, grad_norm=None):
        """Stop the run before the update when a loss term (or, outside fp16, where
        the scaler skips such steps, the gradient norm) is not finite. Under torchrun
        the decision is every rank's: one rank's bad loss stops them all, where a
        rank that stopped alone would leave the others waiting in their collectives."""
        bad = not all(math.isfinite(v) for v in values.values()) or (
            grad_norm is not None and not math.isfinite(grad_norm)
            and not self.scaler.is_enabled())
        # Gradients are averaged over ranks, so only the loss can differ between them.
        if grad_norm is None and self.dist.enabled and self.dist.mean([float(bad)])[0] > 0 \
                and not bad:
            raise UserError(
                f"non-finite loss on another rank at epoch {self.current_epoch}, step "
                f"{self.global_step}; every rank stopped before the update (the message of "
                "the rank that saw it names the values). The last good checkpoint is intact. "
                f"Try {non_finite_remedies(self.args, self.model.device.type)}.")
        if bad:
            shown = [f"{name} {value}" for name, value in values.items()]
            if grad_norm is not None:
                shown.append(f"grad norm {grad_norm}")
            what = "loss" if values else "gradient norm"
            raise UserError(
                f"non-finite {what} at epoch {self.current_epoch}, step {self.global_step} "
                f"({', '.join(shown)}). Stopped before the update; the last good checkpoint is "
                f"intact. Try {non_finite_remedies(self.args, self.model.device.type)}.")

    def count_skip(self, skipped):
        """One optimizer step done: ``skipped`` if the fp16 scaler skipped it (its
        gradients overflowed); too many in a row stop the run."""
        self.skipped_steps += skipped
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise UserError(
                f"fp16: the gradients overflowed on {self.skipped_in_a_row} steps in a row "
                f"(epoch {self.current_epoch}, step {self.global_step}), whatever the scale; "
                "stopped, the last good checkpoint is intact. Try --amp off or bf16, or "
                f"{non_finite_remedies(self.args, self.model.device.type)}.")

    def teacher_forcing_draws(self, rng, steps):
        """Teacher forcing for one batch: one draw (--tf_mode batch) or one per
        predicted frame (frame, scheduled sampling)."""
        if choice(TF_MODES, self.args.tf_mode, "--tf_mode"):
            return [rng.random() < self.tfr for _ in range(steps)]
        return rng.random() < self.tfr

    # ----------------------------------------------------------------------- epochs
    def train_one_epoch(self):
        """Every batch of the epoch: the epoch's means ({'train_loss': ..., one
        'train_<term>' per loss term}, share of frames forced), or None if stopped."""
        args, model, epoch = self.args, self.model, self.current_epoch
        torch.manual_seed(seed_for(args.seed, epoch, self.dist.rank))
        # The same teacher-forcing stream on every rank keeps DDP ranks in step.
        tf_rng = random.Random(seed_for(args.seed, epoch))
        loader = model.train_dataloader()
        model.train()
        sums, counts, tf_on, batches = {}, {}, 0.0, 0
        skipped_before = self.skipped_steps
        bar = progress_bar(loader, desc=f"train {epoch}", disable=not self.is_main, leave=False)
        for img, label in bar:
            img, label = to_device(img, model.device), to_device(label, model.device)
            forcing = self.teacher_forcing_draws(tf_rng, img.shape[1] - 1)
            loss, self.last_terms = step_result(model.training_one_step(img, label, forcing))
            for name, value in {"loss": loss, **self.last_terms}.items():
                # fp16's scaler skips a step whose gradient norm overflowed: not a mean's part
                if math.isfinite(value):
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
            tf_on += forcing if isinstance(forcing, bool) else sum(forcing) / len(forcing)
            batches += 1
            model.tqdm_bar("train", bar, loss, self.optim.param_groups[0]["lr"])
            if self.stop_requested():
                return None
        means = self.dist.mean([sums[n] / counts[n] for n in sums] + [tf_on / max(batches, 1)])
        train = {f"train_{name}": mean for name, mean in zip(sums, means)}
        if self.scaler.is_enabled():   # every rank skips the same steps (one gradient)
            train["skipped_steps"] = self.skipped_steps - skipped_before
        return train, means[-1]

    def tqdm_bar(self, pbar, loss, lr):
        skipped = {"skipped": self.skipped_steps} if self.scaler.is_enabled() else {}
        pbar.set_postfix(loss=f"{loss:.4f}", **{k: f"{v:.4g}" for k, v in self.last_terms.items()},
                         beta=f"{self.beta:.2f}", tf=f"{self.tfr:.2f}", lr=f"{lr:.2e}",
                         **skipped, refresh=False)

    def stop_requested(self):
        """True once SIGINT/SIGTERM arrived on any rank."""
        flag = self.stop_signal is not None
        if self.dist.enabled:
            flag = self.dist.mean([float(flag)])[0] > 0
        return flag

    def training_stage(self):
        """The epochs left: train, validate, log, save, then the schedules move on.
        Returns True once every epoch is done, False when a signal stopped the run
        (its partial epoch is saved)."""
        args, model, save_root = self.args, self.model, Path(self.args.save_root)
        while self.current_epoch < args.num_epoch:
            started, epoch = time.time(), self.current_epoch
            self.mid_epoch = True
            trained = self.train_one_epoch()
            if trained is None:
                self.save_interrupted()
                return False
            self.mid_epoch = False
            if self.is_main:
                train, tf_on_frac = trained
                val_loss, frame_psnr, (pred, truth, labels) = model.eval()
                val_psnr = frame_psnr.mean().item()
                improved = val_psnr > self.best_val_psnr
                self.best_val_psnr = max(self.best_val_psnr, val_psnr)
                lr = epoch_learning_rate(args, epoch)
                runlog.write_frame_psnr(save_root, epoch, frame_psnr.tolist())
                runlog.append_metrics(save_root, dict(
                    epoch=epoch, lr=lr, tfr=self.tfr, tf_on_frac=tf_on_frac, beta=self.beta,
                    **train, val_loss=val_loss, val_psnr=val_psnr,
                    best_val_psnr=self.best_val_psnr,
                    epoch_seconds=round(time.time() - started, 2)))
                self.save_epoch(improved)
                plot_run(save_root)
                if args.store_visualization:
                    model.make_gif(side_by_side([pred, truth, labels]),
                                   save_root / "visualization" / f"val_epoch{epoch}.gif")
                terms = ", ".join(f"{k[6:]} {v:.4g}" for k, v in train.items() if k != "train_loss")
                tqdm.write(f"epoch {epoch}: loss {train['train_loss']:.5f} ({terms}, beta "
                           f"{self.beta:.2f}), tfr {self.tfr:.2f}, lr {lr:.2e} | val PSNR "
                           f"{val_psnr:.2f} dB (best {self.best_val_psnr:.2f})")
            self.dist.barrier()
            self.next_epoch()
        return True

    # ----------------------------------------------------------------------- checkpoints
    def checkpoint(self, last_epoch=None):
        """The run as plain values and state_dicts: a checkpoint's contents.
        last_epoch: the last epoch finished (default: the current one, or the one
        before while an epoch's steps run)."""
        if last_epoch is None:
            last_epoch = self.current_epoch - 1 if self.mid_epoch else self.current_epoch
        return {
            "format_version": FORMAT_VERSION,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optim.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lr": template_lr(self.args, last_epoch, self.global_step),
            "tfr": self.tfr,
            "last_epoch": last_epoch,
            "global_step": self.global_step,
            "best_val_psnr": self.best_val_psnr,
            "args": plain_args(self.args),
        }

    def save_epoch(self, improved):
        save_root = Path(self.args.save_root)
        self.model.save(save_root / "last.ckpt")
        if improved:
            self.model.save(save_root / "best.ckpt")
        if self.current_epoch % self.args.per_save == 0:
            self.model.save(save_root / f"epoch={self.current_epoch}.ckpt")

    def save_interrupted(self):
        """Keep the partial epoch's weights; a resume redoes this epoch."""
        path = Path(self.args.save_root) / "last.ckpt"
        if self.is_main:
            self.model.save(path)
            print(f"\nstopped by {self.stop_signal} in epoch {self.current_epoch}; saved "
                  f"'{path}'.\nresume with: python Trainer.py --DR {self.args.DR} --save_root "
                  f"{self.args.save_root} --ckpt_path {path}", file=sys.stderr)

    def close(self):
        """Release the DDP wrapper before the process group goes: a wrapper that
        outlives it is torn down at interpreter exit, where gloo's threads can
        abort the process ("terminate called without an active exception")."""
        if self.__dict__.pop("ddp_model", None) is not None:
            gc.collect()

    def install_stop_handlers(self):
        """SIGINT/SIGTERM finish the step, save last.ckpt and exit; a second one
        stops at once."""
        def request_stop(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name
            tqdm.write(f"{self.stop_signal} received: saving after this step...")

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
