"""The one distinction every entry point makes: a user's mistake or a bug in chipfit.

`InputError` (a `ValueError`, so library callers that catch `ValueError` keep working) means
something the user gave is wrong: an argument, a file, a model, a combination. The CLI prints it
as one line and exits with status 2. Anything else that escapes a command is a bug in chipfit:
the CLI shows its traceback and says so.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Something the user gave (an argument, a file, a model) is wrong; the message says what and
    names the valid choices."""
