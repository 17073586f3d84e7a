"""What every command line of the project shares."""
import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default, except for required flags and
    flags whose help already says what happens without them (default None)."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def progress_bar(iterable, **kwargs):
    """tqdm that refreshes 10 times a second on a terminal and once a minute
    into a log file or pipe, so logs of long runs stay readable."""
    from tqdm import tqdm
    interactive = sys.stderr.isatty()
    return tqdm(iterable, mininterval=0.1 if interactive else 60, **kwargs)


def tool_parser(doc, **kwargs):
    """The argument parser of a tools/ script: its docstring's first paragraph as
    the description, defaults in the help."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter,
                                   **kwargs)


def run_script(command, threads=None, log=None):
    """Run one of the repository's scripts as a user types it, and wait for it.

    command: the script's path from the repository root and its arguments, e.g.
    ["Trainer.py", "--DR", data, ...] (paths are passed as str; give absolute ones,
    since the script runs in the repository root). It runs with this interpreter,
    its command line printed first ("$ Trainer.py --DR ..."); a failure raises
    subprocess.CalledProcessError. threads: OMP_NUM_THREADS for it (default: this
    process's environment). log: a file that takes its output, stdout and stderr,
    instead of the terminal.
    """
    command = [str(part) for part in command]
    print("$ " + " ".join(command), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    with open(log, "w") if log else contextlib.nullcontext() as sink:
        subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env, check=True,
                       stdout=sink, stderr=subprocess.STDOUT if log else None)
