#!/usr/bin/env bash
# Run the whole test suite: builds .venv from pyproject.toml (with the test extras) if
# needed, then ruff and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
fi
.venv/bin/ruff check glacierd tests
exec .venv/bin/pytest -q "$@"
