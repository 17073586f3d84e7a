"""Every template method is a hook (docs/architecture.md): Trainer.py's main(),
the training loop and Tester.py call it on the model, so a student's override of
any of them changes what runs. Each method is wrapped by an override that
records its calls and defers to the original; a training run, its resume and a
test run must go through every one."""
import collections

import pytest

import Tester
import Trainer
from conftest import signal_handlers_kept, train_flags

TRAINING_HOOKS = ["forward", "training_stage", "training_one_step", "optimizer_step",
                  "train_dataloader", "val_dataloader", "teacher_forcing_ratio_update",
                  "tqdm_bar", "save", "load_checkpoint", "eval", "val_one_step", "make_gif"]
TESTING_HOOKS = ["load_checkpoint", "eval", "val_dataloader", "val_one_step", "make_gif"]


def record_calls(monkeypatch, cls, names, calls):
    """Override each method of ``cls`` with one that counts its calls, then
    defers to the original: what a student's override that calls super() does."""
    for name in names:
        original = cls.__dict__.get(name) or getattr(cls, name)

        def override(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, override)


@pytest.fixture(scope="module")
def calls(small_dataset, tmp_path_factory):
    """A 1-epoch training run, its resume for a second epoch and a test run of
    its checkpoint, with every template method recorded."""
    folder = tmp_path_factory.mktemp("hooks")
    counted = {"train": collections.Counter(), "test": collections.Counter()}
    with pytest.MonkeyPatch.context() as patch, signal_handlers_kept():
        record_calls(patch, Trainer.VAE_Model, TRAINING_HOOKS, counted["train"])
        flags = train_flags(small_dataset, folder / "run", "--store_visualization",
                            "--partial", "0.5")
        Trainer.main(Trainer.parse_args([*flags, "--num_epoch", "1"]))
        Trainer.main(Trainer.parse_args([*flags, "--num_epoch", "2",
                                         "--ckpt_path", str(folder / "run" / "last.ckpt")]))
    with pytest.MonkeyPatch.context() as patch:
        record_calls(patch, Tester.Test_model, TESTING_HOOKS, counted["test"])
        Tester.main(Trainer.parse_args(
            ["--DR", str(small_dataset), "--save_root", str(folder / "test"), "--device", "cpu",
             "--ckpt_path", str(folder / "run" / "last.ckpt"), "--no_sanity"],
            Tester.get_tester_parser()))
    return counted


@pytest.mark.parametrize("name", TRAINING_HOOKS)
def test_training_runs_the_models_template_method(calls, name):
    assert calls["train"][name] > 0, f"VAE_Model.{name} was never called"


@pytest.mark.parametrize("name", TESTING_HOOKS)
def test_testing_runs_the_models_template_method(calls, name):
    assert calls["test"][name] > 0, f"Test_model.{name} was never called"


def test_each_training_step_goes_through_the_step_hooks(calls):
    """One training_one_step, one optimizer_step and one progress-bar update per
    batch: none of them is bypassed on some path."""
    train = calls["train"]
    assert train["training_one_step"] == train["optimizer_step"] == train["tqdm_bar"]
    assert train["forward"] == train["training_one_step"]
