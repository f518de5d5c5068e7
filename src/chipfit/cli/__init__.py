"""The `chipfit` command. `main(argv) -> int` is separate from the parser so tests call it directly."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from chipfit.errors import InputError
from chipfit.paths import check_output_path

__all__ = ["build_parser", "entry", "main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other user error (the full usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from chipfit import __version__
    from chipfit.cli import (
        devices_cmd,
        emulate_cmd,
        estimate_cmd,
        formats_cmd,
        plan_cmd,
        quant_cmd,
        serve_cmd,
        sparsify_cmd,
        trace_cmd,
        train_cmd,
    )

    p = _Parser(prog="chipfit", description="Run any PyTorch model on accelerators you do not own.")
    p.add_argument("--version", action="version", version=f"chipfit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    formats_cmd.add_parsers(sub)
    devices_cmd.add_parsers(sub)
    trace_cmd.add_parsers(sub)
    estimate_cmd.add_parsers(sub)
    estimate_cmd.add_calibrate_parser(sub)
    emulate_cmd.add_parsers(sub)
    quant_cmd.add_parsers(sub)
    train_cmd.add_parsers(sub)
    plan_cmd.add_parsers(sub)
    serve_cmd.add_parsers(sub)
    sparsify_cmd.add_parsers(sub)
    return p


OUTPUT_ARGS = ("csv", "html", "save", "save_json", "plot", "export", "output")  # every option that names a file written


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (its message is printed; status 2), --help or --version (0)
        return e.code if isinstance(e.code, int) else 2
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        for dest in OUTPUT_ARGS:  # a path that cannot be written is refused before the work, not after it
            if getattr(args, dest, None):
                check_output_path(getattr(args, dest))
        return func(args)
    except InputError as e:  # the user's mistake (CliError is one): one line, the valid choices in it
        sys.stderr.write(f"chipfit: error: {e}\n")
        return 2
    except OSError as e:
        if e.filename is None:
            return _bug()
        sys.stderr.write(f"chipfit: error: {e.strerror or e}: {e.filename}\n")  # a path the user gave
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT; files are written atomically
        sys.stderr.write("chipfit: interrupted\n")
        return 130
    except Exception:
        return _bug()


BUG_STATUS = 70  # EX_SOFTWARE: an internal error


def _bug() -> int:
    """Anything else that escapes a command is chipfit's fault: its traceback, then a line saying so."""
    traceback.print_exc()
    sys.stderr.write(
        "chipfit: internal error: this is a bug in chipfit, not a problem with your input; please report it "
        "with the command line and the traceback above\n"
    )
    return BUG_STATUS


def entry() -> None:
    sys.exit(main())
