#!/usr/bin/env bash
# Benchmark glacierd against plain pg_dump / pg_restore: speed and peak memory at two
# database sizes, plus the "exactly once" file check (see deploy/BENCHMARKS.md).
# Builds .venv from pyproject.toml if needed (as deploy/test.sh does), then runs
# deploy/bench.py with the arguments given here (--quick for a smoke run, --help for all).
# Connects as GLACIERD_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/postgres),
# which must be allowed to create databases; it drops and recreates glacierd_bench and
# glacierd_bench_restore, and removes them and its temp dir at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in pg_dump pg_restore psql pg_isready; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench: $tool not found; install it with 'apt-get install postgresql-client'." >&2
        exit 2
    fi
done
if [ -z "${GLACIERD_BENCH_PG:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "bench: PostgreSQL does not answer on 127.0.0.1:5432; start it or set GLACIERD_BENCH_PG." >&2
    exit 2
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
fi

# Everything the run writes goes under one temp dir; the trap removes it and drops the
# scratch databases even if bench.py was killed before its own clean-up ran.
workdir="$(mktemp -d -t glacierd-bench.XXXXXX)"
cleanup() {
    .venv/bin/python deploy/bench.py --cleanup-only || true
    rm -rf "$workdir"
}
trap cleanup EXIT
# bench.py runs as a child we can signal: on Ctrl-C or TERM it gets SIGTERM, kills what it
# is measuring, drops its databases and exits; then the EXIT trap runs.
TMPDIR="$workdir" .venv/bin/python deploy/bench.py "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM HUP
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do
    wait "$child" || status=$?
done
exit "$status"
