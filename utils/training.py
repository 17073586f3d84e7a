"""The training mechanics: optimizer, scaler, the epoch loop, validation,
checkpoints and logging, in one place.

``Training(model, args)`` exists only while a model trains: a model built to
test never gets an optimizer. The model's maths (its loss, its rollout) are
the model's own; this file drives them. The template's training methods on
VAE_Model (``training_stage``, ``training_one_step``, ``save``, ...) call the
methods of the same names here.
"""
import functools
import math
import random
import signal
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from dataloader import Dataset_Dance
from utils import runlog
from utils.augment import AugmentedClips, ClipAugmentation
from utils.checkpoint import FORMAT_VERSION, atomic_save, is_template_checkpoint, plain_args
from utils.cli import progress_bar
from utils.errors import UserError
from utils.media import save_comparison_gif
from utils.plots import plot_run
from utils.runtime import Distributed, resolve_amp, seed_for
from utils.schedules import (epoch_learning_rate, kl_annealing, learning_rate,
                             teacher_forcing_ratio, template_lr)

CLIP_DRAW_SALT = 0x5EED  # the per-epoch clip draw has its own stream, apart from the shuffle


def non_finite_remedies(args, device_type):
    """The settings worth changing after a non-finite loss, for this run's flags."""
    remedies = [f"a lower --lr (this run: {args.lr:g})"]
    if resolve_amp(args.amp, device_type) != "off":
        remedies.append("--amp off")
    if args.kl_reduction == "sum":
        remedies.append("--kl_reduction mean")
    return ", ".join(remedies[:-1]) + " or " + remedies[-1] if len(remedies) > 1 else remedies[0]


class Training:
    """One training run of ``model``: its optimizer and the state that changes
    from step to step and from epoch to epoch.

    The loop calls the model's template methods (``training_one_step``,
    ``train_dataloader``, ``teacher_forcing_ratio_update``), which come back
    here: a subclass of VAE_Model that overrides one changes the training.
    """

    def __init__(self, model, args, dist=None):
        self.model, self.args = model, args
        self.dist = dist or Distributed(device=model.device)
        optimizer = torch.optim.AdamW if args.optim == "AdamW" else torch.optim.Adam
        self.optim = optimizer(model.parameters(), lr=args.lr)   # learning_rate() sets it per step
        self.scaler = torch.amp.GradScaler(enabled=args.amp == "fp16")
        self.current_epoch, self.global_step = 0, 0
        self.best_val_psnr = -math.inf
        self.beta_schedule = kl_annealing(args, current_epoch=0)
        self.tfr = teacher_forcing_ratio(args, 0)
        self.stop_signal = None
        self.train_set = self.val_set = None

    @property
    def is_main(self):
        return self.dist.is_main

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

    def teacher_forcing_ratio_update(self):
        self.tfr = teacher_forcing_ratio(self.args, self.current_epoch)

    def next_epoch(self):
        """The template's end of an epoch: the teacher-forcing ratio and the KL
        annealing move on (the LR is a function of the epoch, nothing to step)."""
        self.current_epoch += 1
        self.model.teacher_forcing_ratio_update()
        self.beta_schedule.update()

    # ----------------------------------------------------------------------- one step
    def training_one_step(self, img, label, adapt_TeacherForcing):
        """One optimizer step on a batch of clips; returns (loss, mse, kl, grad_norm)."""
        model, args = self.model, self.args
        beta = self.beta_schedule.get_beta()
        with model.autocast():
            loss, mse, kl = self.ddp_model(img, label, adapt_TeacherForcing, beta)
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = self.unscale_and_clip()
        values = torch.stack([loss.detach().float(), mse.float(), kl.float(),
                              grad_norm.float()]).tolist()
        if not all(math.isfinite(v) for v in values[:3]) or (
                not math.isfinite(values[3]) and args.amp != "fp16"):
            raise UserError(
                f"non-finite loss at epoch {self.current_epoch}, step {self.global_step} "
                f"(loss {values[0]}, MSE {values[1]}, KL {values[2]}, grad norm {values[3]}). "
                "Stopped before the update; the last good checkpoint is intact. "
                f"Try {non_finite_remedies(args, model.device.type)}.")
        self.optimizer_step()
        return values

    def unscale_and_clip(self):
        self.scaler.unscale_(self.optim)
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)

    def optimizer_step(self):
        """The step at this (epoch, step)'s learning rate; fp16 skips a step whose
        gradients overflowed."""
        for group in self.optim.param_groups:
            group["lr"] = learning_rate(self.args, self.current_epoch, self.global_step)
        self.scaler.step(self.optim)
        self.scaler.update()
        self.global_step += 1

    # ----------------------------------------------------------------------- data
    def datasets(self):
        """The training clips and validation videos --DR holds (read once)."""
        if self.train_set is None:
            args, cache = self.args, self.args.data_cache == "memory"
            frame_size = (args.frame_H, args.frame_W)
            self.val_set = val_videos(args)   # the smaller split first: a bad layout fails fast
            self.train_set = Dataset_Dance(args.DR, None, "train", args.train_vi_len,
                                           args.partial, frame_size=frame_size, cache=cache)
        return self.train_set, self.val_set

    def train_dataloader(self):
        """Shuffled clips of the current epoch, augmented as the --aug_* flags say;
        --fast_train uses the first fast_partial share, --clips_per_epoch draws
        afresh from the rest.

        Under DDP each rank gets a disjoint 1/world_size share of a per-epoch
        shuffle (padded to equal length so every rank takes the same steps).
        """
        args, epoch, clips = self.args, self.current_epoch, self.datasets()[0]
        augmentation = ClipAugmentation.of(args)
        # Wrapped before any Subset: a clip's transform follows its index in the set.
        dataset = (AugmentedClips(clips, augmentation, args.seed, epoch)
                   if augmentation.enabled else clips)
        if args.fast_train and epoch < args.fast_train_epoch:
            fast = int(len(clips.frame_files) * args.fast_partial) // args.train_vi_len
            dataset = Subset(dataset, range(min(max(fast, 1), len(dataset))))
        if 0 < args.clips_per_epoch < len(dataset):
            # A fresh draw each epoch shows every motion of the set within a short epoch;
            # seeded by the epoch alone, so every rank and a resumed run draw the same.
            draw = torch.Generator().manual_seed(seed_for(args.seed, epoch) ^ CLIP_DRAW_SALT)
            chosen = torch.randperm(len(dataset), generator=draw)[:args.clips_per_epoch]
            dataset = Subset(dataset, chosen.sort().values.tolist())
        if self.dist.enabled:
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
                            pin_memory=self.model.device.type == "cuda")
        if len(loader) == 0:
            # drop_last would silently train nothing and log zero losses.
            raise UserError(f"{len(dataset)} training clips over {self.dist.world_size} "
                            f"process(es) give no full batch of --batch_size {args.batch_size} "
                            "(per process); lower --batch_size or --train_vi_len, or use more "
                            "data.")
        return loader

    def val_dataloader(self):
        """The validation videos, one at a time, in order."""
        return DataLoader(self.datasets()[1], batch_size=1, shuffle=False)

    def teacher_forcing_draws(self, rng, steps):
        if self.args.tf_mode == "frame":
            return [rng.random() < self.tfr for _ in range(steps)]
        return rng.random() < self.tfr

    # ----------------------------------------------------------------------- epochs
    def train_one_epoch(self):
        """Every batch of the epoch; the epoch's mean losses, or None if stopped."""
        args, model, epoch = self.args, self.model, self.current_epoch
        torch.manual_seed(seed_for(args.seed, epoch, self.dist.rank))
        # The same teacher-forcing stream on every rank keeps DDP ranks in step.
        tf_rng = random.Random(seed_for(args.seed, epoch))
        loader = model.train_dataloader()
        model.train()
        totals, tf_on, batches = [0.0, 0.0, 0.0], 0.0, 0
        bar = progress_bar(loader, desc=f"train {epoch}", disable=not self.is_main, leave=False)
        for img, label in bar:
            img = img.to(model.device, non_blocking=True)
            label = label.to(model.device, non_blocking=True)
            forcing = self.teacher_forcing_draws(tf_rng, img.shape[1] - 1)
            loss, mse, kl, _ = model.training_one_step(img, label, forcing)
            totals = [a + b for a, b in zip(totals, (loss, mse, kl))]
            tf_on += forcing if isinstance(forcing, bool) else sum(forcing) / len(forcing)
            batches += 1
            self.tqdm_bar("train", bar, loss, self.optim.param_groups[0]["lr"], mse=mse, kl=kl)
            if self.stop_requested():
                return None
        means = self.dist.mean([v / max(batches, 1) for v in (*totals, tf_on)])
        return dict(zip(("train_loss", "train_mse", "train_kl", "tf_on_frac"), means))

    def tqdm_bar(self, mode, pbar, loss, lr, **more):
        pbar.set_postfix(loss=f"{loss:.4f}", **{k: f"{v:.4g}" for k, v in more.items()},
                         beta=f"{self.beta_schedule.get_beta():.2f}", tf=f"{self.tfr:.2f}",
                         lr=f"{lr:.2e}", refresh=False)

    def stop_requested(self):
        """True once SIGINT/SIGTERM arrived on any rank."""
        flag = self.stop_signal is not None
        if self.dist.enabled:
            flag = self.dist.mean([float(flag)])[0] > 0
        return flag

    def validate(self, dataset=None):
        """Roll out every validation video with the same z every epoch (comparable
        PSNR): (mean loss, PSNR per predicted frame, the first video's
        (prediction, truth, labels))."""
        dataset = self.datasets()[1] if dataset is None else dataset
        return validate(self.model, dataset, self.args.seed)

    def training_stage(self):
        """The epochs left: train, validate, log, save, then the schedules move on.
        Returns True once every epoch is done, False when a signal stopped the run
        (its partial epoch is saved)."""
        args, save_root = self.args, Path(self.args.save_root)
        while self.current_epoch < args.num_epoch:
            started, epoch = time.time(), self.current_epoch
            train = self.train_one_epoch()
            if train is None:
                self.save_interrupted()
                return False
            if self.is_main:
                val_loss, frame_psnr, (pred, truth, labels) = self.validate()
                val_psnr = frame_psnr.mean().item()
                improved = val_psnr > self.best_val_psnr
                self.best_val_psnr = max(self.best_val_psnr, val_psnr)
                lr = epoch_learning_rate(args, epoch)
                runlog.write_frame_psnr(save_root, epoch, frame_psnr.tolist())
                runlog.append_metrics(save_root, dict(
                    epoch=epoch, lr=lr, tfr=self.tfr, beta=self.beta_schedule.get_beta(),
                    **train, val_loss=val_loss, val_psnr=val_psnr,
                    best_val_psnr=self.best_val_psnr,
                    epoch_seconds=round(time.time() - started, 2)))
                self.save_epoch(improved)
                plot_run(save_root)
                if args.store_visualization:
                    save_comparison_gif(save_root / "visualization" / f"val_epoch{epoch}.gif",
                                        [pred, truth, labels])
                tqdm.write(f"epoch {epoch}: loss {train['train_loss']:.5f} (MSE "
                           f"{train['train_mse']:.5f}, KL {train['train_kl']:.4g}, beta "
                           f"{self.beta_schedule.get_beta():.2f}), tfr {self.tfr:.2f}, lr "
                           f"{lr:.2e} | val PSNR {val_psnr:.2f} dB (best "
                           f"{self.best_val_psnr:.2f})")
            self.dist.barrier()
            self.next_epoch()
        return True

    # ----------------------------------------------------------------------- checkpoints
    def checkpoint(self, last_epoch):
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
            print(f"\nstopped by {self.stop_signal} in epoch {self.current_epoch}; saved "
                  f"'{path}'.\nresume with: python Trainer.py --DR {self.args.DR} --save_root "
                  f"{self.args.save_root} --ckpt_path {path}", file=sys.stderr)

    def resume(self, ckpt, source):
        """Continue from a checkpoint whose weights the model holds: the epoch and,
        for this project's checkpoints, the optimizer, scaler, step and best PSNR.
        The LR needs no state of its own: learning_rate(args, epoch, step) gives it."""
        self.start_at(int(ckpt.get("last_epoch", -1)) + 1)
        if is_template_checkpoint(ckpt):
            print(f"note: '{source}' is a course-template checkpoint: weights loaded; it holds "
                  "no optimizer state, so the optimizer starts fresh.", file=sys.stderr)
            return
        self.optim.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and self.scaler.is_enabled():   # empty unless trained in fp16
            self.scaler.load_state_dict(ckpt["scaler"])
        self.global_step = int(ckpt.get("global_step", 0))
        self.best_val_psnr = float(ckpt.get("best_val_psnr", -math.inf))

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


def val_videos(args):
    """The validation videos of --DR, --val_vi_len frames each."""
    return Dataset_Dance(args.DR, None, "val", args.val_vi_len, 1.0,
                         frame_size=(args.frame_H, args.frame_W),
                         cache=args.data_cache == "memory")


@torch.no_grad()
def validate(model, dataset, seed):
    """Roll out every video of ``dataset`` with z drawn from a generator seeded by
    ``seed``: (mean loss, PSNR per predicted frame averaged over the videos, the
    first video's (prediction, truth, labels))."""
    generator = torch.Generator(model.device).manual_seed(seed)
    losses, psnrs, first_video = [], [], None
    for index in range(len(dataset)):
        img, label = (x[None].to(model.device) for x in dataset[index])
        loss, psnr, pred = model.val_one_step(img, label, generator)
        losses.append(loss)
        psnrs.append(psnr)
        if first_video is None:   # what --store_visualization shows
            first_video = (pred[0], img[0], label[0])
    return sum(losses) / len(losses), torch.stack(psnrs).mean(0), first_video
