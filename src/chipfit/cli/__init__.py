"""The `chipfit` command. `main(argv) -> int` is separate from the parser so tests call it directly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from chipfit.cli.common import CliError

__all__ = ["build_parser", "entry", "main"]


def build_parser() -> argparse.ArgumentParser:
    from chipfit import __version__
    from chipfit.cli import (
        devices_cmd,
        emulate_cmd,
        estimate_cmd,
        formats_cmd,
        plan_cmd,
        quant_cmd,
        trace_cmd,
        train_cmd,
    )

    p = argparse.ArgumentParser(prog="chipfit", description="Run any PyTorch model on accelerators you do not own.")
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except (CliError, ValueError) as e:
        sys.stderr.write(f"chipfit: error: {e}\n")
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT; files are written atomically
        sys.stderr.write("chipfit: interrupted\n")
        return 130


def entry() -> None:
    sys.exit(main())
