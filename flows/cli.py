"""`tailstudy`: one command line composed of three small apps with their commands at the top level -- the study
(flows/cli_study.py: run), the workspace and its data (flows/cli_data.py: match, count, ingest, sql, status, verify,
catalog, export) and a Prefect server (flows/cli_server.py: deploy, submit). User errors print one line and exit 2;
nothing prints a traceback unless TAILSTUDY_DEBUG=1."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tailstudy import __version__
from tailstudy.errors import TailstudyError
from tailstudy.flows import cli_data, cli_server, cli_study
from tailstudy.flows.cli_common import err, error_text
from tailstudy.lifeline import startup_timeout_message
from tailstudy.store import disk_full_error, is_disk_full

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
                  help="Controlled studies of long-tailed image-text data: match, count, curate, train, evaluate.")


def _version(value: bool) -> None:
    if value:
        print(f"tailstudy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Controlled studies of long-tailed image-text data: match, count, curate, train, evaluate."""


for _commands in (cli_study.app, cli_data.app, cli_server.app):
    app.add_typer(_commands)  # no name: its commands join the top level (tailstudy run, tailstudy sql, ...)


def _say_error(message: str) -> None:
    err.print(error_text(message), highlight=False, soft_wrap=True)


def main() -> None:
    """The `tailstudy` console script: the app, with one line (never a traceback) for whatever escapes a command."""
    try:
        app(standalone_mode=True)  # ends with SystemExit and the command's exit code
    except TailstudyError as exc:
        _say_error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished artifacts are kept; run again to resume")
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: one line unless debugging
        if os.environ.get("TAILSTUDY_DEBUG"):
            raise
        if is_disk_full(exc):  # a writer that does not say so itself (Prefect's result store, a library)
            _say_error(str(disk_full_error(Path(getattr(exc, "filename", None) or os.getcwd()))))
            sys.exit(2)
        if startup_timeout_message(exc):  # the machine, not the input: exit 1
            _say_error(startup_timeout_message(exc))
            sys.exit(1)
        _say_error(f"{type(exc).__name__}: {exc} (set TAILSTUDY_DEBUG=1 for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
