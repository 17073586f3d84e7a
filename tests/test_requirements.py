"""Every third-party module the project imports is declared, so that a fresh
`pip install -r requirements.txt` (product) or `-r requirements-dev.txt` (tests)
is all a user's machine needs, whatever this machine happens to have."""
import ast
import re
import sys

from conftest import ROOT

PRODUCT = ["Trainer.py", "Tester.py", "dataloader.py", "modules", "utils", "tools"]
# The research tools run on a user's machine with the product's requirements too.
RESEARCH = ["benchmarks"]
# Import names that differ from the name pip installs.
DISTRIBUTION = {"PIL": "pillow", "xdist": "pytest-xdist"}


def python_files(*places):
    for place in places:
        path = ROOT / place
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported_modules(path):
    """Top-level names of the absolute imports in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def local_names():
    """Modules of this repository: its top-level files and folders, the tests' own
    helpers, and what a script run as `python tools/x.py` imports from beside it
    (the _repo bootstrap)."""
    names = {p.stem for p in ROOT.glob("*.py")} | {p.name for p in ROOT.iterdir() if p.is_dir()}
    beside = [p for place in ("tests", "tools", "benchmarks") for p in (ROOT / place).glob("*.py")]
    return names | {p.stem for p in beside}


def declared(requirements):
    """Normalised distribution names in a requirements file, following -r includes."""
    names = set()
    for line in (ROOT / requirements).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            names |= declared(line[2:].strip())
        elif line:
            names.add(normalise(re.split(r"[<>=!~\[; ]", line)[0]))
    return names


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared(places, requirements):
    local, found = local_names(), {}
    for path in python_files(*places):
        for module in imported_modules(path):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            if normalise(DISTRIBUTION.get(module, module)) not in declared(requirements):
                found.setdefault(module, []).append(str(path.relative_to(ROOT)))
    return found


def test_product_files_import_only_what_requirements_txt_declares():
    assert undeclared(PRODUCT + RESEARCH, "requirements.txt") == {}


def test_tests_import_only_what_requirements_dev_txt_declares():
    assert undeclared(["tests"], "requirements-dev.txt") == {}


def test_an_undeclared_import_is_caught(tmp_path, monkeypatch):
    tool = tmp_path / "tool.py"
    tool.write_text("import numpy\nfrom scipy import ndimage\nimport PIL.Image\nimport os\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "requirements.txt").write_text("numpy>=1.24\nPillow>=9.5  # images\n")
    assert undeclared(["tool.py"], "requirements.txt") == {"scipy": ["tool.py"]}
