#!/usr/bin/env bash
# Run the whole test suite (what CI runs): installs what the tests need on Debian 12
# (postgresql-client, python3-venv), makes sure PostgreSQL answers on 127.0.0.1:5432,
# builds .venv from pyproject.toml with the test extras if needed, then ruff, mypy and pytest.
# Extra arguments go to pytest. Every test has a time limit (pytest-timeout, set in
# pyproject.toml), so a hang fails that test instead of stalling CI. The tests connect as
# GLACIERD_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres, which needs trust
# auth on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pg_dump >/dev/null && command -v psql >/dev/null || need+=(postgresql-client)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ -z "${GLACIERD_TEST_PG:-}" ] && ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    need+=(postgresql)
fi
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${GLACIERD_TEST_PG:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
fi
.venv/bin/ruff check glacierd tests
.venv/bin/mypy  # checks glacierd/ as configured in pyproject.toml ([tool.mypy])
# Refuse to run without the per-test limit (an old .venv may predate it).
.venv/bin/python -c 'import pytest_timeout' 2>/dev/null || .venv/bin/pip install -q -e '.[test]'
exec .venv/bin/pytest -q "$@"
