"""The ``conveyor`` command (``service.cli:main``, installed as a console script)."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from ..client import ConveyorError, WaitTimeout
from .app import EXIT_TIMEOUT, cli
from .render import OutputClosed

EXIT_SERVICE_ERROR = 3
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> None:
    """Run the command; any error the service or the network gives is one line on stderr."""
    try:
        cli.main(args=argv, prog_name="conveyor", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as usage:  # argparse-like: click's message, exit 2
        usage.show()
        sys.exit(usage.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except WaitTimeout as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        sys.exit(EXIT_TIMEOUT)
    except ConveyorError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        sys.exit(EXIT_SERVICE_ERROR)
    except KeyboardInterrupt:
        print("conveyor: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (OutputClosed, BrokenPipeError):  # `conveyor watch | head`: the reader left
        with contextlib.suppress(OSError):  # nothing more reaches it, not even the flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
