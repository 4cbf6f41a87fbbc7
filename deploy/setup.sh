#!/usr/bin/env bash
# Set up (or check) the project's virtual environment in .venv: pinned dependencies, then tailstudy in editable mode.
# Idempotent: a second call with unchanged requirements returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.tailstudy-setup"
# setup.py too: a changed package layout is reinstalled by the editable install below
WANT="$(cat deploy/requirements.lock pyproject.toml deploy/setup.sh setup.py | sha256sum | cut -c1-16)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) or sys.version_info[:2] == (3, 12) else 1)' \
  || { echo "setup: Python 3.11 or 3.12 is needed (found $("$PY" --version 2>&1))" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
echo "setup: installing pinned dependencies into $VENV (a few minutes on a fresh machine)" >&2
# the lock is the complete, closed set (tests/test_lock.py checks it): installed as it stands, with no resolution
# (--no-deps), so an upstream release can never be pulled in; pip verifies every file against its hashes
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r deploy/requirements.lock
# img2dataset pins the `dataclasses` backport, which shadows the standard library's dataclasses and breaks
# Prefect's API server ("unexpected keyword argument 'slots'"): never keep it on Python >= 3.7.
"$VENV/bin/python" -m pip uninstall -q -y dataclasses 2>/dev/null || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
# the package's bytecode now: where PYTHONDONTWRITEBYTECODE is set (or the checkout is read-only) every command would
# compile its modules again (an editable install compiles nothing), 0.05-0.1 s of each command's start
"$VENV/bin/python" -m compileall -q -j 0 pipeline flows >/dev/null
"$VENV/bin/python" -c "import dataclasses, sys; assert 'site-packages' not in dataclasses.__file__, dataclasses.__file__"
echo "$WANT" > "$STAMP"
echo "setup: ready ($VENV)" >&2
