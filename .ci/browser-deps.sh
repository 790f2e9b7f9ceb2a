#!/usr/bin/env bash
# Install what the browser test (tests/test_browser.py, `pytest -m browser`) needs:
# Debian's chromium (/usr/bin/chromium) and the Playwright Python driver, which drives that
# system browser through `executable_path`. No browser is downloaded (never `playwright install`).
# Idempotent: returns at once when both are already present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "browser-deps: $PY not found; run 'make install' first (or set PY=...)" >&2
    exit 1
fi

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi

if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
    # the same pin as requirements-lock.txt
    "$PY" -m pip install -q "$(grep -E '^playwright==' requirements-lock.txt)"
fi

/usr/bin/chromium --version
"$PY" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
