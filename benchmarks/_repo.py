"""`python benchmarks/x.py` puts benchmarks/ on sys.path, not the repository root:
this runs tools/_repo.py, the one bootstrap of every tool, which puts the root
there. A benchmark imports it as a tool does: `if not __package__: import _repo`."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "_repo.py"))
