"""The README's table of the template's names holds to the code: every name it
lists exists where it says, taking the parameters it shows, in that order."""
import inspect
import re

import pytest

import dataloader
import Tester
import Trainer
from conftest import ROOT

CLASSES = {"VAE_Model": Trainer.VAE_Model, "Test_model": Tester.Test_model,
           "kl_annealing": Trainer.kl_annealing}
NAME = re.compile(r"`(?:(\w+)\.)?(\w+)\(([^)]*)\)`")


def template_table():
    """(cell, owner, name, parameters) of every name in the README's table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Differences from the course template"):]
    rows = [line for line in section.split("\n\n")[2].splitlines() if line.startswith("| `")]
    for row in rows:
        cell = row.split("|")[1]
        for owner, name, params in NAME.findall(cell):
            yield cell.strip(), owner, name, [p.strip() for p in params.split(",") if p.strip()]


def resolve(cell, owner, name):
    if owner:
        return getattr(CLASSES[owner], name)
    if "(Tester)" in cell:
        return getattr(Tester, name)
    for module in (Trainer, Tester, dataloader):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"{name} is in no module")


def test_the_table_lists_the_template_names():
    names = {(owner, name) for _, owner, name, _ in template_table()}
    assert len(names) >= 25
    for method in ("training_stage", "training_one_step", "optimizer_step", "save",
                   "load_checkpoint", "eval", "val_one_step", "tqdm_bar", "make_gif",
                   "train_dataloader", "val_dataloader", "teacher_forcing_ratio_update"):
        assert ("VAE_Model", method) in names, method


@pytest.mark.parametrize("cell, owner, name, params", list(template_table()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_each_name_in_the_table_takes_the_parameters_it_shows(cell, owner, name, params):
    target = resolve(cell, owner, name)
    function = target.__init__ if inspect.isclass(target) else target
    leading = [p for p in inspect.signature(function).parameters if p != "self"]
    assert leading[:len(params)] == params, f"{cell}: the code takes {leading}"
