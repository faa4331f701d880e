#!/usr/bin/env bash
# The one test command (README): creates .venv if needed, installs pinned dev requirements, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest -q "$@"
