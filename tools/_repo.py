"""The one bootstrap of the command-line tools: put the repository root on sys.path.

`python tools/x.py` puts tools/ on sys.path, not the repository root, so the
project (Trainer, dataloader, utils, tools) would not import. A tool's first
import is therefore

    if not __package__: import _repo  # noqa: E701,F401

which runs this file when the tool runs as a script and does nothing when it is
imported as tools.x (by the tests, another tool or `python -m tools.x`), where the
root is on sys.path already. benchmarks/_repo.py runs this same file.
"""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
