"""The training schedules, pure functions of (flags, epoch, step).

The learning rate of an optimizer step, the teacher-forcing ratio of an epoch
and the KL weight beta of an epoch have one source each, here. The template's
``kl_annealing`` class wraps the beta schedule with the template's methods.
"""
import math

from utils.errors import choice

# Adam's first steps move every weight by about lr whatever its gradient; a linear
# warm-up keeps them small (docs/quality.md).
WARMUP_STEPS = 100
MULTISTEP_MILESTONES = (2, 5)   # the template's MultiStepLR([2, 5], gamma=0.1)


LR_SCHEDULES = {
    "multistep": lambda args, epoch: 0.1 ** sum(epoch >= m for m in MULTISTEP_MILESTONES),
    "cosine": lambda args, epoch: 0.5 * (1.0 + math.cos(
        math.pi * min(epoch, args.num_epoch) / args.num_epoch)),
    "constant": lambda args, epoch: 1.0,
}


def lr_factor(args, epoch):
    """Multiplier of --lr at an epoch, by --lr_scheduler."""
    return choice(LR_SCHEDULES, args.lr_scheduler, "--lr_scheduler")(args, epoch)


def warmup_factor(args, step):
    """Multiplier of the LR at an optimizer step (counted over the whole run)."""
    return min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps > 0 else 1.0


def epoch_learning_rate(args, epoch):
    """The LR of an epoch's steps once the warm-up is over (what metrics.csv logs)."""
    return args.lr * lr_factor(args, epoch)


def learning_rate(args, epoch, step):
    """The LR of an optimizer step: set before every step."""
    return epoch_learning_rate(args, epoch) * warmup_factor(args, step)


def template_lr(args, last_epoch, step):
    """The checkpoint's ``lr`` field, for the course template's Trainer, which
    restores it and continues with Adam at that rate: the rate this run would
    take next or, once the schedule has ended (cosine ends at 0), the peak --lr."""
    if last_epoch + 1 >= args.num_epoch:
        return args.lr
    return learning_rate(args, last_epoch + 1, step)


def teacher_forcing_ratio(args, epoch):
    """tfr until epoch tfr_sde, then tfr_d_step less per epoch, never below 0."""
    return max(0.0, args.tfr - args.tfr_d_step * epoch_of_decay(args, epoch))


def epoch_of_decay(args, epoch):
    return max(0, epoch - args.tfr_sde)


def initial_tfr_reaching(args, ratio, epoch):
    """The --tfr from which teacher_forcing_ratio(args, epoch) is ``ratio``
    (capped at 1): continues a run that records only its current ratio."""
    return min(1.0, ratio + args.tfr_d_step * epoch_of_decay(args, epoch))


def frange_cycle_linear(n_iter, start=0.0, stop=1.0, n_cycle=1, ratio=1):
    """Fu et al. (2019): each of n_cycle periods rises linearly from start by
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


def kl_beta(args, epoch):
    """Beta of an epoch: Cyclical (--kl_anneal_cycle cycles), Monotonic (one
    cycle) or None (1 throughout); past the last epoch it holds its last value."""
    cycles = choice({"Cyclical": args.kl_anneal_cycle, "Monotonic": 1, "None": None},
                    args.kl_anneal_type, "--kl_anneal_type")
    if cycles is None:
        return 1.0
    betas = frange_cycle_linear(args.num_epoch, 0.0, 1.0, cycles, args.kl_anneal_ratio)
    return betas[min(epoch, len(betas) - 1)]


class kl_annealing:
    """The template's KL annealing object over kl_beta(): ``get_beta()`` is the
    current epoch's beta, ``update()`` moves to the next epoch.
    ``kl_annealing(args, current_epoch=k).get_beta()`` is what an uninterrupted
    run uses at epoch k."""

    def __init__(self, args, current_epoch=0):
        self.args, self.current_epoch = args, current_epoch

    def update(self):
        self.current_epoch += 1

    def get_beta(self):
        return kl_beta(self.args, self.current_epoch)

    frange_cycle_linear = staticmethod(frange_cycle_linear)
