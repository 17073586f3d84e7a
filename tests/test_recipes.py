"""Recipes and the ablation table: every row is a valid run at any budget."""
import pytest
import torch

import Tester
import Trainer
from tools.benchmark_quality import drift, table
from tools.recipes import ABLATIONS, cpu_recipe, template
from utils.submission import write_submission


@pytest.mark.parametrize("epochs", [2, 5, 8, 70])
@pytest.mark.parametrize("row", list(ABLATIONS))
def test_every_row_is_a_valid_run_at_any_budget(row, epochs):
    _, train_flags, test_flags = ABLATIONS[row]
    flags = [] if train_flags is None else train_flags(epochs)
    args = Trainer.parse_args(["--DR", "d", "--save_root", "s", *cpu_recipe(epochs), *flags])
    Trainer.validate_args(args)
    Tester.get_tester_parser().parse_args(["--DR", "d", "--save_root", "s", *test_flags])


def test_template_recipe_keeps_the_templates_shape():
    args = Trainer.parse_args(["--DR", "d", "--save_root", "s", *template(70)])
    assert (args.tfr_sde, args.tfr_d_step, args.kl_anneal_cycle) == (10, 0.1, 10)
    assert (args.optim, args.lr_scheduler, args.output_activation) == ("Adam", "multistep", "none")
    short = Trainer.parse_args(["--DR", "d", "--save_root", "s", *template(8)])
    ratios = [Trainer.teacher_forcing_ratio(short, e) for e in range(8)]
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
    result = {"what": "x", "score": 30.0, "drift": drop}
    text = table({"default": result, "seed 1": {**result, "score": 30.4}}, "header")
    assert "| default | x |" in text and "0.40 dB" in text


def test_every_training_row_trains_on_as_many_frames_as_the_default():
    def frames_per_epoch(flags):
        args = Trainer.parse_args(["--DR", "d", "--save_root", "s", *cpu_recipe(12), *flags])
        return args.clips_per_epoch * args.train_vi_len
    default = frames_per_epoch([])
    assert default > 0
    for row, (_, train_flags, _) in ABLATIONS.items():
        if train_flags is not None:
            assert frames_per_epoch(train_flags(12)) == default, row


def test_a_finished_row_is_not_tested_again_until_its_checkpoint_changes(tmp_path, monkeypatch):
    import json
    import os

    from tools import benchmark_quality as bq
    calls = []
    monkeypatch.setattr(bq, "run", lambda command, **kw: calls.append(command))
    (tmp_path / "default").mkdir()
    ckpt = tmp_path / "default" / "best.ckpt"
    ckpt.write_bytes(b"weights")
    kept = tmp_path / "test" / "z_zero" / "result.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"score": 30.0}))
    os.utime(ckpt, (1, 1))                                   # the checkpoint is older
    assert bq.test("z zero", tmp_path, tmp_path) == {"score": 30.0} and not calls
    os.utime(ckpt, None)
    os.utime(kept, (1, 1))                                   # retrained since: test again
    with pytest.raises(ValueError):                          # the fake run wrote no metrics
        bq.test("z zero", tmp_path, tmp_path)
    assert calls and calls[0][0] == "Tester.py"


def test_a_row_that_diverges_is_reported_with_its_error_not_lost(tmp_path):
    from tools.benchmark_quality import failure
    log = tmp_path / "kl_mean.log"
    log.write_text("train 3:   0%|  | 0/73\r  error: non-finite loss at epoch 3, step 280 "
                   "(loss nan, MSE nan). Stopped before the update.\n")
    assert failure(log) == "error: non-finite loss at epoch 3, step 280"
    assert "see" in failure(tmp_path / "missing.log")
    ok = {"what": "x", "score": 30.0, "drift": {0: -1.0}}
    text = table({"default": ok, "kl mean": {"what": "y", "failed": failure(log)}}, "header")
    assert "| kl mean | y | | error: non-finite loss at epoch 3, step 280 |" in text
    assert "| default | x |" in text
