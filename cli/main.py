"""Entry point of the ``jobworker`` console script: parse, run one command, report.

This is the CLI's error boundary: a ``CliError`` becomes one line on stderr and its
exit status (1, or 2 for usage errors); Ctrl-C exits 130; nothing ever prints a
traceback, except a bug, which says it is one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

from jobworker.cli._errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError
from jobworker.cli._parser import build

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command; returns the exit status."""
    try:
        args = build().parse_args(argv)
        module, _, function = args.handler.partition(":")
        handler = cast(Handler, getattr(importlib.import_module(module), function))
        return handler(args)
    except CliError as error:
        print(f"{error.program}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("jobworker: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`jobworker ls | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
