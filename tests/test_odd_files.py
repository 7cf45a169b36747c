"""One odd file never fails a backup: symlink loops, names that are not valid UTF-8, names
with a newline or other control characters, names next to their own escaped form, very
long names — on the local vault and on S3 (moto). Each is archived under an escaped key
and put back byte for byte, name included, or skipped with a logged reason."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from glacierd.catalog.migrations import available_migrations, migrate
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import RestoreFailed, restore_view, start_restore
from glacierd.sources import attachments
from glacierd.stores import keys as keys_module
from tests.aws_fixtures import REGION
from tests.small_fs import fill
from tests.store_listing import listing
from tests.wiring import wire, workers_of

# Names as the kernel stores them: bytes. Each one must come back exactly.
LATIN1 = b"caf\xe9.txt"  # not valid UTF-8 (a Latin-1 é)
LATIN1_DIR = b"r\xe9pertoire"  # a folder whose name is not valid UTF-8
LITERAL_ESCAPE = b"caf%E9.txt"  # a valid name that looks like the escaped form of LATIN1
LITERAL_ESCAPE_LOWER = b"caf%e9.txt"
NEWLINE = b"line\nbreak.txt"
CONTROL = b"tab\tand\x1bescape.txt"
NONCHAR = "nonchar-\uffff.txt".encode()  # valid UTF-8, but not allowed in XML 1.0
PERCENT = b"50%off.pdf"
LONG = b"\xff" * 200 + b".bin"  # 204 bytes: fine on disk, 3x longer once escaped
LONG_UTF8 = ("\u00e9" * 120 + ".txt").encode()  # 244 bytes of valid UTF-8
DEEP = b"/".join([b"d" * 200] * 6) + b"/deep.bin"  # 1,215 bytes: too long for an S3 key


def odd_names() -> dict[bytes, bytes]:
    """Relative path (bytes) → content, for every odd file the backup must archive."""
    names = [
        LATIN1,
        LITERAL_ESCAPE,
        LITERAL_ESCAPE_LOWER,
        NEWLINE,
        CONTROL,
        NONCHAR,
        PERCENT,
        LONG,
        LONG_UTF8,
        DEEP,
        LATIN1_DIR + b"/" + NEWLINE,
        LATIN1_DIR + b"/inner.txt",
    ]
    return {n: b"content of " + n + os.urandom(16) for n in names}


def write_bytes_path(root: Path, rel: bytes, data: bytes) -> None:
    full = os.fsencode(root) + b"/" + rel
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as handle:
        handle.write(data)


def disk_bytes(root: Path) -> dict[bytes, bytes]:
    """Every regular file under ``root`` by its relative path as bytes (symlinks not followed)."""
    found: dict[bytes, bytes] = {}
    base = os.fsencode(root)
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            with open(full, "rb") as handle:
                found[os.path.relpath(full, base)] = handle.read()
    return found


def make_loops(root: Path) -> list[str]:
    """Symlink loops of several shapes; returns their relative paths."""
    (root / "self-loop").symlink_to("self-loop")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "ab" / "deep-loop").symlink_to("../ab/deep-loop")
    return ["ab/deep-loop", "loop-a", "loop-b", "self-loop"]


@pytest.fixture(params=["local", "s3"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "local":
        return {"type": "local", "local": {"path": str(tmp_path / "vault")}}
    moto = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    return {
        "type": "s3",
        "s3": {
            "bucket": bucket,
            "prefix": "odd/",
            "endpoint_url": moto,
            "region": REGION,
            "storage_class": "STANDARD",  # readable at once: no retrieval wait in-process
        },
    }


@pytest.fixture
def open_ctx(
    make_settings: Callable[..., dict], store_settings: dict[str, Any]
) -> Callable[..., Any]:
    @asynccontextmanager
    async def opened(**overrides: Any) -> AsyncIterator[Context]:
        settings = make_settings(store=store_settings, **overrides)
        async with open_context(config_from_dict(settings)) as context:
            workers = wire(context)
            try:
                yield context
            finally:
                workers.close()
                await settle(context)

    return opened


async def settle(ctx: Context) -> None:
    while ctx.tasks:
        await asyncio.gather(*list(ctx.tasks), return_exceptions=True)


async def drive(ctx: Context, restore_id: int) -> dict[str, Any]:
    for _ in range(600):
        await workers_of(ctx).restorer.advance_all()
        view = await restore_view(ctx, restore_id)
        if view["state"] in ("restored", "failed"):
            await settle(ctx)
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"restore {restore_id} did not finish: {view}")


async def stored_keys(ctx: Context) -> list[str]:
    return [o.key for o in await listing(ctx.store)]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_odd_names_are_archived_and_restored_byte_for_byte_and_loops_skipped(
    open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path, store_settings: dict
):
    odd = odd_names()
    for rel, data in odd.items():
        write_bytes_path(files_root, rel, data)
    loops = make_loops(files_root)
    before = disk_bytes(files_root)
    async with open_ctx() as ctx:
        with capture_logs() as logs:
            summary = await asyncio.wait_for(run_backup(ctx, "test"), 60)

        skipped = {e["path"]: e["reason"] for e in events(logs, "backup.file_skipped")}
        assert skipped == dict.fromkeys(loops, "symlink-loop")
        assert summary["skipped_files"] == len(loops)
        assert summary["new_files"] == summary["file_count"] == 3 + len(odd)
        # Every log line and every catalog path is plain text (no surrogates), so the log
        # and the API can carry it.
        json.dumps(logs)
        backup_id = int(summary["backup_id"])
        keys = await stored_keys(ctx)
        assert len(keys) == 1 + 3 + len(odd)
        suffix = f"@backup{backup_id}"  # one key per attempt (operations/backup.py)
        assert f"files/line%0Abreak.txt{suffix}" in keys and f"files/caf%E9.txt{suffix}" in keys

        # Lose every odd file (and the odd folder), then restore the files.
        for rel in odd:
            os.unlink(os.fsencode(files_root) + b"/" + rel)
        os.rmdir(os.fsencode(files_root) + b"/" + LATIN1_DIR)
        os.removedirs(os.fsencode(files_root) + b"/" + os.path.dirname(DEEP))
        stray = b"stray-\xfe\n.bin"  # an odd orphan: moved aside under its own name
        write_bytes_path(files_root, stray, b"stray")

        plan = await start_restore(
            ctx, backup_id, {"tier": None, "database": False, "files": True, "dry_run": True}
        )
        json.dumps(plan)  # the dry run's answer is JSON, odd names included
        assert plan["files_to_retrieve"]["count"] == len(odd)
        assert plan["orphans"]["count"] == 1

        started = await start_restore(
            ctx, backup_id, {"tier": None, "database": False, "files": True, "dry_run": False}
        )
        view = await drive(ctx, started["id"])
        assert view["state"] == "restored", view["error"]
        json.dumps(view)

    assert disk_bytes(files_root) == before
    assert disk_bytes(tmp_path / "orphans") == {stray: b"stray"}
    for loop in loops:  # the loops themselves are left alone
        assert (files_root / loop).is_symlink()


async def test_catalog_paths_round_trip_and_never_collide():
    names = [os.fsdecode(n) for n in odd_names()] + [
        "plain/path.txt",
        "100%",
        "%",
        "%%41",
        "%2",
        "%zz",
        "a%25b",
        "%ed%a0%80",
        "\x7f",
    ]
    encoded = [attachments.catalog_path(n) for n in names]
    assert len(set(encoded)) == len(names)
    for name, enc in zip(names, encoded, strict=True):
        assert attachments.filesystem_path(enc) == name
        enc.encode("utf-8")  # storable: valid UTF-8 text
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in enc)
        assert "\uffff" not in enc and "\ufffe" not in enc
    # Names that need nothing keep their readable form.
    for plain in ("plain/path.txt", "50%off.pdf", "100%", "r\u00e9sum\u00e9.pdf", "a b/c"):
        assert attachments.catalog_path(plain) == plain


async def test_paths_recorded_before_escaping_are_migrated_and_adopted(
    make_settings: Callable[..., dict], files_root: Path, tmp_path: Path
):
    """A catalog written by an older glacierd holds raw text paths; migration 0004 rewrites
    them to catalog paths, so the next backup adopts those archives instead of archiving
    the files again — and a restore of the old backup puts back the literal names."""
    literal = {"caf%E9.txt": b"a literal percent name", "line\nbreak.txt": b"a newline name"}
    for name, data in literal.items():
        (files_root / name).write_bytes(data)
    settings = make_settings()
    config = config_from_dict(settings)
    async with open_context(config, apply_migrations=False) as ctx:
        cat, pool = ctx.catalog, ctx.catalog.pool
        await pool.execute(f"CREATE SCHEMA {cat.schema_sql}")
        await pool.execute(
            f"CREATE TABLE {cat.schema_sql}.schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in available_migrations():
            if version <= 2:  # the catalog as the released version left it
                await pool.execute(sql.replace("{schema}", cat.schema_sql))
                await pool.execute(
                    f"INSERT INTO {cat.schema_sql}.schema_migrations VALUES ($1, $2)", version, name
                )
        old_backup = await pool.fetchval(
            f"INSERT INTO {cat.schema_sql}.backups (status, trigger) VALUES ('completed', 'test') "
            "RETURNING id"
        )
        for name, data in literal.items():
            stored = await ctx.store.put(f"files/{name}", _one(data), kind="file")
            archive_id = await pool.fetchval(
                f"INSERT INTO {cat.schema_sql}.archives "
                "(kind, state, store_name, store_key, path, size, "
                "sha256, storage_class) VALUES ('file', 'stored', $1, $2, $3, $4, $5, 'LOCAL') "
                "RETURNING id",
                ctx.store.name,
                stored.key,
                name,  # the raw text, as older versions recorded it
                stored.size,
                stored.sha256,
            )
            await pool.execute(
                f"INSERT INTO {cat.schema_sql}.backup_archives VALUES ($1, $2)",
                old_backup,
                archive_id,
            )
        await migrate(cat)
        paths = {r["path"] for r in await pool.fetch(f"SELECT path FROM {cat.schema_sql}.archives")}
        assert paths == {"caf%25E9.txt", "line%0Abreak.txt"}

        wire(ctx)
        summary = await run_backup(ctx, "test")
        assert summary["new_files"] == 3  # the fixture's three files; the old two adopted

        for name in literal:
            (files_root / name).unlink()
        started = await start_restore(
            ctx, old_backup, {"tier": None, "database": False, "files": True, "dry_run": False}
        )
        view = await drive(ctx, started["id"])
        assert view["state"] == "restored", view["error"]
        for name, data in literal.items():
            assert (files_root / name).read_bytes() == data
        assert not (files_root / "caf\udce9.txt").exists()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_symlink_loop_on_a_restore_path_is_refused_with_a_reason(
    make_settings: Callable[..., dict], files_root: Path
):
    async with open_context(config_from_dict(make_settings())) as ctx:
        summary = await run_backup(ctx, "test")
        (files_root / "ab/cd/abcd1234").unlink()
        (files_root / "ab/cd").rmdir()
        (files_root / "ab/cd").symlink_to("cd")  # the folder is now a loop
        with pytest.raises(RestoreFailed) as raised:
            await start_restore(
                ctx,
                int(summary["backup_id"]),
                {"tier": None, "database": False, "files": True, "dry_run": False},
            )
    assert "'ab/cd/abcd1234' passes through a symlink loop" in str(raised.value)
    assert "nothing was changed" in str(raised.value)


async def test_a_failure_on_an_odd_name_fails_the_restore_with_a_readable_reason(
    make_settings: Callable[..., dict], small_fs: Callable[..., Path]
):
    root = small_fs("odd-root", "1m")
    write_bytes_path(root, b"\xff-big.bin", os.urandom(300_000))
    async with open_context(config_from_dict(make_settings(files={"root": str(root)}))) as ctx:
        wire(ctx)
        summary = await run_backup(ctx, "test")
        os.unlink(os.fsencode(root) + b"/\xff-big.bin")
        fill(root, leave=100_000)
        started = await start_restore(
            ctx,
            int(summary["backup_id"]),
            {"tier": None, "database": False, "files": True, "dry_run": False},
        )
        view = await drive(ctx, started["id"])
    assert view["state"] == "failed"
    assert f"No space left on device ({root}/%FF-big.bin)" in view["error"]


def test_file_keys_fit_in_an_s3_key_and_never_collide():
    deep = attachments.catalog_path(os.fsdecode(DEEP))
    escaped_long = attachments.catalog_path(os.fsdecode(LONG * 5))  # 3 KB once escaped
    paths = [deep, escaped_long, "plain.txt", "%2F" + "0" * 64]
    keys = [keys_module.file_key(p, "@backup123456") for p in paths]
    assert len(set(keys)) == len(keys)
    for key in keys:
        # S3's limit is 1,024 bytes with the prefix; leave room for a long one.
        assert len(("some/long/prefix/" * 10 + key).encode()) <= 1024
    assert keys[2] == "files/plain.txt@backup123456"  # short paths stay readable
    # "%2F" opens only digest keys: a real path spelled that way is escaped first.
    assert attachments.catalog_path("%2F" + "0" * 64).startswith("%252F")
