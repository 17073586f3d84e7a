"""Recipes and the ablation table: every row is a valid run at any budget."""
import pytest
import torch

import Tester
import Trainer
from benchmarks.benchmark_quality import drift, rollout_gap, summarise, table
from tools.recipes import ABLATIONS, cpu_recipe, template
from utils.submission import write_submission
from utils import schedules
from utils.flags import default_args


@pytest.mark.parametrize("epochs", [2, 5, 8, 70])
@pytest.mark.parametrize("row", list(ABLATIONS))
def test_every_row_is_a_valid_run_at_any_budget(row, epochs):
    _, train_flags, test_flags = ABLATIONS[row]
    flags = [] if train_flags is None else train_flags(epochs)
    args = default_args(*cpu_recipe(epochs), *flags)
    Trainer.validate_args(args)
    Tester.get_tester_parser().parse_args(["--DR", "d", "--save_root", "s", *test_flags])


def test_template_recipe_keeps_the_templates_shape():
    args = default_args(*template(70))
    assert (args.tfr_sde, args.tfr_d_step, args.kl_anneal_cycle) == (10, 0.1, 10)
    assert (args.optim, args.lr_scheduler, args.output_activation) == ("Adam", "multistep", "none")
    short = default_args(*template(8))
    ratios = [schedules.teacher_forcing_ratio(short, e) for e in range(8)]
    assert ratios[0] == 1.0 and ratios[-1] == 0.0 and short.kl_anneal_cycle == 4


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


def test_every_training_row_trains_on_as_many_frames_as_the_default():
    def frames_per_epoch(flags):
        args = default_args(*cpu_recipe(12), *flags)
        return args.clips_per_epoch * args.train_vi_len
    default = frames_per_epoch([])
    assert default > 0
    for row, (_, train_flags, _) in ABLATIONS.items():
        if train_flags is not None:
            assert frames_per_epoch(train_flags(12)) == default, row


def test_a_finished_row_is_not_tested_again_until_its_checkpoint_changes(tmp_path, monkeypatch):
    import json
    import os

    from benchmarks import benchmark_quality as bq
    calls = []
    monkeypatch.setattr(bq, "run_script", lambda command, **kw: calls.append(command))
    (tmp_path / "default" / "seed0").mkdir(parents=True)
    ckpt = tmp_path / "default" / "seed0" / "best.ckpt"
    ckpt.write_bytes(b"weights")
    kept = tmp_path / "test" / "z_zero" / "seed0" / "result.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"score": 30.0}))
    os.utime(ckpt, (1, 1))                                   # the checkpoint is older
    assert bq.test("z zero", 0, tmp_path, tmp_path, ckpt="best") == {"score": 30.0} and not calls
    os.utime(ckpt, None)
    os.utime(kept, (1, 1))                                   # retrained since: test again
    with pytest.raises(ValueError):                          # the fake run wrote no metrics
        bq.test("z zero", 0, tmp_path, tmp_path, ckpt="best")
    assert calls and calls[0][0] == "Tester.py"


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
