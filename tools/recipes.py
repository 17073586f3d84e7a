"""Training recipes, as Trainer.py flags: one place for the quickstart, the quality
benchmark and its ablation table.

Every recipe is a function of the epoch budget where a schedule depends on it,
so that any budget gives a schedule of the same shape.
"""
# For 2 CPU cores (docs/quality.md): small dims; the template's 16-frame clips,
# which at the same frames per epoch score as well as 8-frame ones and lose less
# over the long rollout; epochs of 146 clips (a tenth of the training set) drawn
# afresh from all of it each time, so 12 short epochs see every motion; lr 3e-3
# without warm-up, at which the small model trains stably; the loss 0.5 L1 + 0.5
# MSE, which renders the real studio's lights and edges sharper than MSE alone.
CPU_DIMS = ["--F_dim", "32", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "48"]
CPU_EPOCHS = 12


def cpu_recipe(epochs=CPU_EPOCHS):
    return [*CPU_DIMS, "--batch_size", "2", "--train_vi_len", "16", "--num_epoch", str(epochs),
            "--clips_per_epoch", "146", "--lr", "0.003", "--warmup_steps", "0",
            "--loss", "l1_mse"]


CPU_RECIPE = cpu_recipe()
# On a GPU the template's dims train quickly; more epochs buy PSNR.
GPU_RECIPE = ["--num_epoch", "30", "--partial", "0.5"]
# --smoke: the same pipeline on a tiny set with tiny dims, in about a minute.
SMOKE_DATA = ["--train_frames", "192", "--val_frames", "40", "--size", "64x32"]
SMOKE_RECIPE = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24",
                "--num_epoch", "1", "--val_vi_len", "20"]


def template(epochs):
    """The course template's recipe in this project's flags. Its schedules are
    scaled to the budget: teacher forcing holds for the first seventh of it, then
    decays to 0 over the next seventh (epochs 10 and 20 of the template's 70),
    and the Cyclical KL keeps its 10 cycles where they fit, 2 epochs or more each."""
    seventh = max(1, epochs // 7)
    return ["--optim", "Adam", "--lr", "0.001", "--lr_scheduler", "multistep",
            "--tfr", "1.0", "--tfr_sde", str(epochs // 7), "--tfr_d_step",
            repr(round(1.0 / seventh, 4)), "--tf_mode", "batch",
            "--kl_anneal_type", "Cyclical", "--kl_anneal_cycle", str(max(1, min(10, epochs // 2))),
            "--kl_anneal_ratio", "1", "--kl_reduction", "sum", "--loss", "mse",
            "--output_activation", "none",
            "--warmup_steps", "0", "--amp", "off", "--no-channels_last"]


def decayed_teacher_forcing(epochs):
    """Teacher forcing 1.0 at first, none from mid-budget on."""
    return ["--tfr", "1.0", "--tfr_sde", "0", "--tfr_d_step", repr(min(1.0, 2.0 / epochs))]


# The ablation table: each row changes one thing against the default recipe.
# name -> (what changes, Trainer flags for a budget, Tester flags). Rows without
# Trainer flags reuse the default run's checkpoint and differ at test time only.
ABLATIONS = {
    "default": ("the default recipe", lambda e: [], []),
    "tf decayed": ("teacher forcing 1.0 decaying to 0 by mid-budget", decayed_teacher_forcing, []),
    "tf per frame": ("scheduled sampling: the decayed ratio drawn per frame",
                     lambda e: [*decayed_teacher_forcing(e), "--tf_mode", "frame"], []),
    "detach prev": ("--detach_prev", lambda e: ["--detach_prev"], []),
    "kl monotonic": ("KL annealing Monotonic", lambda e: ["--kl_anneal_type", "Monotonic"], []),
    "kl cyclical": ("KL annealing Cyclical, cycles of 2 epochs, rising over half",
                    lambda e: ["--kl_anneal_type", "Cyclical", "--kl_anneal_cycle",
                               str(max(1, e // 2)), "--kl_anneal_ratio", "0.5"], []),
    "kl mean": ("KL averaged over latent elements", lambda e: ["--kl_reduction", "mean"], []),
    "clip 8": ("clips of 8 frames, batch 4, 292 clips an epoch (same frames per step "
               "and per epoch)",
               lambda e: ["--train_vi_len", "8", "--batch_size", "4", "--clips_per_epoch",
                          "292"], []),
    "clamp output": ("output activation clamp", lambda e: ["--output_activation", "clamp"], []),
    "bn train frame": ("per-frame BatchNorm statistics in training too",
                       lambda e: ["--bn_train", "frame"], []),
    "lr 1e-3 warm-up": ("lr 1e-3 with a 100-step warm-up",
                        lambda e: ["--lr", "0.001", "--warmup_steps", "100"], []),
    "lr 6e-3": ("lr 6e-3, twice the default", lambda e: ["--lr", "0.006"], []),
    "mse": ("loss MSE alone (the template's)", lambda e: ["--loss", "mse"], []),
    "l1": ("loss L1 alone", lambda e: ["--loss", "l1"], []),
    "aug flip": ("half the clips mirrored", lambda e: ["--aug_flip", "0.5"], []),
    "aug shift": ("clips shifted by up to a quarter of the width",
                  lambda e: ["--aug_shift", "0.25"], []),
    "aug scale": ("clips zoomed by 0.8x to 2x (in: toward the dancer)",
                  lambda e: ["--aug_scale", "0.8", "2"], []),
    "aug color": ("brightness +-10%, each channel +-5% more",
                  lambda e: ["--aug_color", "0.1"], []),
    "bn rollout running": ("running BatchNorm statistics in rollouts", None,
                           ["--bn_rollout", "running"]),
    "z zero": ("z = 0 at test (the prior's mean)", None, ["--z_scale", "0"]),
    "z half": ("z = 0.5 eps at test", None, ["--z_scale", "0.5"]),
    "z mean of 4": ("frames averaged over 4 rollouts", None, ["--num_samples", "4"]),
    "template": ("the course template's recipe", template, []),
}
