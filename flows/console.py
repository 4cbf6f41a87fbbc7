"""The `tailstudy` console script. Importing the command line takes a second or more (typer, pyarrow, DuckDB, ...): a
Ctrl-C in that time ends it as a Ctrl-C later does (flows/cli.py main), with one line and exit code 130, not a
traceback."""
from __future__ import annotations

import sys


def main() -> None:
    try:
        from tailstudy.flows.cli import main as run  # inside the try: a Ctrl-C during the CLI's imports lands here
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()
