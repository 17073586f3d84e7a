"""Settings: what a checkpoint carries into a run is decided in one place
(utils/from_checkpoint.py), so the CLI's path and the template's path agree;
an unknown option value is an error wherever it enters; loss terms go by name."""
import argparse
import shutil

import pytest
import torch

import Trainer
from conftest import TINY, signal_handlers_kept, train_flags, write_template_checkpoint
from utils.checkpoint import atomic_save, load_checkpoint
from utils.config import ModelConfig
from utils.errors import UserError
from utils.flags import default_args, parse_args, validate_args
from utils.plots import loss_columns, load_run
from utils import runtime
from utils.runlog import read_metrics, read_table
from utils.schedules import kl_beta, lr_factor


# --------------------------------------------------------------------------- one owner
def resume_both_ways(data, tmp_path, ckpt, *typed):
    """Resume ``ckpt`` for one more epoch through main() and through the template's
    calls (VAE_Model(args), load_checkpoint(), training_stage()): the two runs'
    args and last.ckpt."""
    runs = {}
    for way in ("cli", "template"):
        folder = tmp_path / way
        folder.mkdir()
        shutil.copy(ckpt, folder / "from.ckpt")
        argv = ["--DR", str(data), "--save_root", str(folder), "--device", "cpu",
                "--ckpt_path", str(folder / "from.ckpt"), *typed]
        args = parse_args(argv)
        with signal_handlers_kept():
            if way == "cli":
                Trainer.main(args)
            else:
                model = Trainer.VAE_Model(args)
                model.load_checkpoint()
                model.training_stage()
        runs[way] = (vars(args), load_checkpoint(folder / "last.ckpt"))
    return runs


def assert_same_run(runs):
    (cli_args, cli_ckpt), (template_args, template_ckpt) = runs["cli"], runs["template"]
    differ = {k for k in cli_args if cli_args[k] != template_args.get(k)}
    assert differ <= {"save_root", "ckpt_path"}, differ
    assert cli_ckpt["last_epoch"] == template_ckpt["last_epoch"]
    for key, value in cli_ckpt["state_dict"].items():
        assert torch.equal(value, template_ckpt["state_dict"][key]), key


def test_the_template_path_resumes_a_run_as_the_cli_does(trained_run, small_dataset, tmp_path):
    """A checkpoint of this project (the session's run, at epoch 0 of 2): flags from
    it, the typed --lr wins, the optimizer and the schedules continue, in both
    paths alike. The template's model is built from the flags: its dims are typed."""
    runs = resume_both_ways(small_dataset, tmp_path, trained_run.folder / "epoch=0.ckpt",
                            *TINY, "--lr", "0.002", "--partial", "0.5")
    assert runs["cli"][0]["lr"] == 0.002 and runs["cli"][0]["tfr"] == 0.5
    assert_same_run(runs)


def test_the_template_path_resumes_a_template_checkpoint_as_the_cli_does(small_dataset, tmp_path):
    """A course-template checkpoint: dims from the weights, its lr and tfr continued,
    the output activation measured, in both paths alike."""
    torch.manual_seed(0)
    source = Trainer.VAE_Model(default_args(*TINY))
    ckpt = write_template_checkpoint(tmp_path / "template.ckpt", source, lr=0.002, tfr=0.6)
    runs = resume_both_ways(small_dataset, tmp_path, ckpt, *TINY, "--num_epoch", "2",
                            "--partial", "0.5", "--val_vi_len", "12")
    assert runs["cli"][0]["lr"] == 0.002 and runs["cli"][0]["output_activation"] in (
        "sigmoid", "clamp")
    assert_same_run(runs)


def test_loading_a_checkpoint_for_inference_builds_no_optimizer(small_dataset, tmp_path,
                                                               monkeypatch):
    """load_checkpoint(), val_dataloader(), eval(), val_one_step(), the rollout and
    make_gif(): none of them builds an optimizer, whatever a checkpoint holds."""
    model = Trainer.VAE_Model(default_args(*TINY))
    model.training_one_step(torch.rand(1, 3, 3, 32, 64), torch.rand(1, 3, 3, 32, 64), True)
    model.save(tmp_path / "a.ckpt")

    def no_optimizer(*args, **kwargs):
        raise AssertionError("an optimizer was built for inference")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", no_optimizer)
    tested = Trainer.VAE_Model(default_args(*TINY, "--DR", str(small_dataset), "--val_vi_len",
                                            "6", "--ckpt_path", str(tmp_path / "a.ckpt")))
    tested.load_checkpoint()
    img, label = next(iter(tested.val_dataloader()))
    tested.val_one_step(img, label)
    _, psnr, (pred, _, _) = tested.eval()
    tested.make_gif(pred, tmp_path / "a.gif")
    assert len(psnr) == 5 and tested._trainer is None


# --------------------------------------------------------------------------- option values
@pytest.mark.parametrize("setting, value", [("loss", "huber"), ("output_activation", "tanh"),
                                            ("kl_reduction", "max"), ("bn_rollout", "batch"),
                                            ("amp", "fp8")])
def test_an_unknown_model_setting_is_an_error_naming_it(setting, value):
    with pytest.raises(UserError, match=f"unknown --{setting} '{value}'; choose one of"):
        ModelConfig(**{setting: value})
    with pytest.raises(UserError, match=f"--{setting}"):
        Trainer.VAE_Model(argparse.Namespace(**{setting: value}))


@pytest.mark.parametrize("setting, value", [("optim", "SGD"), ("lr_scheduler", "step"),
                                            ("tf_mode", "clip"), ("kl_anneal_type", "Linear"),
                                            ("data_cache", "ssd"), ("loss", "l2")])
def test_an_unknown_flag_value_from_code_is_refused(setting, value):
    with pytest.raises(UserError, match=f"--{setting}"):
        validate_args(default_args(**{setting: value}))


def test_the_schedules_refuse_an_unknown_type_instead_of_a_default():
    with pytest.raises(UserError, match="--kl_anneal_type"):
        kl_beta(default_args(kl_anneal_type="Linear"), 0)
    with pytest.raises(UserError, match="--lr_scheduler"):
        lr_factor(default_args(lr_scheduler="step"), 0)


def test_a_checkpoint_with_an_unknown_value_is_refused_on_load(tmp_path):
    model = Trainer.VAE_Model(default_args(*TINY))
    ckpt = model.trainer.checkpoint()
    ckpt["args"]["loss"] = "perceptual"                 # a newer version's loss, say
    atomic_save(ckpt, tmp_path / "new.ckpt")
    with pytest.raises(UserError, match="unknown --loss 'perceptual'"):
        Trainer.read_checkpoint(default_args("--ckpt_path", str(tmp_path / "new.ckpt")),
                                resume=False)


# --------------------------------------------------------------------------- loss terms
def test_a_new_loss_term_reaches_the_bar_the_csv_and_the_plots(small_dataset, tmp_path):
    """A subclass that adds one term in forward(): the term is logged and drawn
    with no other edit."""
    class WithSmoothness(Trainer.VAE_Model):
        def forward(self, img, label, *args, **kwargs):
            loss, terms = super().forward(img, label, *args, **kwargs)
            terms["smooth"] = (img[:, 1:] - img[:, :-1]).abs().mean()
            return loss, terms

    args = parse_args(train_flags(small_dataset, tmp_path, "--num_epoch", "1",
                                  "--partial", "0.5"))
    with signal_handlers_kept():
        WithSmoothness(args).training_stage()
    header, _ = read_table(tmp_path / "metrics.csv")
    assert {"train_mse", "train_l1", "train_kl", "train_grad_norm", "train_smooth"} <= set(header)
    assert read_metrics(tmp_path)[0]["train_smooth"] > 0
    assert "train_smooth" in loss_columns([load_run(tmp_path)])


def test_every_dispatch_table_holds_the_command_lines_choices():
    """One list of values per option: a value the parser takes has its entry in the
    table that dispatches on it, and the table has no entry the parser refuses."""
    from utils import from_checkpoint, schedules, training
    from utils.flags import flag_choices

    tables = {"loss": Trainer.RECONSTRUCTION, "output_activation": Trainer.OUTPUT_ACTIVATIONS,
              "kl_reduction": Trainer.KL_REDUCTIONS, "optim": training.OPTIMIZERS,
              "lr_scheduler": schedules.LR_SCHEDULES, "tf_mode": training.TF_MODES}
    choices = flag_choices()
    for flag, table in tables.items():
        assert set(table) == set(choices[flag]), flag
    assert set(runtime.AMP_DTYPES) == set(choices["amp"]) - {"auto"}   # auto resolves first
    assert set(from_checkpoint.ACTIVATIONS) < set(choices["output_activation"])
