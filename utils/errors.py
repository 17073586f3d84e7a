"""Errors that are the user's to fix: the CLIs print them without a traceback."""
import functools
import sys


class UserError(Exception):
    """Bad input (a path, a flag, a file): the message says what and how to fix it."""


def choice(table, value, setting):
    """``table[value]``, or a UserError naming the setting, the value and the choices:
    an unknown option value never falls back to a default."""
    try:
        return table[value]
    except (KeyError, TypeError):
        raise UserError(f"unknown {setting} {value!r}; choose one of "
                        f"{', '.join(map(str, table))}.") from None


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
