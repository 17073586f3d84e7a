"""Recipes and the ablation table: each row changes what its description says, at any
budget, and the schedules keep their shape whatever the budget."""
import math

import pytest
import torch

import Tester
import Trainer
from benchmarks.benchmark_quality import drift, rollout_gap, summarise, table
from tools.recipes import ABLATIONS, CPU_EPOCHS, cpu_recipe, decayed_teacher_forcing, template
from utils import schedules
from utils.flags import default_args
from utils.metrics import REAL_TRAIN_FRAMES
from utils.submission import write_submission

BUDGETS = (2, 8, 12, 70)       # the shortest a Cyclical row allows, the CPU one, the template's


def trainer_args(*flags):
    return default_args(*flags)


def row_args(row, epochs):
    """A training row's run as benchmarks/benchmark_quality.py starts it: the CPU recipe,
    then the row's flags."""
    return trainer_args(*cpu_recipe(epochs), *ABLATIONS[row][1](epochs))


def changed(args, reference):
    """The settings (dests) in which two parsed command lines differ."""
    return {k for k, v in vars(args).items()
            if k != "explicit_flags" and v != getattr(reference, k)}


def ratios(args):
    return [schedules.teacher_forcing_ratio(args, e) for e in range(args.num_epoch)]


def betas(args):
    return [Trainer.kl_annealing(args, e).get_beta() for e in range(args.num_epoch)]


def peak_lrs(args):
    """The LR of each epoch, past any warm-up."""
    return [schedules.learning_rate(args, e, step=10**6) for e in range(args.num_epoch)]


# ---------------------------------------------------------------- what each row changes
def decays_to_zero_by_mid_budget(args, default):
    r = ratios(args)
    mid = math.ceil(args.num_epoch / 2)
    assert r[0] == 1.0 and all(a > b for a, b in zip(r[:mid], r[1:mid + 1])), r
    assert r[mid:] == pytest.approx([0.0] * (args.num_epoch - mid)), r
    assert set(ratios(default)) == {0.0}             # the default never forces


def per_frame_decay(args, default):
    decays_to_zero_by_mid_budget(args, default)
    assert args.tf_mode == "frame" and default.tf_mode == "batch"


def monotonic_rise(args, default):
    # one rise from 0, linear over the whole run (the recipe's --kl_anneal_ratio 1)
    n = args.num_epoch
    assert betas(args) == pytest.approx([e / n for e in range(n)])
    assert set(betas(default)) == {1.0}              # the default does not anneal


def cycles_of_two_epochs_rising_over_half(args, default):
    assert betas(args) == [0.0, 1.0] * (args.num_epoch // 2)


def same_frames_per_step_and_epoch(args, default):
    assert args.train_vi_len == 8
    assert args.batch_size * args.train_vi_len == default.batch_size * default.train_vi_len
    assert (args.clips_per_epoch * args.train_vi_len
            == default.clips_per_epoch * default.train_vi_len)


def warm_up_to_1e_3_over_100_steps(args, default):
    assert [schedules.learning_rate(args, 0, s) for s in (0, 49, 99, 100)] == pytest.approx(
        [1e-5, 5e-4, 1e-3, 1e-3])
    assert schedules.learning_rate(default, 0, 0) == 0.003   # the default: no warm-up


def twice_the_default_lr(args, default):
    assert peak_lrs(args) == pytest.approx([2 * lr for lr in peak_lrs(default)])
    assert schedules.learning_rate(args, 0, 0) == 0.006      # no warm-up either


def value(dest, expected):
    def check(args, default):
        assert getattr(args, dest) == expected != getattr(default, dest)
    return check


# Row -> (the dests it changes against the default recipe, how that shows).
TRAINING_ROWS = {
    "default": (set(), None),
    "tf decayed": ({"tfr", "tfr_sde", "tfr_d_step"}, decays_to_zero_by_mid_budget),
    "tf per frame": ({"tfr", "tfr_sde", "tfr_d_step", "tf_mode"}, per_frame_decay),
    "detach prev": ({"detach_prev"}, value("detach_prev", True)),
    "kl monotonic": ({"kl_anneal_type"}, monotonic_rise),
    "kl cyclical": ({"kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio"},
                    cycles_of_two_epochs_rising_over_half),
    "kl mean": ({"kl_reduction"}, value("kl_reduction", "mean")),
    "clip 8": ({"train_vi_len", "batch_size", "clips_per_epoch"}, same_frames_per_step_and_epoch),
    "clamp output": ({"output_activation"}, value("output_activation", "clamp")),
    "bn train frame": ({"bn_train"}, value("bn_train", "frame")),
    "lr 1e-3 warm-up": ({"lr", "warmup_steps"}, warm_up_to_1e_3_over_100_steps),
    "lr 6e-3": ({"lr"}, twice_the_default_lr),
    "mse": ({"loss"}, value("loss", "mse")),
    "l1": ({"loss"}, value("loss", "l1")),
    "aug flip": ({"aug_flip"}, value("aug_flip", 0.5)),
    "aug shift": ({"aug_shift"}, value("aug_shift", 0.25)),
    "aug scale": ({"aug_scale"}, value("aug_scale", [0.8, 2.0])),
    "aug color": ({"aug_color"}, value("aug_color", 0.1)),
}
# Rows that reuse the default run's checkpoint: Tester.py flags only.
TEST_ROWS = {
    "bn rollout running": {"bn_rollout": "running"},
    "z zero": {"z_scale": 0.0},
    "z half": {"z_scale": 0.5},
    "z mean of 4": {"num_samples": 4},
}


def test_every_row_of_the_table_is_checked_here():
    assert set(ABLATIONS) == {*TRAINING_ROWS, *TEST_ROWS, "template"}


@pytest.mark.parametrize("row", list(TRAINING_ROWS))
def test_a_training_row_changes_what_it_says_and_nothing_else_at_any_budget(row):
    dests, check = TRAINING_ROWS[row]
    assert ABLATIONS[row][2] == []                   # tested as the default is
    for epochs in BUDGETS:
        args, default = row_args(row, epochs), row_args("default", epochs)
        Trainer.validate_args(args)
        assert changed(args, default) == dests, epochs
        if check is not None:
            check(args, default)


def test_scheduled_sampling_is_the_decayed_ratio_drawn_per_frame():
    for epochs in BUDGETS:
        assert changed(row_args("tf per frame", epochs), row_args("tf decayed", epochs)) == \
            {"tf_mode"}


@pytest.mark.parametrize("row", list(TEST_ROWS))
def test_a_test_row_reuses_the_default_run_and_changes_one_tester_setting(row):
    _, train_flags, test_flags = ABLATIONS[row]
    assert train_flags is None
    parse = lambda *flags: Tester.get_tester_parser().parse_args(  # noqa: E731
        ["--DR", "d", "--save_root", "s", *flags])
    args, default = parse(*test_flags), parse()
    assert {k: getattr(args, k) for k in changed(args, default)} == TEST_ROWS[row]


def test_every_training_row_trains_on_as_many_frames_as_the_default():
    for row in TRAINING_ROWS:
        args = row_args(row, CPU_EPOCHS)
        assert args.clips_per_epoch * args.train_vi_len == 146 * 16, row


# ---------------------------------------------------------------- the recipes
def test_the_cpu_recipe_is_what_its_comment_says():
    args = trainer_args(*cpu_recipe())
    parser_default = trainer_args()
    assert [args.F_dim, args.L_dim, args.N_dim, args.D_out_dim] == [32, 16, 4, 48]
    assert args.train_vi_len == parser_default.train_vi_len == 16     # the template's clips
    assert args.num_epoch == CPU_EPOCHS == 12 and args.batch_size == 2
    clips_in_the_set = REAL_TRAIN_FRAMES // args.train_vi_len
    assert args.clips_per_epoch == clips_in_the_set // 10             # a tenth of the set
    assert args.num_epoch * args.clips_per_epoch >= clips_in_the_set  # 12 epochs cover it
    # lr 3e-3 from the first step: no warm-up (the parser's default has one)
    assert schedules.learning_rate(args, 0, 0) == 0.003
    assert schedules.learning_rate(parser_default, 0, 0) < parser_default.lr
    assert args.loss == "l1_mse" and parser_default.loss == "mse"
    # the budget only sets the number of epochs
    for epochs in BUDGETS:
        assert changed(trainer_args(*cpu_recipe(epochs)), args) == (
            set() if epochs == CPU_EPOCHS else {"num_epoch"})


def template_args(epochs):
    args = trainer_args(*cpu_recipe(epochs), *template(epochs))
    Trainer.validate_args(args)
    return args


def test_the_template_recipe_at_70_epochs_is_the_templates():
    args = template_args(70)
    assert {k: getattr(args, k) for k in (
        "optim", "lr", "lr_scheduler", "warmup_steps", "tfr", "tfr_sde", "tfr_d_step",
        "tf_mode", "kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio", "kl_reduction",
        "loss", "output_activation", "amp", "channels_last")} == dict(
        optim="Adam", lr=0.001, lr_scheduler="multistep", warmup_steps=0, tfr=1.0, tfr_sde=10,
        tfr_d_step=0.1, tf_mode="batch", kl_anneal_type="Cyclical", kl_anneal_cycle=10,
        kl_anneal_ratio=1.0, kl_reduction="sum", loss="mse", output_activation="none", amp="off",
        channels_last=False)
    # teacher forcing 1.0 through epoch 10, then 0.1 less per epoch: 0 from epoch 20
    assert ratios(args)[:22] == pytest.approx([1.0] * 11 + [0.9 - 0.1 * k for k in range(9)]
                                              + [0.0, 0.0])


@pytest.mark.parametrize("epochs", [2, 5, 8, 14, 21, 70])
def test_the_template_recipe_keeps_its_schedules_at_any_budget(epochs):
    args = template_args(epochs)
    # Teacher forcing 1.0 for the first seventh of the budget, then decaying to 0 by
    # two sevenths (one epoch at least each).
    seventh = max(1, epochs // 7)
    r = ratios(args)
    assert r[:epochs // 7 + 1] == [1.0] * (epochs // 7 + 1)
    assert all(a > b for a, b in zip(r[epochs // 7:], r[epochs // 7 + 1:2 * seventh])), r
    # 1 / seventh is rounded to 4 digits: at 21 epochs 1e-4 is left at epoch 6, for one epoch
    assert r[2 * seventh:] == pytest.approx([0.0] * (epochs - 2 * seventh), abs=1e-3), r
    # The template's MultiStepLR([2, 5], 0.1) from lr 1e-3, whatever the budget.
    assert peak_lrs(args) == pytest.approx(([1e-3] * 2 + [1e-4] * 3 + [1e-5] * 65)[:epochs])
    assert schedules.learning_rate(args, 0, 0) == 1e-3                  # no warm-up
    # Cyclical KL: 10 cycles where they fit at 2 epochs or more each, beta rising
    # from 0 over each whole cycle.
    b = betas(args)
    starts = [e for e, beta in enumerate(b) if beta == 0.0]
    assert starts[0] == 0 and len(starts) == min(10, epochs // 2), b
    for first, end in zip(starts, starts[1:] + [epochs]):
        assert end - first >= 2
        cycle = b[first:end]
        assert cycle == sorted(cycle) and len(set(cycle)) == len(cycle), b


def test_schedules_scaled_to_the_budget_have_the_same_shape_at_any_budget():
    """A budget five times longer stretches each schedule fivefold."""
    short, long = template_args(14), template_args(70)
    assert ratios(long)[::5] == pytest.approx(ratios(short))
    short, long = (trainer_args(*cpu_recipe(e), *decayed_teacher_forcing(e)) for e in (8, 40))
    assert ratios(long)[::5] == pytest.approx(ratios(short))


# ---------------------------------------------------------------- the table
def test_drift_compares_late_with_early_frames(tmp_path):
    truth = [torch.rand(630, 3, 32, 64, generator=torch.Generator().manual_seed(s))
             for s in range(5)]
    gt = write_submission(tmp_path / "gt.csv", truth)
    pred = [t.clone() for t in truth]
    for p in pred:
        p[501:601] = 1 - p[501:601]                          # late frames all wrong
    drop = drift(write_submission(tmp_path / "s.csv", pred), gt)
    assert sorted(drop) == [0, 1, 2, 3, 4]
    assert all(v < -20 for v in drop.values())


def test_the_table_gives_each_rows_mean_over_seeds_its_spread_and_the_baselines():
    seed = lambda score, gap: {"score": score, "val_psnr": score + 1, "drift": {"0": -1.0},  # noqa: E731
                               "rollout_gap": gap, "train_minutes": 10.0}
    rows = {"default": summarise("default", {0: seed(30.0, 0.2), 1: seed(31.0, 0.9),
                                             2: seed(32.0, 0.4)}),
            "detach prev": summarise("detach prev", {0: seed(33.0, 0.1),
                                                     1: {"failed": "error: non-finite loss"}}),
            "copy first frame": {"what": "copy", "seeds": [None], "scores": [18.0],
                                 "drift": {"0": -5.0}}}
    assert rows["default"]["rollout_gap"] == 0.9          # the worst seed
    text = table(rows, "header")
    assert "| default | the default recipe | 3 | 32.00 | 31.00 | 30.00-32.00 | +0.00 | +13.00 " \
           "| -0.90 dB | -1.00 dB | 10.0 |" in text
    assert "| detach prev | --detach_prev (seed 1: error: non-finite loss) | 1 | 34.00 | 33.00 " \
           "|  | +2.00 | +15.00 |" in text
    assert "Spread of the default over 3 seeds: 2.00 dB" in text


def test_rollout_gap_is_the_worst_window_lost_against_one_step():
    report = {"sequences": {"test 0": [(1, 100, 30.0, 30.5), (101, 200, 28.0, 29.9)],
                            "test 1": [(1, 100, 25.0, 24.0)]}}
    assert rollout_gap(report) == pytest.approx(1.9)


def test_a_finished_row_is_not_tested_again_until_its_checkpoint_changes(tmp_path, monkeypatch):
    """A test-only row ("z zero") tests the default run's checkpoint with its own
    Tester flags; its result is kept while the checkpoint is older, and made afresh
    from the new runs' outputs once it was retrained."""
    import json
    import os

    from benchmarks import benchmark_quality as bq
    from utils.runlog import append_metrics

    level = lambda v: torch.full((630, 3, 32, 64), v / 255)  # noqa: E731
    data = tmp_path / "data"
    data.mkdir()
    write_submission(data / "test_gt", [level(100)])          # a CSV is ground truth too
    prediction = level(110)                                    # MSE 100 on the 0..255 scale
    prediction[501:601] = 120 / 255                            # MSE 400 late: drift
    calls = []

    def fake_run(command, **kw):
        calls.append(command)
        where = lambda flag: command[command.index(flag) + 1]  # noqa: E731
        if command[0] == "Tester.py":
            write_submission(where("--save_root") / "submission.csv", [prediction])
        else:
            where("--json").write_text(json.dumps(
                {"sequences": {"test 0": [[1, 100, 28.0, 30.0], [101, 200, 27.0, 27.5]]}}))

    monkeypatch.setattr(bq, "run_script", fake_run)
    trained = tmp_path / "default" / "seed0"
    trained.mkdir(parents=True)
    ckpt = trained / "best.ckpt"
    ckpt.write_bytes(b"weights")
    for epoch, psnr in enumerate((20.0, 25.5, 24.0)):
        append_metrics(trained, {"epoch": epoch, "val_psnr": psnr, "epoch_seconds": 60})
    kept = tmp_path / "test" / "z_zero" / "seed0" / "result.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"score": 30.0}))
    os.utime(ckpt, (1, 1))                                   # the checkpoint is older
    assert bq.test("z zero", 0, data, tmp_path, ckpt="best") == {"score": 30.0} and not calls

    os.utime(ckpt, None)
    os.utime(kept, (1, 1))                                   # retrained since: test again
    result = bq.test("z zero", 0, data, tmp_path, ckpt="best")
    tester, diagnosis = calls
    assert tester[0] == "Tester.py" and tester[tester.index("--ckpt_path") + 1] == ckpt
    assert tester[-2:] == ["--z_scale", "0"]                 # the row's test flags
    assert diagnosis[0] == "benchmarks/rollout_diagnosis.py" and diagnosis[-2:] == ["--z_scale", "0"]
    psnr_100, psnr_400 = (10 * math.log10(255 ** 2 / mse) for mse in (100, 400))
    assert result["val_psnr"] == 25.5                        # the run's best epoch
    assert "train_minutes" not in result                     # a test-only row trains nothing
    assert result["score"] == pytest.approx((500 * psnr_100 + 100 * psnr_400) / 600)
    assert result["drift"] == {"0": pytest.approx(psnr_400 - psnr_100)}
    assert result["rollout_gap"] == pytest.approx(2.0)       # 30.0 - 28.0, the worst window
    assert json.loads(kept.read_text()) == result            # kept for the next time


def test_a_row_that_diverges_is_reported_with_its_error_not_lost(tmp_path):
    from benchmarks.benchmark_quality import failure
    log = tmp_path / "kl_mean.log"
    log.write_text("train 3:   0%|  | 0/73\r  error: non-finite loss at epoch 3, step 280 "
                   "(loss nan, MSE nan). Stopped before the update.\n")
    assert failure(log) == "error: non-finite loss at epoch 3, step 280"
    assert "see" in failure(tmp_path / "missing.log")
    ok = {"score": 30.0, "val_psnr": 31.0, "drift": {"0": -1.0}, "rollout_gap": 0.5}
    rows = {"default": summarise("default", {0: ok}),
            "kl mean": summarise("kl mean", {0: {"failed": failure(log)}})}
    text = table(rows, "header")
    assert "| kl mean | KL averaged over latent elements | 1 | | seed 0: error: non-finite " \
           "loss at epoch 3, step 280 |" in text
    assert "| default | the default recipe |" in text


def test_any_dataset_is_taken_as_it_is_and_only_the_synthetic_world_is_generated(tmp_path,
                                                                                 monkeypatch):
    from benchmarks import benchmark_quality as bq
    from tools.synthetic_dance import PARAMS_FILE
    calls = []
    monkeypatch.setattr(bq, "run_script", lambda command, **kw: calls.append(command))
    real = tmp_path / "real"
    (real / "test_gt" / "0").mkdir(parents=True)
    bq.ensure_dataset(real)                                  # real frames: never written into
    assert calls == []
    (real / PARAMS_FILE).write_text("{}")                    # the generator's own folder
    bq.ensure_dataset(real)
    assert calls == [["tools/synthetic_dance.py", "--out", real]]
    with pytest.raises(SystemExit, match="test_gt"):
        bq.ensure_dataset(tmp_path / "missing")              # generated (faked): no test_gt
    assert calls[-1] == ["tools/synthetic_dance.py", "--out", tmp_path / "missing"]
