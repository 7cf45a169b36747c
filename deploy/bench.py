"""glacierd against plain pg_dump / pg_restore: speed and memory, in one run.

Run it through ``deploy/bench.sh`` (which builds .venv if needed); deploy/BENCHMARKS.md
has the numbers of a run and how to read them. For each database size it generates an
application-like database (users, documents with text and bytea, a foreign key, indexes)
and measures:

- ``pg_dump -Fc`` of it into a file (wall time);
- ``glacierd backup`` (the one-shot CLI, as a subprocess, local store, config file in the
  temp dir): wall time and peak RSS of the glacierd process — database-only; with N
  attached files that are all new (once); and again with the same files, none new, which
  shows what the "exactly once" walk and set difference cost;
- ``pg_restore --single-transaction`` of that dump into a fresh database against
  glacierd's restore path (``restore_dump``, run via asyncio in a child process: one psql
  transaction that drops what is there and replays pg_restore's script) on the same dump
  into the scratch database; both results are checked against the generated data.

The repeatable measurements run ``--repeat`` times, interleaved (pg_dump, glacierd,
glacierd, pg_dump, …) so that drift in machine load hits both sides; medians are reported.

Peak RSS is the kernel's high-water mark (VmHWM in /proc/PID/status) of the glacierd Python
process, sampled every 10 ms while it runs; ``ru_maxrss`` from wait4() — the largest of the
process and its children (pg_dump, psql, pg_restore) — is recorded next to it.

The scratch databases (``glacierd_bench``, ``glacierd_bench_restore``) are dropped and
recreated; they and the temp dir are removed at the end, also after an error, Ctrl-C or
SIGTERM. Connection: $GLACIERD_BENCH_PG, default
postgresql://postgres@127.0.0.1:5432/postgres (an account that may create databases).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from glacierd.pgconnect.conninfo import ConnInfo, parse_conninfo
from glacierd.sources.database_restore import restore_dump

ADMIN_DSN = os.environ.get("GLACIERD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "glacierd_bench"
RESTORE_DB = "glacierd_bench_restore"
CATALOG_SCHEMA = "glacierd"  # the default: the catalog lives in the backed-up database
REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# Table + index bytes per generated document row (measured on PostgreSQL 15): sizes the
# generated data close to the requested megabytes; the report shows the real size.
BYTES_PER_ROW = 704
USERS = 5000

_current: subprocess.Popen[bytes] | None = None  # the measured child, killed on interrupt


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ PostgreSQL helpers


def admin_conninfo() -> ConnInfo:
    return parse_conninfo(ADMIN_DSN)


def conninfo_for(dbname: str) -> ConnInfo:
    return admin_conninfo().with_dbname(dbname)


def dsn_text(info: ConnInfo) -> str:
    """A keyword/value connection string for the glacierd config file."""

    def quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quote(v)}" for k, v in info.params.items())


def clean_env(info: ConnInfo) -> dict[str, str]:
    env = info.libpq_env()
    for name in ("GLACIERD_DATABASE_DSN", "GLACIERD_CATALOG_DSN", "GLACIERD_CONFIG"):
        env.pop(name, None)
    return env


def psql(dbname: str, sql: str) -> str:
    """Run SQL with psql (statements in autocommit, so VACUUM works); returns unaligned output."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbname],
        input=sql,
        capture_output=True,
        text=True,
        env=clean_env(conninfo_for(dbname)),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql on {dbname} failed: {' '.join(out.stderr.split())}")
    return out.stdout.strip()


def admin_db() -> str:
    return admin_conninfo().dbname or "postgres"


def drop_database(name: str) -> None:
    psql(admin_db(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')


def create_database(name: str) -> None:
    drop_database(name)
    psql(admin_db(), f'CREATE DATABASE "{name}";')


def generate_data(dbname: str, target_mb: float) -> dict[str, Any]:
    """An application-like schema: users, and documents with text and bytea, FK, indexes."""
    rows = max(1000, round(target_mb * MIB / BYTES_PER_ROW))
    md5s = " || ".join(["md5(random()::text)"] * 16)  # 16 × 16 random bytes per row
    started = time.perf_counter()
    psql(
        dbname,
        f"""
        SET synchronous_commit = off;
        CREATE TABLE users (id integer PRIMARY KEY, email text NOT NULL UNIQUE,
            name text NOT NULL, created_at timestamptz NOT NULL);
        CREATE TABLE documents (id bigint PRIMARY KEY, user_id integer NOT NULL,
            title text NOT NULL, body text NOT NULL, payload bytea NOT NULL,
            created_at timestamptz NOT NULL);
        INSERT INTO users SELECT g, 'user' || g || '@example.com', initcap(md5(g::text)),
            now() - g * interval '1 minute' FROM generate_series(1, {USERS}) g;
        INSERT INTO documents SELECT g, 1 + (g % {USERS}),
            'document ' || g || ' ' || md5(random()::text),
            repeat('lorem ipsum dolor sit amet ', 1 + (random() * 8)::int)
                || md5(random()::text) || ' ' || md5(random()::text) || ' '
                || md5(random()::text) || ' ' || md5(random()::text),
            decode({md5s}, 'hex'),
            now() - g * interval '1 second'
            FROM generate_series(1, {rows}) g;
        ALTER TABLE documents ADD FOREIGN KEY (user_id) REFERENCES users (id);
        CREATE INDEX documents_user_id ON documents (user_id);
        CREATE INDEX documents_created_at ON documents (created_at);
        VACUUM (FREEZE, ANALYZE);
        """,
    )
    data_bytes = int(
        psql(
            dbname,
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = 'public';",
        )
    )
    return {
        "rows": rows,
        "data_bytes": data_bytes,
        "database_bytes": int(psql(dbname, "SELECT pg_database_size(current_database());")),
        "generate_s": round(time.perf_counter() - started, 3),
        "fingerprint": fingerprint(dbname),
    }


def fingerprint(dbname: str) -> str:
    """Row counts and content sums: equal before and after a restore."""
    return psql(
        dbname,
        "SELECT (SELECT count(*) FROM users) || '/' || count(*) || '/' || sum(length(body)) "
        "|| '/' || sum(length(payload)) || '/' || sum(hashtext(title)::bigint) FROM documents;",
    )


# ------------------------------------------------------------------ attached files


def generate_files(root: Path, count: int, min_kib: int, max_kib: int, seed: int) -> int:
    """``count`` files of min..max KiB in root/xx/yy/name (refile / ActiveStorage style)."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        name = f"{rng.getrandbits(128):032x}"
        folder = root / name[:2] / name[2:4]
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(min_kib * 1024, max_kib * 1024)
        (folder / f"{name}-{i}").write_bytes(rng.randbytes(size))
        total += size
    return total


# ------------------------------------------------------------------ measuring processes


@dataclass
class Measured:
    wall_s: float
    peak_rss_kib: int  # VmHWM of the process itself, sampled
    tree_maxrss_kib: int  # ru_maxrss from wait4: max of the process and its children
    returncode: int
    stdout: str = ""
    stderr: str = ""


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def run_measured(argv: list[str], env: dict[str, str], workdir: Path, tag: str) -> Measured:
    """Run argv; wall time from start to exit, peak RSS from /proc and wait4()."""
    global _current
    out_path, err_path = workdir / f"{tag}.out", workdir / f"{tag}.err"
    peak = 0
    done = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    _current = proc

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _hwm_kib(proc.pid))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    _current = None
    return Measured(
        wall_s=round(wall, 3),
        peak_rss_kib=peak,
        tree_maxrss_kib=usage.ru_maxrss,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def checked(m: Measured, what: str) -> Measured:
    if m.returncode != 0:
        tail = m.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"{what} exited with {m.returncode}: " + " | ".join(tail))
    return m


# ------------------------------------------------------------------ glacierd


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, base: Path, files_root: Path | None) -> Path:
    sections: dict[str, dict[str, object]] = {
        "database": {"dsn": dsn_text(conninfo_for(BENCH_DB))},
        "store": {"type": "local"},
        "store.local": {"path": str(base / "vault")},
        "schedule": {"enabled": False},
        "logging": {"format": "json", "level": "info"},
    }
    if files_root is not None:
        sections["files"] = {"root": str(files_root), "orphan_dir": str(base / "orphans")}
    lines = [f"state_dir = {_toml(str(base / 'state'))}", ""]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def glacierd_argv(config: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "glacierd", "--config", str(config), *command]


def log_events(stderr: str) -> dict[str, datetime]:
    """First timestamp of each glacierd log event in a JSON-lines stderr."""
    seen: dict[str, datetime] = {}
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event and "timestamp" in event:
            seen.setdefault(event["event"], datetime.fromisoformat(event["timestamp"]))
    return seen


@dataclass
class BackupRun:
    wall_s: float
    in_process_s: float  # the backup's own duration_s (no interpreter start-up)
    database_phase_s: float | None  # started -> database_stored (from the log)
    files_phase_s: float | None  # database_stored -> completed: walk, set difference, uploads
    peak_rss_mib: float
    tree_maxrss_mib: float
    database_bytes: int
    file_count: int
    new_files: int


def glacierd_backup(config: Path, workdir: Path, tag: str) -> BackupRun:
    m = checked(
        run_measured(
            glacierd_argv(config, "backup", "--json"),
            clean_env(conninfo_for(BENCH_DB)),
            workdir,
            tag,
        ),
        f"glacierd backup ({tag})",
    )
    summary = json.loads(m.stdout.strip().splitlines()[-1])
    events = log_events(m.stderr)

    def span(a: str, b: str) -> float | None:
        if a in events and b in events:
            return round((events[b] - events[a]).total_seconds(), 3)
        return None

    return BackupRun(
        wall_s=m.wall_s,
        in_process_s=float(summary["duration_s"]),
        database_phase_s=span("backup.started", "backup.database_stored"),
        files_phase_s=span("backup.database_stored", "backup.completed"),
        peak_rss_mib=round(m.peak_rss_kib / 1024, 1),
        tree_maxrss_mib=round(m.tree_maxrss_kib / 1024, 1),
        database_bytes=int(summary["database_bytes"]),
        file_count=int(summary["file_count"]),
        new_files=int(summary["new_files"]),
    )


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarize(runs: list[BackupRun]) -> dict[str, Any]:
    """Median of the times, largest peak RSS, over repeated backups."""
    return {
        "runs": len(runs),
        "wall_s": _median([r.wall_s for r in runs]),
        "wall_samples_s": [r.wall_s for r in runs],
        "in_process_s": _median([r.in_process_s for r in runs]),
        "database_phase_s": _median([r.database_phase_s for r in runs]),
        "files_phase_s": _median([r.files_phase_s for r in runs]),
        "peak_rss_mib": max(r.peak_rss_mib for r in runs),
        "tree_maxrss_mib": max(r.tree_maxrss_mib for r in runs),
        "database_bytes": runs[-1].database_bytes,
        "file_count": runs[-1].file_count,
        "new_files": [r.new_files for r in runs],
    }


def timing(samples: list[float]) -> dict[str, Any]:
    return {"s": _median(list(samples)), "samples_s": samples}


async def _restore_child(dump: Path, dbname: str, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    info = await restore_dump(
        dump=dump,
        conninfo=conninfo_for(dbname),
        pg_restore="pg_restore",
        psql="psql",
        catalog_schema=CATALOG_SCHEMA,
        work_dir=work,
        lock_timeout_seconds=30,
        terminate_connections=False,
    )
    return {"seconds": round(time.perf_counter() - started, 3), **info}


# ------------------------------------------------------------------ one size


def bench_size(
    target_mb: float, files_root: Path, n_files: int, workdir: Path, repeat: int
) -> dict[str, Any]:
    tag = f"{target_mb:g}mb"
    base = workdir / tag
    base.mkdir()
    log(f"{tag}: generating data")
    create_database(BENCH_DB)
    data = generate_data(BENCH_DB, target_mb)
    log(
        f"{tag}: {data['rows']} rows, {data['data_bytes'] / MIB:.1f} MiB in tables "
        f"({data['generate_s']} s)"
    )
    env = clean_env(conninfo_for(BENCH_DB))
    db_only = write_config(base / "db-only.toml", base, None)
    with_files = write_config(base / "files.toml", base, files_root)
    # The catalog schema is created before anything is timed (a one-off at first start).
    checked(run_measured(glacierd_argv(with_files, "migrate"), env, base, "migrate"), "migrate")

    # The first backup with files: every attached file is new.
    first = glacierd_backup(with_files, base, "backup-first")
    log(f"{tag}: glacierd backup, all files new: {first.wall_s} s, {first.new_files} new files")
    if first.new_files != n_files:
        raise RuntimeError(f"the first backup archived {first.new_files} of {n_files} files")

    # Interleaved repeats: plain pg_dump, glacierd database-only, glacierd with no new files.
    dump = base / "plain.dump"
    pg_dump_s: list[float] = []
    db_runs: list[BackupRun] = []
    again_runs: list[BackupRun] = []
    for i in range(repeat):
        m = checked(
            run_measured(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-password",
                    # What glacierd itself leaves out of its dump: its own catalog schema.
                    f"--exclude-schema={CATALOG_SCHEMA}",
                    f"--file={dump}",
                ],
                env,
                base,
                f"pg_dump-{i}",
            ),
            "pg_dump",
        )
        pg_dump_s.append(m.wall_s)
        db_runs.append(glacierd_backup(db_only, base, f"backup-db-{i}"))
        again = glacierd_backup(with_files, base, f"backup-again-{i}")
        if again.new_files != 0 or again.file_count != n_files:
            raise RuntimeError(
                f"exactly-once check failed: a repeated backup saw {again.file_count} of "
                f"{n_files} files and archived {again.new_files} (want 0)"
            )
        again_runs.append(again)
        log(
            f"{tag}: run {i + 1}/{repeat}: pg_dump {m.wall_s} s, glacierd database-only "
            f"{db_runs[-1].wall_s} s ({db_runs[-1].peak_rss_mib} MiB), glacierd no new files "
            f"{again.wall_s} s"
        )

    # pg_restore into a fresh database vs glacierd's restore into the live one, same dump.
    plain_s: list[float] = []
    ours_s: list[float] = []
    ours_wall: list[float] = []
    ours_peak = 0.0
    verified = True
    for i in range(repeat):
        create_database(RESTORE_DB)
        plain = checked(
            run_measured(
                [
                    "pg_restore",
                    "--single-transaction",
                    "--no-password",
                    f"--dbname={RESTORE_DB}",
                    str(dump),
                ],
                clean_env(conninfo_for(RESTORE_DB)),
                base,
                f"pg_restore-{i}",
            ),
            "pg_restore",
        )
        plain_s.append(plain.wall_s)
        verified &= fingerprint(RESTORE_DB) == data["fingerprint"]
        drop_database(RESTORE_DB)
        child = checked(
            run_measured(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--restore-child",
                    str(dump),
                    BENCH_DB,
                    str(base / "work"),
                ],
                env,
                base,
                f"restore-{i}",
            ),
            "glacierd restore_dump",
        )
        ours_s.append(json.loads(child.stdout.strip().splitlines()[-1])["seconds"])
        ours_wall.append(child.wall_s)
        ours_peak = max(ours_peak, round(child.peak_rss_kib / 1024, 1))
        verified &= fingerprint(BENCH_DB) == data["fingerprint"]
        log(f"{tag}: run {i + 1}/{repeat}: pg_restore {plain.wall_s} s, glacierd {ours_s[-1]} s")
    if not verified:
        raise RuntimeError(f"{tag}: restored data differs from the generated data")

    result: dict[str, Any] = {
        "target_mb": target_mb,
        "rows": data["rows"],
        "data_mib": round(data["data_bytes"] / MIB, 1),
        "database_mib": round(data["database_bytes"] / MIB, 1),
        "generate_s": data["generate_s"],
        "dump_mib": round(dump.stat().st_size / MIB, 1),
        "pg_dump": timing(pg_dump_s),
        "backup_db_only": summarize(db_runs),
        "backup_all_files_new": summarize([first]),
        "backup_no_new_files": summarize(again_runs),
        "pg_restore": timing(plain_s),
        "glacierd_restore": {**timing(ours_s), "wall_s": _median(list(ours_wall))},
        "glacierd_restore_peak_rss_mib": ours_peak,
        "restore_verified": verified,
    }
    pg = result["pg_dump"]["s"]
    result["ratios"] = {
        "backup_db_only_vs_pg_dump": round(result["backup_db_only"]["wall_s"] / pg, 2),
        "backup_db_only_in_process_vs_pg_dump": round(
            result["backup_db_only"]["in_process_s"] / pg, 2
        ),
        "backup_no_new_files_vs_pg_dump": round(result["backup_no_new_files"]["wall_s"] / pg, 2),
        "restore_vs_pg_restore": round(
            result["glacierd_restore"]["s"] / result["pg_restore"]["s"], 2
        ),
    }
    result["backup_no_new_files_overhead_s"] = round(
        result["backup_no_new_files"]["wall_s"] - pg, 3
    )
    shutil.rmtree(base, ignore_errors=True)  # keep the disk use of a run small
    return result


# ------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    tool = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    settings = psql(
        admin_db(),
        "SELECT current_setting('server_version') || '|' || current_setting('shared_buffers');",
    ).split("|")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "postgresql": settings[0],
        "shared_buffers": settings[1],
        "pg_dump": tool.stdout.strip(),
        "python": platform.python_version(),
        "glacierd_commit": commit.stdout.strip() or None,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(results: list[dict[str, Any]], startup: dict[str, float], settings: dict) -> str:
    def row(label: str, fmt: Any) -> str:
        return f"{label:<50}" + "".join(f"{fmt(r):>12}" for r in results)

    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    n = settings["files"]
    return "\n".join(
        [
            row("database size (requested)", lambda r: f"{r['target_mb']:g} MB"),
            row(
                "  table data, MiB (rows)", lambda r: f"{r['data_mib']:.0f} ({r['rows'] // 1000}k)"
            ),
            row("  custom-format dump, MiB", lambda r: f"{r['dump_mib']:.1f}"),
            row("pg_dump -Fc to a file, s", lambda r: secs(r["pg_dump"]["s"])),
            row("glacierd backup, database only, s", lambda r: secs(r["backup_db_only"]["wall_s"])),
            row(
                "  ratio glacierd / pg_dump",
                lambda r: f"{r['ratios']['backup_db_only_vs_pg_dump']:.2f}x",
            ),
            row(
                "  same, in-process time (no start-up)",
                lambda r: f"{r['ratios']['backup_db_only_in_process_vs_pg_dump']:.2f}x",
            ),
            row(
                "  of which streaming the dump into the store, s",
                lambda r: secs(r["backup_db_only"]["database_phase_s"]),
            ),
            row("  peak RSS of glacierd, MiB", lambda r: f"{r['backup_db_only']['peak_rss_mib']}"),
            row(
                "  max RSS of any process incl. pg_dump, MiB",
                lambda r: f"{r['backup_db_only']['tree_maxrss_mib']}",
            ),
            row(
                f"glacierd backup, {n} files all new, s",
                lambda r: secs(r["backup_all_files_new"]["wall_s"]),
            ),
            row(
                f"  files phase: walk, diff, {settings['files_mib']:.0f} MiB upload, s",
                lambda r: secs(r["backup_all_files_new"]["files_phase_s"]),
            ),
            row("  new files archived", lambda r: str(r["backup_all_files_new"]["new_files"][0])),
            row(
                "  peak RSS of glacierd, MiB",
                lambda r: f"{r['backup_all_files_new']['peak_rss_mib']}",
            ),
            row(
                "glacierd backup again, no new files, s",
                lambda r: secs(r["backup_no_new_files"]["wall_s"]),
            ),
            row("  new files archived", lambda r: str(max(r["backup_no_new_files"]["new_files"]))),
            row(
                "  ratio glacierd / pg_dump",
                lambda r: f"{r['ratios']['backup_no_new_files_vs_pg_dump']:.2f}x",
            ),
            row(
                "  overhead (backup - pg_dump), s",
                lambda r: secs(r["backup_no_new_files_overhead_s"]),
            ),
            row(
                f"  walk + set difference of {n} files, s",
                lambda r: secs(r["backup_no_new_files"]["files_phase_s"]),
            ),
            row(
                "  peak RSS of glacierd, MiB",
                lambda r: f"{r['backup_no_new_files']['peak_rss_mib']}",
            ),
            row(
                "pg_restore --single-transaction, fresh db, s", lambda r: secs(r["pg_restore"]["s"])
            ),
            row(
                "glacierd restore_dump, replacing live db, s",
                lambda r: secs(r["glacierd_restore"]["s"]),
            ),
            row(
                "  ratio glacierd / pg_restore",
                lambda r: f"{r['ratios']['restore_vs_pg_restore']:.2f}x",
            ),
            row(
                "  peak RSS of the restoring process, MiB",
                lambda r: f"{r['glacierd_restore_peak_rss_mib']}",
            ),
            row("  restored data verified", lambda r: "yes" if r["restore_verified"] else "NO"),
            "",
            f"Times are medians of {settings['repeat']} interleaved run(s); the all-new backup "
            "runs once per size.",
            f"glacierd CLI start-up (check-config): {startup['wall_s']:.2f} s, peak RSS "
            f"{startup['peak_rss_mib']:.1f} MiB.",
        ]
    )


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="deploy/bench.sh",
        description="Benchmark glacierd's backup and restore against plain pg_dump / "
        "pg_restore (speed and peak memory). Connects as $GLACIERD_BENCH_PG "
        f"(default {ADMIN_DSN}).",
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="database sizes in MB, comma-separated (default 50,250; --quick 10,50)",
    )
    p.add_argument(
        "--files",
        type=int,
        default=None,
        help="number of attached files (default 2000; --quick 300)",
    )
    p.add_argument("--file-kib", default="4-64", help="attached file size range, KiB (4-64)")
    p.add_argument("--quick", action="store_true", help="a small smoke run (10 MB and 50 MB)")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs of each repeatable measurement; the median is reported (default 3; --quick 1)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed for the attached files")
    p.add_argument(
        "--output",
        type=Path,
        default=REPO / "deploy" / "bench-results.json",
        help="where to write the JSON results (default deploy/bench-results.json)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the JSON results on stdout instead of the table"
    )
    p.add_argument(
        "--cleanup-only",
        action="store_true",
        help="drop the scratch databases and exit (bench.sh's trap calls this)",
    )
    p.add_argument(
        "--restore-child", nargs=3, metavar=("DUMP", "DB", "WORKDIR"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    sizes = args.sizes or ("10,50" if args.quick else "50,250")
    try:
        args.sizes = [float(s) for s in sizes.split(",") if s.strip()]
        lo, hi = (int(x) for x in args.file_kib.split("-"))
    except ValueError:
        p.error("--sizes takes numbers like 50,250 and --file-kib a range like 4-64")
    if not args.sizes or min(args.sizes) <= 0 or not 0 < lo <= hi:
        p.error("--sizes must be positive and --file-kib a range like 4-64")
    args.file_kib = (lo, hi)
    if args.files is None:
        args.files = 300 if args.quick else 2000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.files < 1 or args.repeat < 1:
        p.error("--files and --repeat must be at least 1")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cleanup(workdir: Path | None) -> None:
    if _current is not None and _current.poll() is None:
        _current.kill()
        _current.wait()
    for name in (RESTORE_DB, BENCH_DB):
        try:
            drop_database(name)
        except Exception as exc:  # keep cleaning up
            log(f"could not drop {name}: {exc}")
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.restore_child:
        dump, dbname, work = args.restore_child
        print(json.dumps(asyncio.run(_restore_child(Path(dump), dbname, Path(work)))))
        return 0
    if args.cleanup_only:
        cleanup(None)
        return 0
    for tool in ("pg_dump", "pg_restore", "psql"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found; apt-get install postgresql-client", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="glacierd-bench-"))
    started = time.perf_counter()
    try:
        info = machine()
        log(
            f"machine: {info['nproc']} cores, {info['ram_gib']} GiB, PostgreSQL "
            f"{info['postgresql']}, Python {info['python']}; work dir {workdir}"
        )
        files_root = workdir / "files"
        lo, hi = args.file_kib
        files_bytes = generate_files(files_root, args.files, lo, hi, args.seed)
        log(f"{args.files} attached files, {files_bytes / MIB:.1f} MiB")
        # The constant cost of a one-shot CLI: interpreter, imports, config.
        cfg = write_config(workdir / "startup.toml", workdir / "startup", None)
        startup = checked(
            run_measured(
                glacierd_argv(cfg, "check-config"), clean_env(admin_conninfo()), workdir, "startup"
            ),
            "glacierd check-config",
        )
        results = [
            bench_size(mb, files_root, args.files, workdir, args.repeat) for mb in args.sizes
        ]
        total = round(time.perf_counter() - started, 1)
        settings = {
            "sizes_mb": args.sizes,
            "repeat": args.repeat,
            "files": args.files,
            "file_kib": list(args.file_kib),
            "files_mib": round(files_bytes / MIB, 1),
            "upload_concurrency": 4,
            "store": "local",
        }
        cli_startup = {
            "wall_s": startup.wall_s,
            "peak_rss_mib": round(startup.peak_rss_kib / 1024, 1),
        }
        report = {
            "machine": info,
            "settings": settings,
            "cli_startup": cli_startup,
            "results": results,
            "total_s": total,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(
                f"glacierd benchmark: {info['nproc']} cores ({info['cpu']}), "
                f"{info['ram_gib']} GiB RAM, PostgreSQL {info['postgresql']}, "
                f"Python {info['python']}, commit {info['glacierd_commit']}\n"
            )
            print(table(results, cli_startup, settings))
            print(
                f"\ntotal {total} s; load average (1/5/15 min) {info['loadavg_at_start']} at "
                f"start, {report['loadavg_at_end']} at end; JSON in {args.output}"
            )
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        cleanup(workdir)


if __name__ == "__main__":
    raise SystemExit(main())
