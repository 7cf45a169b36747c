"""The real daemon as a process, driven over HTTP like curl: endpoints, errors, auth, crashes."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from tests import pg


def vault_files(vault: Path) -> list[str]:
    return sorted(
        p.relative_to(vault).as_posix()
        for p in vault.rglob("*")
        if p.is_file() and ".retrievals" not in p.parts
    )


def test_backup_over_http_stores_dump_and_files_once(daemon_factory, tmp_path, files_root, app_db):
    d = daemon_factory()
    r = d.request("POST", "/backups")
    assert r.status == 202, r.body
    first = d.wait_backup(r.json()["id"])
    assert first["status"] == "completed", first
    assert first["file_count"] == 3 and first["new_files"] == 3
    kinds = sorted(a["kind"] for a in first["archives"])
    assert kinds == ["database", "file", "file", "file"]
    vault = tmp_path / "vault"
    after_first = vault_files(vault)
    assert sum(k.startswith("files/") for k in after_first) == 3

    # A second backup with no new files stores no new file archive: check the store itself.
    second = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert second["status"] == "completed" and second["new_files"] == 0
    after_second = vault_files(vault)
    assert [k for k in after_second if k.startswith("files/")] == [
        k for k in after_first if k.startswith("files/")
    ]
    assert sum(k.startswith("database/") for k in after_second) == 2

    # A file added between two backups is stored exactly once.
    (files_root / "new" / "deep").mkdir(parents=True)
    (files_root / "new" / "deep" / "added.png").write_bytes(b"\x89PNG" + os.urandom(500))
    third = d.wait_backup(d.request("POST", "/backups").json()["id"])
    fourth = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert third["new_files"] == 1 and fourth["new_files"] == 0
    keys = vault_files(vault)
    added = f"files/new/deep/added.png@backup{third['id']}"  # the key of this backup's upload
    assert keys.count(added) == 1
    assert sum(k.startswith("files/") for k in keys) == 4
    stored = (vault / added).read_bytes()
    assert stored == (files_root / "new/deep/added.png").read_bytes()

    listing = d.request("GET", "/backups").json()["backups"]
    assert [b["id"] for b in listing] == [fourth["id"], third["id"], second["id"], first["id"]]
    health = d.request("GET", "/health").json()
    assert health["last_successful_backup"] == fourth["id"]
    assert health["seconds_since_last_success"] >= 0
    assert d.stop() == 0


def test_delete_keeps_file_archives_other_backups_reference(daemon_factory, tmp_path, files_root):
    d = daemon_factory()
    first = d.wait_backup(d.request("POST", "/backups").json()["id"])
    (files_root / "only-in-second.txt").write_text("second\n")
    second = d.wait_backup(d.request("POST", "/backups").json()["id"])
    vault = tmp_path / "vault"

    r = d.request("DELETE", f"/backups/{first['id']}")
    assert r.status == 200, r.body
    keys = vault_files(vault)
    # The first backup's dump is gone; its files survive because the second references them.
    first_dump = next(a["key"] for a in first["archives"] if a["kind"] == "database")
    assert first_dump not in keys
    for a in first["archives"]:
        if a["kind"] == "file":
            assert a["key"] in keys
    assert d.request("GET", f"/backups/{first['id']}").status == 404

    # Deleting the last backup that references them removes them from the store.
    r = d.request("DELETE", f"/backups/{second['id']}")
    assert r.status == 200 and r.json()["archives_deleted"] == 5
    assert vault_files(vault) == []
    d.stop()


def test_malformed_requests_get_json_errors(daemon_factory):
    d = daemon_factory()
    cases = [
        ("POST", "/backups", "{not json", 400, "not valid JSON"),
        ("POST", "/backups", "[1, 2]", 400, "JSON object"),
        ("POST", "/backups", '{"tier": "Bulk"}', 400, "unknown field 'tier'"),
        ("GET", "/backups/abc", None, 400, "not a valid id"),
        ("GET", "/backups/-3", None, 400, "not a valid id"),
        ("GET", "/backups/424242", None, 404, "backup 424242 does not exist"),
        ("DELETE", "/backups/424242", None, 404, "does not exist"),
        ("PUT", "/backups", None, 405, "PUT is not allowed"),
        ("PATCH", "/backups/1", None, 405, "not allowed"),
        ("GET", "/nope", None, 404, "no such endpoint"),
        ("GET", "/backups?limit=zero", None, 400, "limit"),
        ("POST", "/backups", "x" * 70_000, 413, ""),
    ]
    for method, path, raw, status, text in cases:
        r = d.request(method, path, raw=raw)
        assert r.status == status, (method, path, r.status, r.body)
        assert r.headers["Content-Type"].startswith("application/json"), (method, path)
        body = r.json()
        assert body["status"] == status and text in body["error"], (method, path, body)
    d.stop()


def test_second_backup_while_one_runs_is_busy(daemon_factory, make_settings, tmp_path):
    slow = tmp_path / "slow_pg_dump"
    slow.write_text('#!/bin/sh\npg_dump "$@"\n[ "$1" = --version ] || sleep 4\n')
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    d = daemon_factory(make_settings(database={"pg_dump": str(slow)}))
    first = d.request("POST", "/backups")
    assert first.status == 202
    busy = d.request("POST", "/backups")
    assert busy.status == 409
    assert f"backup {first.json()['id']} is running" in busy.json()["error"]
    assert d.wait_backup(first.json()["id"])["status"] == "completed"
    d.stop()


def test_bearer_token_protects_everything_but_health(daemon_factory, make_settings):
    d = daemon_factory(
        make_settings(api={"token_env": "TEST_GLACIERD_TOKEN"}),
        env={"TEST_GLACIERD_TOKEN": "s3cret-token"},
    )
    assert d.request("GET", "/health").status == 200
    r = d.request("GET", "/backups")
    assert r.status == 401 and "bearer token" in r.json()["error"]
    assert d.request("GET", "/backups", headers={"Authorization": "Bearer wrong"}).status == 401
    ok = d.request("GET", "/backups", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 200
    d.stop()
    assert "s3cret-token" not in d.logs()


def test_sigkill_during_backup_then_restart_marks_it_failed(
    daemon_factory, make_settings, tmp_path
):
    slow = tmp_path / "slow_pg_dump"
    # Real pg_dump output, then the stream stays open: the upload is mid-way when killed.
    slow.write_text('#!/bin/sh\npg_dump "$@"\n[ "$1" = --version ] || sleep 60\n')
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    settings = make_settings(database={"pg_dump": str(slow)})
    d = daemon_factory(settings)
    backup_id = d.request("POST", "/backups").json()["id"]
    vault = tmp_path / "vault"
    d.wait_for(lambda: list(vault.rglob("*.glacierd-partial")), what="a partial upload")
    d.kill()
    subprocess.run(["pkill", "-f", str(slow)], check=False)

    settings["database"].pop("pg_dump")
    d2 = daemon_factory(settings, name="restarted")
    b = d2.request("GET", f"/backups/{backup_id}").json()
    assert b["status"] == "failed"
    assert b["error"].startswith("interrupted")
    assert not list(vault.rglob("*.glacierd-partial")), "partial upload left in the vault"
    assert vault_files(vault) == [], "a failed backup left archives behind"
    nxt = d2.wait_backup(d2.request("POST", "/backups").json()["id"])
    assert nxt["status"] == "completed" and nxt["file_count"] == 3
    d2.stop()


def test_sigterm_during_backup_abandons_it_cleanly_and_exits(
    daemon_factory, make_settings, tmp_path
):
    slow = tmp_path / "slow_pg_dump"
    slow.write_text('#!/bin/sh\npg_dump "$@"\n[ "$1" = --version ] || sleep 60\n')
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    settings = make_settings(database={"pg_dump": str(slow)}, shutdown_timeout_seconds=1)
    d = daemon_factory(settings)
    backup_id = d.request("POST", "/backups").json()["id"]
    vault = tmp_path / "vault"
    d.wait_for(lambda: list(vault.rglob("*.glacierd-partial")), what="a partial upload")
    began = time.monotonic()
    assert d.stop(timeout=20) == 0
    assert time.monotonic() - began < 15
    assert not list(vault.rglob("*.glacierd-partial"))
    failed = [e for e in d.events() if e.get("event") == "backup.failed"]
    assert failed and failed[0]["backup_id"] == backup_id
    assert "interrupted" in failed[0]["error"]


def test_sd_notify_ready_and_stopping(daemon_factory, make_settings, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    try:
        d = daemon_factory(env={"NOTIFY_SOCKET": str(sock_path)})
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready
        d.signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()
        assert d.proc.wait(20) == 0
    finally:
        sock.close()


def test_dump_restores_into_scratch_database_with_same_rows(daemon_factory, tmp_path, app_db):
    d = daemon_factory()
    b = d.wait_backup(d.request("POST", "/backups").json()["id"])
    d.stop()
    dump = next(a for a in b["archives"] if a["kind"] == "database")
    scratch = f"{app_db}_scratch"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", scratch], check=True)
    try:
        subprocess.run(
            [
                "pg_restore",
                "--no-owner",
                "--exit-on-error",
                "-d",
                pg.dsn_for(scratch),
                str(tmp_path / "vault" / dump["key"]),
            ],
            check=True,
            capture_output=True,
        )
        original, restored = pg.table_rows(app_db), pg.table_rows(scratch)
        assert set(original) == {"public.documents", "public.users"}
        assert restored == original
        # glacierd's catalog lives in the same database but is not part of the dump.
        assert "glacierd.backups" not in restored
    finally:
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", scratch], check=False
        )


def test_browser_and_rebinding_requests_are_refused(daemon_factory):
    d = daemon_factory()
    r = d.request("POST", "/backups", headers={"Origin": "https://evil.example"})
    assert r.status == 403 and "web browsers" in r.json()["error"]
    r = d.request("GET", "/backups", headers={"Host": "rebind.evil.example:8470"})
    assert r.status == 403 and "not a loopback name" in r.json()["error"]
    assert d.request("GET", "/backups", headers={"Host": "localhost:8470"}).status == 200
    assert d.request("GET", "/backups").json()["backups"] == []  # nothing was started
    d.stop()
