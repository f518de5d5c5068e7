"""The one distinction every entry point makes: a user's mistake or a bug in chipfit.

`InputError` (a `ValueError`, so library callers that catch `ValueError` keep working) means
something the user gave is wrong: an argument, a file, a model, a combination. The CLI prints it
as one line and exits with status 2. Anything else that escapes a command is a bug in chipfit:
the CLI shows its traceback and says so.
"""

from __future__ import annotations

__all__ = ["InputError", "ResourceError"]


class InputError(ValueError):
    """Something the user gave (an argument, a file, a model) is wrong; the message says what and
    names the valid choices."""


class ResourceError(InputError):
    """The machine ran out of something the command needs (memory, a worker process): not the
    user's input and not a chipfit bug; the message says what to change (fewer workers, ...)."""
