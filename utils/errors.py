"""Errors that are the user's to fix: the CLIs print them without a traceback."""
import functools
import sys


class UserError(Exception):
    """Bad input (a path, a flag, a file): the message says what and how to fix it."""


def exit_on_user_error(main):
    """Wrap a CLI entry point so a UserError prints one clear message and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
