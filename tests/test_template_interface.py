"""The course template's names keep their meaning: code written against the
template's classes, the way its training_stage() and main() call them, runs here
(the README's table "Differences from the course template")."""
import math

import pytest
import torch

import Tester
import Trainer
from conftest import TINY
from utils.checkpoint import load_checkpoint
from utils.flags import default_args, parse_args
from utils.runlog import read_metrics


def run_args(data, save_root, *flags):
    return default_args("--DR", str(data), "--save_root", str(save_root), "--device", "cpu",
                        "--val_vi_len", "12", *TINY, *flags)


def test_kl_annealing_update_get_beta_and_frange_cycle_linear():
    args = default_args("--num_epoch", "8", "--kl_anneal_type", "Cyclical",
                        "--kl_anneal_cycle", "2", "--kl_anneal_ratio", "0.5")
    schedule, betas = Trainer.kl_annealing(args, current_epoch=0), []
    for _ in range(8):          # the template's loop: read the beta, train, update()
        betas.append(schedule.get_beta())
        schedule.update()
    assert betas == pytest.approx([0.0, 0.5, 1.0, 1.0] * 2)
    assert betas == Trainer.kl_annealing.frange_cycle_linear(8, 0.0, 1.0, 2, 0.5)
    assert Trainer.kl_annealing(default_args("--kl_anneal_type", "None")).get_beta() == 1.0


def test_generate_psnr_and_kl_criterion():
    truth = torch.zeros(2, 3, 4, 4)
    pred = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])
    # Each frame's own PSNR (20 and 40 dB), averaged: not the PSNR of the mean MSE.
    assert Trainer.Generate_PSNR(pred, truth).item() == pytest.approx(30.0, abs=1e-4)
    mu, logvar = torch.full((2, 3, 2, 2), 1.0), torch.zeros(2, 3, 2, 2)
    # 0.5 * mu^2 per value, summed over all 24 values, divided by the batch size 2.
    assert Trainer.kl_criterion(mu, logvar, batch_size=2).item() == pytest.approx(6.0)


def test_the_template_main_and_training_stage(small_dataset, tmp_path, restore_signals):
    """main(): VAE_Model(args), load_checkpoint() when --ckpt_path, then eval() with
    --test, else training_stage(); training_stage() trains every batch through
    training_one_step, saves epoch=N.ckpt every --per_save epochs, validates, and
    moves the teacher-forcing ratio and the KL annealing on."""
    args = run_args(small_dataset, tmp_path, "--num_epoch", "3", "--per_save", "2",
                    "--partial", "0.5",
                    "--tfr", "1.0", "--tfr_sde", "0", "--tfr_d_step", "0.5",
                    "--kl_anneal_type", "Monotonic", "--kl_anneal_ratio", "0.5")
    steps = []
    original = Trainer.VAE_Model.training_one_step

    class Counting(Trainer.VAE_Model):     # a student's override is what training uses
        def training_one_step(self, img, label, adapt_TeacherForcing):
            steps.append(adapt_TeacherForcing)
            return original(self, img, label, adapt_TeacherForcing)

    model = Counting(args)
    model.training_stage()
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert [r["tfr"] for r in rows] == [1.0, 0.5, 0.0]
    assert [r["beta"] for r in rows] == pytest.approx([0.0, 2 / 3, 1.0])
    assert len(steps) == len(model.train_dataloader()) * 3 and steps[0] is True
    assert sorted(p.name for p in tmp_path.glob("epoch=*.ckpt")) == ["epoch=0.ckpt", "epoch=2.ckpt"]

    # --test: the template's main loads --ckpt_path and calls eval(), the validation.
    tested = Trainer.VAE_Model(run_args(small_dataset, tmp_path, "--ckpt_path",
                                        str(tmp_path / "last.ckpt")))
    tested.load_checkpoint()
    loss, frame_psnr, _ = tested.eval()
    assert len(frame_psnr) == 11 and math.isfinite(loss)
    assert frame_psnr.mean().item() == pytest.approx(rows[-1]["val_psnr"], abs=1e-4)
    assert tested.training   # eval() validates; it does not switch the mode


def test_training_one_step_optimizer_step_and_save(tmp_path):
    """The template's training step by hand: one optimizer step changes the
    weights, the checkpoint holds them and what resumes the run."""
    model = Trainer.VAE_Model(run_args("unread", tmp_path, "--warmup_steps", "0"))
    before = [p.detach().clone() for p in model.parameters()]
    clip = torch.rand(2, 3, 3, 32, 64)
    loss, terms = model.training_one_step(clip, clip, True)
    assert math.isfinite(loss) and terms["grad_norm"] > 0 and {"mse", "kl"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.save(tmp_path / "a.ckpt")
    ckpt = load_checkpoint(tmp_path / "a.ckpt")
    assert ckpt["global_step"] == 1 and ckpt["optimizer"]["state"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt["state_dict"].items())


def test_teacher_forcing_ratio_update_follows_the_epoch():
    model = Trainer.VAE_Model(default_args(*TINY, "--tfr", "1.0", "--tfr_sde", "1",
                                           "--tfr_d_step", "0.25"))
    ratios = []
    for epoch in range(5):
        model.trainer.current_epoch = epoch
        model.teacher_forcing_ratio_update()
        ratios.append(model.trainer.tfr)
    assert ratios == [1.0, 1.0, 0.75, 0.5, 0.25]


def test_testing_builds_no_optimizer(trained_run, small_dataset, tmp_path, monkeypatch):
    """Test_model: load_checkpoint() reads the weights, eval() rolls out every test
    sequence and writes the CSV and a GIF per sequence; no optimizer is made."""
    def no_optimizer(*args, **kwargs):
        raise AssertionError("an optimizer was built for inference")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", no_optimizer)
    # --no_sanity: the short test sequence is not Kaggle's 630 frames.
    args = parse_args(["--DR", str(small_dataset), "--save_root", str(tmp_path), "--device",
                       "cpu", "--ckpt_path", str(trained_run.folder / "best.ckpt"),
                       "--no_sanity"], Tester.get_tester_parser())
    model = Tester.load_test_model(args)
    predictions = model.eval()
    assert len(predictions) == 1 and predictions[0].shape == (8, 3, 32, 64)
    assert (tmp_path / "submission.csv").is_file()
    assert [p.name for p in tmp_path.glob("pred_seq*.gif")] == ["pred_seq0.gif"]
    assert model._trainer is None


def test_get_key_orders_frames_by_the_integer_in_their_names(tmp_path):
    from dataloader import get_key
    names = ["frame10.png", "frame2.png", "frame1.png"]
    assert sorted(names, key=get_key) == ["frame1.png", "frame2.png", "frame10.png"]
    assert get_key(str(tmp_path / "train_img" / "frame23.png")) == 23
