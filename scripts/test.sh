#!/usr/bin/env bash
# The one test command (README): creates .venv if needed, installs pinned dev requirements, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
# The browser test drives Debian's chromium through Playwright (no browser download) and fails without it, so
# install it where we can (root with apt: CI), retrying a flaky mirror; elsewhere say what the test needs.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    for attempt in 1 2 3; do
      if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then break; fi
      if [ "$attempt" = 3 ]; then echo "error: could not install chromium (apt-get install -y chromium)" >&2; exit 1; fi
      sleep 10
    done
  else
    echo "note: chromium is missing, so tests/test_app_browser.py will fail: sudo apt-get install -y chromium" >&2
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest -q "$@"
