"""What every command line of the project shares."""
import argparse
import sys


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
