"""What a checkpoint carries into a run: the one place that decides it.

Trainer.py's main(), the template's ``VAE_Model.load_checkpoint()`` and
Tester.py all take a checkpoint's settings through ``take_settings`` (by
Trainer.read_checkpoint), and a resume's state through ``resume_state``, so a
checkpoint means the same wherever it is loaded:

- This project's checkpoints store their flags. Every flag the user did not
  type is taken from them; a typed model flag that contradicts the weights is
  an error, and typed training flags win (a resumed run's new recipe).
- Others (the course template's, a classmate's) store none. The model dims
  are read off the weights' shapes; the frame size keeps its flags (no weight
  depends on it); the output activation, which the weights cannot tell, is
  measured; and a resume continues their ``lr`` and ``tfr``.
- Flags that say where and how to run (RUN_FLAGS) never come from a checkpoint.
"""
import math
import sys

from utils.checkpoint import dims_of, is_template_checkpoint
from utils.errors import UserError
from utils.flags import kl_type, validate_args
from utils.schedules import epoch_learning_rate, initial_tfr_reaching, teacher_forcing_ratio

# Flags that define the network: a checkpoint's values win unless contradicted.
MODEL_FLAGS = ("F_dim", "L_dim", "N_dim", "D_out_dim", "frame_H", "frame_W", "output_activation")
# Flags that say where and how to run, never taken from a checkpoint.
RUN_FLAGS = ("DR", "save_root", "ckpt_path", "device", "gpu", "num_workers", "data_cache",
             "cache_dir", "compile", "compile_mode", "test", "store_visualization", "overwrite",
             "explicit_flags")
ACTIVATIONS = ("sigmoid", "clamp")   # measured for a checkpoint that does not record its own


def typed_flags(args):
    """The flags the user typed (dests); none for args that did not come from a
    command line."""
    return set(getattr(args, "explicit_flags", ()))


def take_settings(args, ckpt, source, *, resume, probe=None):
    """Fill every flag the user did not type from ``ckpt`` (read from ``source``),
    for a run that resumes training from it or, without ``resume``, tests it.

    probe(args, state_dict, candidates) -> ({candidate: val PSNR}, frames rolled
    out), or None where there is no val video: measures the output activation
    of a checkpoint that does not record it (without a probe: clamp, the
    template's fix).
    """
    recorded = isinstance(ckpt.get("args"), dict)
    if recorded:
        merge_args(args, ckpt["args"], overridable=set(vars(args)) - set(MODEL_FLAGS))
    else:
        merge_args(args, dims_of(ckpt["state_dict"]))
    validate_args(args)
    if resume and not recorded:
        continue_unrecorded_schedule(args, ckpt, source)
    if not recorded:
        choose_output_activation(args, ckpt["state_dict"], source, probe)
    validate_args(args)
    return args


def merge_args(args, saved, overridable=()):
    """Take ``saved`` settings for every flag the user did not type.

    A typed model flag that contradicts the checkpoint is an error naming it;
    typed flags in ``overridable`` win.
    """
    typed = typed_flags(args)
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


def require_epochs_left(args, last, source):
    """A run resumed from a checkpoint that finished epoch ``last`` must have an
    epoch left to train."""
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
    epoch, typed, notes = int(ckpt.get("last_epoch", -1)) + 1, typed_flags(args), []
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


def choose_output_activation(args, state_dict, source, probe=None):
    """The output activation of a checkpoint that does not record it, by measurement.

    The template's generator has none (clamping is its fix), many students add a
    sigmoid, and the weights cannot tell. The probe rolls out the first frames
    of the val video with each candidate and the same z; the better PSNR wins.
    A typed --output_activation wins over both.
    """
    if "output_activation" in typed_flags(args):
        return args.output_activation
    measured = probe(args, state_dict, ACTIVATIONS) if probe is not None else None
    if measured is None:
        args.output_activation = "clamp"
        print(f"note: '{source}' does not record its output activation and there is no val "
              f"video under '{args.DR}' to measure it on: using --output_activation clamp (the "
              "template's generator has none); type --output_activation sigmoid if yours ends "
              "in a sigmoid.", file=sys.stderr)
        return args.output_activation
    psnr, frames = measured
    args.output_activation = max(psnr, key=psnr.get)
    other = "clamp" if args.output_activation == "sigmoid" else "sigmoid"
    print(f"note: '{source}' does not record its output activation; rolled out over the first "
          f"{frames} val frames, sigmoid gives {psnr['sigmoid']:.2f} dB and clamp "
          f"{psnr['clamp']:.2f} dB: using --output_activation {args.output_activation} (type "
          f"--output_activation {other} to override).", file=sys.stderr)
    return args.output_activation


def resume_state(ckpt, source):
    """What a resumed Training restores: the next epoch and, for this project's
    checkpoints, the optimizer and scaler states, the step and the best PSNR
    (Training.resume, which first requires an epoch left to train).
    The LR needs no state of its own: learning_rate(args, epoch, step) gives it."""
    state = {"epoch": int(ckpt.get("last_epoch", -1)) + 1, "source": str(source)}
    if is_template_checkpoint(ckpt):   # it holds no optimizer state
        return state
    return {**state, "optimizer": ckpt["optimizer"], "scaler": ckpt.get("scaler") or None,
            "global_step": int(ckpt.get("global_step", 0)),
            "best_val_psnr": float(ckpt.get("best_val_psnr", -math.inf))}
