"""Schedules, loss, PSNR, checkpoints and the Trainer CLI behave as users rely on."""
import csv
import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import Trainer
from conftest import TEMPLATE_DIMS, TINY, train_flags, write_template_checkpoint
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils import runtime
from utils import schedules
from utils.flags import default_args
from utils.training import non_finite_remedies
from utils.metrics import psnr_per_frame


def args_for(*flags):
    return default_args(*flags)


# --------------------------------------------------------------------------- schedules
def test_cyclical_beta_matches_the_issue_example():
    args = args_for("--num_epoch", "20", "--kl_anneal_type", "Cyclical", "--kl_anneal_cycle", "2",
                    "--kl_anneal_ratio", "0.5")
    betas = [Trainer.kl_annealing(args, e).get_beta() for e in range(20)]
    one_cycle = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert betas == pytest.approx(one_cycle + one_cycle)


def test_monotonic_and_none_beta():
    mono = args_for("--num_epoch", "10", "--kl_anneal_type", "Monotonic", "--kl_anneal_ratio", "0.5")
    assert [Trainer.kl_annealing(mono, e).get_beta() for e in range(10)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0])
    for spelling in ("None", "w/o", "none"):
        flat = args_for("--num_epoch", "5", "--kl_anneal_type", spelling)
        assert flat.kl_anneal_type == "None"
        assert [Trainer.kl_annealing(flat, e).get_beta() for e in range(5)] == [1.0] * 5


def test_cyclical_beta_with_partial_rise_restarts_each_cycle():
    """30 epochs, 3 cycles of 10, rising over 70% of each: 0, 1/7, ..., 1 by the 8th
    epoch of a cycle, then held; a resumed run asks for epoch k and gets the same."""
    args = args_for("--num_epoch", "30", "--kl_anneal_type", "Cyclical", "--kl_anneal_cycle", "3",
                    "--kl_anneal_ratio", "0.7")
    one_cycle = [i / 7 for i in range(8)] + [1.0, 1.0]
    betas = [Trainer.kl_annealing(args, current_epoch=e).get_beta() for e in range(30)]
    assert betas == pytest.approx(one_cycle * 3)


def test_unambiguous_abbreviations_are_accepted_and_count_as_typed():
    args = args_for("--ckpt", "a.ckpt", "--output_act=clamp", "--num_e", "5")
    assert (args.ckpt_path, args.output_activation, args.num_epoch) == ("a.ckpt", "clamp", 5)
    assert {"ckpt_path", "output_activation", "num_epoch"} <= set(args.explicit_flags)
    assert "lr" in args_for("--lr", "0.01").explicit_flags   # exact beats --lr_scheduler


def test_unknown_kl_type_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        args_for("--kl_anneal_type", "Sigmoid")
    assert "unknown KL annealing type 'Sigmoid'" in capsys.readouterr().err


def test_teacher_forcing_ratio_schedule():
    args = args_for("--tfr", "1.0", "--tfr_sde", "3", "--tfr_d_step", "0.3")
    ratios = [schedules.teacher_forcing_ratio(args, e) for e in range(8)]
    assert ratios == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.7, 0.4, 0.1, 0.0])


def test_lr_schedules():
    multistep = args_for("--lr_scheduler", "multistep")
    assert [schedules.lr_factor(multistep, e) for e in range(7)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    cosine = args_for("--lr_scheduler", "cosine", "--num_epoch", "4")
    assert [schedules.lr_factor(cosine, e) for e in range(4)] == pytest.approx(
        [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4)])


def test_warmup_ramps_the_lr_of_each_optimizer_step():
    args = args_for("--lr", "0.002", "--warmup_steps", "4", "--lr_scheduler", "constant")
    assert [schedules.learning_rate(args, 0, s) for s in range(6)] == pytest.approx(
        [0.0005, 0.001, 0.0015, 0.002, 0.002, 0.002])
    assert schedules.learning_rate(args_for("--warmup_steps", "0"), 0, 0) == pytest.approx(0.001)
    model = Trainer.VAE_Model(args_for(*TINY, "--lr", "0.002", "--warmup_steps", "4"))
    clip = torch.rand(1, 3, 3, 32, 64)
    for step in range(3):
        model.training_one_step(clip, clip, True)
        assert model.trainer.optim.param_groups[0]["lr"] == pytest.approx(0.0005 * (step + 1))


def test_stored_lr_lets_the_template_continue():
    """The template's Trainer resumes Adam at the checkpoint's lr: mid-run that is the
    rate this run would take next; after the last epoch, the peak (cosine ends at 0)."""
    model = Trainer.VAE_Model(args_for(*TINY, "--lr", "0.002", "--num_epoch", "4",
                                       "--warmup_steps", "0"))
    assert model.trainer.checkpoint(last_epoch=1)["lr"] == pytest.approx(0.002 * 0.5)
    assert model.trainer.checkpoint(last_epoch=3)["lr"] == pytest.approx(0.002)


# --------------------------------------------------------------------------- loss pieces
def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.randn(1, 2, 2, 2) * 0.7
    logvar = torch.randn(1, 2, 2, 2) * 0.5
    analytic = Trainer.kl_divergence(mu, logvar, "sum")
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)
    monte_carlo = log_ratio.flatten(1).sum(1).mean()
    assert analytic.item() == pytest.approx(monte_carlo.item(), rel=0.03)
    assert Trainer.kl_divergence(mu, logvar, "mean").item() == pytest.approx(analytic.item() / 8)
    assert Trainer.kl_divergence(torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)).item() == 0


@pytest.mark.parametrize("loss", ["mse", "l1", "l1_mse"])
def test_reconstruction_loss_is_the_one_named_by_the_flag(loss):
    """With z = 0 (the posterior starts at the prior) and teacher forcing, a clip's
    predictions are predict_from_truth()'s, so the loss is known in closed form."""
    model = Trainer.VAE_Model(args_for(*TINY, "--loss", loss, "--amp", "off")).train(False)
    torch.manual_seed(0)
    img, label = torch.rand(2, 4, 3, 8, 16), torch.rand(2, 4, 3, 8, 16)
    with torch.no_grad():
        total, terms = model(img, label, teacher_forcing=True, beta=0.0,
                             noise=torch.zeros(2, 3, 4, 8, 16))
        error = model.predict_from_truth(img, label)[:, 1:] - img[:, 1:]
    l1, l2 = error.abs().mean().item(), error.pow(2).mean().item()
    expected = {"mse": l2, "l1": l1, "l1_mse": 0.5 * (l1 + l2)}[loss]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    # every term is logged whatever the loss
    assert terms["mse"].item() == pytest.approx(l2, rel=1e-5)
    assert terms["l1"].item() == pytest.approx(l1, rel=1e-5)


def test_psnr_is_per_frame_for_batches():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1        # MSE 0.01  -> 20 dB
    pred[1] += 0.01       # MSE 1e-4 -> 40 dB
    psnr = psnr_per_frame(pred, target)
    assert psnr.tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    # the template's batch-mean MSE would give 10*log10(1/0.00505) = 22.97 dB
    assert psnr.mean().item() == pytest.approx(30.0, abs=1e-4)


def test_output_activation_decides_what_a_prediction_is():
    """--output_activation maps the generator's output onto the predicted frame on the
    path every prediction takes (the training loss, rollouts): clamp passes values in
    [0, 1] unchanged and clips the others, sigmoid maps logits, none leaves them."""
    logits = torch.linspace(-3, 4, 3 * 32 * 64).view(1, 3, 32, 64)
    inside = (logits >= 0) & (logits <= 1)
    clipped = torch.where(logits < 0, 0.0, torch.where(logits > 1, 1.0, logits))
    expected = {"clamp": clipped, "sigmoid": 1 / (1 + torch.exp(-logits)), "none": logits}
    assert torch.equal(clipped[inside], logits[inside]) and inside.sum() > 500
    img, label = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
    for activation, frame in expected.items():
        model = Trainer.VAE_Model(args_for(*TINY, "--amp", "off",
                                           "--output_activation", activation))
        # The generator outputs the same logits for every frame it makes.
        model.Generator.register_forward_hook(lambda m, i, out: logits.expand_as(out).clone())
        frames = model.rollout(img[:, 0], label)
        torch.testing.assert_close(frames[:, 1:], frame.expand(2, 3, -1, -1, -1),
                                   msg=activation)
        with torch.no_grad():
            mse = model(img, label, True, 1.0)[1]["mse"]
        torch.testing.assert_close(mse, F.mse_loss(frame.expand(2, 3, -1, -1, -1), img[:, 1:]),
                                   msg=activation)


def test_a_few_steps_on_one_batch_reduce_the_loss():
    """A learnable target (each frame is its pose image): the loss must fall."""
    torch.manual_seed(0)
    model = Trainer.VAE_Model(args_for(*TINY, "--lr", "0.001", "--warmup_steps", "0"))
    label = torch.rand(2, 4, 3, 32, 64)
    losses = [model.training_one_step(label.clone(), label, True)[0] for _ in range(30)]
    assert sum(losses[-5:]) / 5 < 0.9 * losses[0]


def test_non_finite_loss_stops_before_the_update(monkeypatch):
    model = Trainer.VAE_Model(args_for(*TINY))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    monkeypatch.setattr(Trainer, "kl_divergence", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(UserError, match="non-finite loss"):
        model.training_one_step(torch.rand(1, 3, 3, 32, 64), torch.rand(1, 3, 3, 32, 64), True)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_non_finite_loss_suggests_only_settings_the_run_can_still_change():
    suggest = lambda *flags: non_finite_remedies(args_for(*flags), "cpu")  # noqa: E731
    assert suggest("--lr", "0.003", "--amp", "bf16") == \
        "a lower --lr (this run: 0.003), --amp off or --kl_reduction mean"
    assert suggest("--amp", "off", "--kl_reduction", "mean") == "a lower --lr (this run: 0.001)"


def test_validation_runs_in_eval_mode(small_dataset):
    from dataloader import Dataset_Dance
    model = Trainer.VAE_Model(args_for(*TINY, "--val_vi_len", "10"))
    running_mean = model.label_transformation[2].running_mean.clone()
    val = Dataset_Dance(small_dataset, None, "val", 10)
    loss, psnr, _ = Trainer.validate(model, DataLoader(val), seed=0)
    assert torch.equal(model.label_transformation[2].running_mean, running_mean)
    assert psnr.shape == (9,) and model.training


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    model = Trainer.VAE_Model(args_for(*TINY, "--save_root", str(tmp_path)))
    model.training_one_step(torch.rand(1, 3, 3, 32, 64), torch.rand(1, 3, 3, 32, 64), True)
    model.trainer.current_epoch, model.trainer.best_val_psnr = 4, 21.5
    model.save(tmp_path / "a.ckpt")
    ckpt = load_checkpoint(tmp_path / "a.ckpt")
    assert {"state_dict", "optimizer", "scaler", "lr", "tfr", "last_epoch",
            "args", "best_val_psnr", "global_step"} <= set(ckpt)
    assert isinstance(ckpt["args"], dict) and ckpt["args"]["F_dim"] == 16
    assert "param_groups" in ckpt["optimizer"] and ckpt["optimizer"]["state"]
    clone = Trainer.VAE_Model(args_for(*TINY, "--ckpt_path", str(tmp_path / "a.ckpt")))
    clone.load_checkpoint()
    assert (clone.trainer.current_epoch, clone.trainer.best_val_psnr,
            clone.trainer.global_step) == (5, 21.5, 1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, clone.state_dict()[k])
    exp_avg = lambda m: m.trainer.optim.state_dict()["state"][0]["exp_avg"]  # noqa: E731
    assert torch.equal(exp_avg(model), exp_avg(clone))


def test_format_1_checkpoint_with_a_lambdalr_state_still_resumes(tmp_path):
    model = Trainer.VAE_Model(args_for(*TINY))
    ckpt = model.trainer.checkpoint(last_epoch=2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(model.trainer.optim, lambda epoch: 1.0)
    ckpt.update(format_version=1, scheduler=scheduler.state_dict(), global_step=7)
    torch.save(ckpt, tmp_path / "v1.ckpt")
    clone = Trainer.VAE_Model(args_for(*TINY, "--ckpt_path", str(tmp_path / "v1.ckpt")))
    clone.load_checkpoint()   # weights_only
    assert (clone.trainer.current_epoch, clone.trainer.global_step) == (3, 7)


def test_amp_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for native, expected in ((True, "bf16"), (False, "off")):
        runtime.resolve_amp.cache_clear()
        for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, check, lambda: native, raising=False)
        assert runtime.resolve_amp("auto", "cpu") == expected
        assert runtime.resolve_amp("off", "cpu") == "off"
        assert runtime.describe_precision("auto", "cpu").startswith(
            f"precision: {'bf16' if native else 'fp32'} (--amp auto")
    assert runtime.describe_precision("off", "cpu") == "precision: fp32 (--amp off)"
    runtime.resolve_amp.cache_clear()


def test_amp_auto_is_fp32_where_atens_kernels_run_at_avx2(monkeypatch):
    """A CPU without AVX-512, or ATEN_CPU_CAPABILITY=avx2 (its approximation): fp32,
    whatever the flags say."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, check, lambda: True, raising=False)
    runtime.resolve_amp.cache_clear()
    assert runtime.resolve_amp("auto", "cpu") == "off"
    line = runtime.describe_precision("auto", "cpu")   # what Trainer.py prints
    assert line.startswith("precision: fp32") and "no native bf16" in line
    runtime.resolve_amp.cache_clear()


def test_bf16_is_detected_from_the_cpu_flags_where_torch_has_no_check(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(runtime, "CPUINFO", cpuinfo)
    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16 amx_tile", True),
                            ("fpu avx512f avx512_vnni", False)):
        cpuinfo.write_text(f"processor : 0\nflags : {flags}\n")
        assert runtime.cpu_computes_bf16() is expected
    cpuinfo.unlink()
    assert runtime.cpu_computes_bf16() is False


def test_checkpoint_keeps_the_requested_precision(tmp_path):
    """--amp auto is stored as "auto", so a checkpoint trained in bf16 on one device
    runs in fp32 on a device without native bf16, and --amp off really is fp32."""
    args = args_for(*TINY, "--save_root", str(tmp_path))
    assert args.amp == "auto" and args.channels_last
    model = Trainer.build_model(args)
    model.save(tmp_path / "a.ckpt")
    assert load_checkpoint(tmp_path / "a.ckpt")["args"]["amp"] == "auto"
    assert runtime.resolve_amp("auto", "mps") == "off"
    for amp, enabled in (("off", False), ("bf16", True)):
        model.config.amp = amp
        with model.autocast():
            assert torch.is_autocast_enabled("cpu") == enabled

NETWORKS = ("frame_transformation", "label_transformation", "Gaussian_Predictor",
            "Decoder_Fusion", "Generator")


def test_compile_reaches_all_five_networks():
    """--compile compiles each network, and each runs through its module call, where a
    compiled module (and a hook) takes effect: a network whose layers were called
    directly would skip its compiled code silently."""
    compiled = Trainer.compile_networks(Trainer.VAE_Model(args_for(*TINY)),
                                             args_for(*TINY, "--compile"))
    assert all(getattr(compiled, n)._compiled_call_impl is not None for n in NETWORKS)
    modes = []
    model = Trainer.VAE_Model(args_for(*TINY))
    for name in NETWORKS:
        getattr(model, name).compile = lambda mode: modes.append(mode)
    Trainer.compile_networks(model, args_for(*TINY, "--compile", "--compile_mode",
                                                  "reduce-overhead"))
    assert modes == ["reduce-overhead"] * len(NETWORKS)   # CUDA graphs for the GPU check

    model = Trainer.VAE_Model(args_for(*TINY))
    called = set()
    for name in NETWORKS:
        getattr(model, name).register_forward_pre_hook(lambda *_, n=name: called.add(n))
    img, label = torch.rand(1, 4, 3, 32, 64), torch.rand(1, 4, 3, 32, 64)
    for forcing in (False, True):
        called.clear()
        model(img, label, forcing, 1.0)
        assert called == set(NETWORKS), forcing
    called.clear()
    model.rollout(img[:, 0], label)
    # The rollout samples z from the prior: the posterior's network must not run.
    assert called == set(NETWORKS) - {"Gaussian_Predictor"}


def test_template_checkpoint_loads_its_weights(tmp_path, capsys):
    source = Trainer.VAE_Model(args_for(*TINY))
    torch.save({"state_dict": source.state_dict(), "optimizer": source.state_dict(),
                "lr": 0.001, "tfr": 1.0, "last_epoch": 6}, tmp_path / "template.ckpt")
    model = Trainer.VAE_Model(args_for(*TINY, "--ckpt_path", str(tmp_path / "template.ckpt")))
    model.load_checkpoint()
    assert model.trainer.current_epoch == 7
    assert "no optimizer state" in capsys.readouterr().err
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in source.state_dict().items())


def test_checkpoint_of_other_dims_names_them(tmp_path):
    Trainer.VAE_Model(args_for(*TINY)).save(tmp_path / "small.ckpt")
    model = Trainer.VAE_Model(args_for("--F_dim", "32", "--L_dim", "16", "--N_dim", "4",
                                       "--D_out_dim", "24", "--ckpt_path",
                                       str(tmp_path / "small.ckpt")))
    with pytest.raises(UserError, match=r"--F_dim 32 \(checkpoint: 16\)"):
        model.load_checkpoint()


# --------------------------------------------------------------------------- the CLI
def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_continues_exactly(small_dataset, tmp_path, restore_signals):
    """A run resumed from its epoch-0 checkpoint repeats the straight run's epoch 1
    bit for bit, whole-clip augmentation included: the resume truncates
    metrics.csv to epoch 0 and appends to it."""
    common = ["--tfr", "0.5", "--tfr_sde", "0", "--tf_mode", "frame", "--per_save", "1",
              "--aug_flip", "0.5", "--aug_shift", "0.25", "--aug_scale", "0.8", "2",
              "--aug_color", "0.1"]
    straight = tmp_path / "straight"
    Trainer.main(Trainer.parse_args(train_flags(small_dataset, straight, "--num_epoch", "2",
                                                *common)))
    split = tmp_path / "split"
    shutil.copytree(straight, split)
    (split / "last.ckpt").unlink()
    (split / "epoch=1.ckpt").unlink()
    # resume from the epoch-0 checkpoint: flags come from the checkpoint
    Trainer.main(Trainer.parse_args(["--DR", str(small_dataset), "--save_root", str(split),
                                     "--ckpt_path", str(split / "epoch=0.ckpt")]))
    a, b = read_rows(straight / "metrics.csv"), read_rows(split / "metrics.csv")
    assert [r["epoch"] for r in b] == ["0", "1"]
    for column in ("lr", "tfr", "tf_on_frac", "beta", "train_loss", "train_kl", "val_psnr"):
        assert [r[column] for r in a] == [r[column] for r in b], column
    wa = load_checkpoint(straight / "last.ckpt")
    wb = load_checkpoint(split / "last.ckpt")
    assert wb["last_epoch"] == 1
    assert all(torch.equal(v, wb["state_dict"][k]) for k, v in wa["state_dict"].items())
    assert torch.equal(wa["optimizer"]["state"][0]["exp_avg_sq"], wb["optimizer"]["state"][0]["exp_avg_sq"])


def test_cli_end_to_end_leaves_everything_a_report_needs(trained_run, small_dataset, tmp_path,
                                                         capsys, restore_signals):
    """What Trainer.py (the session's run) leaves; then, in-process on a copy, a resume
    and --test."""
    assert "val PSNR" in trained_run.output
    for name in ("args.json", "metrics.csv", "val_psnr_epoch0.csv", "val_psnr_epoch1.csv",
                 "last.ckpt", "best.ckpt", "epoch=0.ckpt", "plots/loss.png",
                 "plots/teacher_forcing.png", "plots/val_psnr.png", "plots/psnr_per_frame.png",
                 "visualization/val_epoch1.gif"):
        assert (trained_run.folder / name).is_file(), name
    rows = read_rows(trained_run.folder / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"epoch", "lr", "tfr", "tf_on_frac", "beta", "train_loss", "train_mse", "train_kl",
            "val_loss", "val_psnr"} <= set(rows[0])
    assert len(read_rows(trained_run.folder / "val_psnr_epoch1.csv")) == 11
    ckpt = torch.load(trained_run.folder / "last.ckpt", weights_only=True)
    assert ckpt["last_epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["state_dict"])

    run = shutil.copytree(trained_run.folder, tmp_path / "run")
    Trainer.main(Trainer.parse_args(["--DR", str(small_dataset), "--save_root", str(run),
                                     "--ckpt_path", str(run / "last.ckpt"), "--num_epoch", "3"]))
    assert [r["epoch"] for r in read_rows(run / "metrics.csv")] == ["0", "1", "2"]
    capsys.readouterr()
    Trainer.main(Trainer.parse_args(["--DR", str(small_dataset), "--save_root", str(run),
                                     "--ckpt_path", str(run / "best.ckpt"), "--test"]))
    assert re.search(r"val PSNR \d+\.\d+ dB over 11 frames", capsys.readouterr().out)


def test_cli_rejects_bad_flags_without_traceback(tmp_path, capsys):
    """Each bad value stops the run with exit code 2 and a message naming the flag,
    before any data is read (--DR does not exist)."""
    cases = [(["--num_epoch", "0"], "--num_epoch"), (["--batch_size", "-1"], "--batch_size"),
             (["--train_vi_len", "0"], "--train_vi_len"), (["--tfr", "1.5"], "--tfr"),
             (["--kl_anneal_ratio", "0"], "--kl_anneal_ratio"),
             (["--kl_anneal_type", "Linear"], "kl_anneal_type"),
             (["--warmup_steps", "-1"], "--warmup_steps"),
             (["--clips_per_epoch", "-1"], "--clips_per_epoch"),
             (["--kl_anneal_type", "Cyclical", "--num_epoch", "4"], "at most 2 fit")]
    for flags, name in cases:
        with pytest.raises(SystemExit) as stop:
            Trainer.main(Trainer.parse_args(train_flags(tmp_path / "no_data", tmp_path / "r",
                                                        *flags)))
        assert stop.value.code == 2 and name in capsys.readouterr().err, flags
    assert not (tmp_path / "r").exists()


def test_template_checkpoint_resumes_with_its_dims_lr_and_tfr(small_dataset, tmp_path, capsys,
                                                              restore_signals):
    template = write_template_checkpoint(tmp_path / "template.ckpt",
                                         Trainer.VAE_Model(args_for(*TEMPLATE_DIMS)),
                                         lr=5e-4, tfr=0.7, last_epoch=1)
    run = tmp_path / "run"
    Trainer.main(Trainer.parse_args([
        "--DR", str(small_dataset), "--save_root", str(run), "--ckpt_path", str(template),
        "--num_epoch", "4", "--tfr_sde", "0", "--tfr_d_step", "0.1", "--val_vi_len", "12",
        "--device", "cpu"]))
    args = load_checkpoint(run / "last.ckpt")["args"]
    assert [args[k] for k in ("F_dim", "L_dim", "N_dim", "D_out_dim")] == [24, 8, 4, 16]
    rows = read_rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["2", "3"]
    # --lr is the checkpoint's lr, the peak of the cosine schedule over 4 epochs
    assert float(rows[0]["lr"]) == pytest.approx(5e-4 * 0.5)
    # the checkpoint's ratio 0.7 at epoch 1 keeps decaying by 0.1 per epoch
    assert [float(r["tfr"]) for r in rows] == pytest.approx([0.6, 0.5])
    err = capsys.readouterr().err
    assert "the checkpoint's lr" in err and "the checkpoint's tfr 0.7" in err
    assert "output activation" in err and "--output_activation" in err


def test_resume_with_nothing_left_to_train_says_so(tmp_path, capsys):
    model = Trainer.VAE_Model(args_for(*TINY, "--num_epoch", "2", "--lr_scheduler", "cosine"))
    model.trainer.current_epoch = 1
    model.save(tmp_path / "last.ckpt")
    with pytest.raises(SystemExit) as stop:
        Trainer.main(Trainer.parse_args(["--DR", "unused", "--save_root", str(tmp_path),
                                         "--ckpt_path", str(tmp_path / "last.ckpt")]))
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "already at the last epoch" in err and "--num_epoch 12" in err
