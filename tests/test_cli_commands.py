"""Every control-API verb has a CLI command, run as an operator runs it (``python -m glacierd``
in a subprocess) against the real daemon: show (paging through archives), delete, retrieve,
snapshots and restoring one, restores, list paging, and restore defaults that follow the
configuration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from glacierd.cli import exits
from tests.config_helpers import run_cli
from tests.daemon import Daemon


def backups(d: Daemon, count: int) -> list[int]:
    return [d.wait_backup(d.request("POST", "/backups").json()["id"])["id"] for _ in range(count)]


def test_show_pages_through_a_backups_archives(
    daemon_factory: Callable[..., Daemon], files_root: Path
) -> None:
    for n in range(7):
        (files_root / f"extra{n}.bin").write_bytes(bytes([n]) * (100 + n))
    d = daemon_factory()
    (backup_id,) = backups(d, 1)
    whole = d.request("GET", f"/backups/{backup_id}").json()
    assert len(whole["archives"]) == 11  # the dump and ten files

    # The API pages: limit and offset, the total, and where the next page starts.
    page = d.request("GET", f"/backups/{backup_id}?limit=4&offset=8").json()
    assert [a["id"] for a in page["archives"]] == [a["id"] for a in whole["archives"][8:]]
    assert (page["archive_count"], page["next_offset"]) == (11, None)
    first = d.request("GET", f"/backups/{backup_id}?limit=4").json()
    assert first["next_offset"] == 4 and len(first["archives"]) == 4
    assert d.request("GET", f"/backups/{backup_id}?limit=0").status == 400
    assert d.request("GET", f"/backups/{backup_id}?offset=x").status == 400

    # The CLI: one page, with the command for the next one.
    proc = run_cli(d.config, "show", str(backup_id), "--limit", "4")
    assert proc.returncode == 0, proc.stderr
    assert f"backup {backup_id}: completed" in proc.stdout
    assert "archives 1-4 of 11" in proc.stdout
    assert f"glacierd show {backup_id} --offset 4 --limit 4" in proc.stdout
    shown = [a["key"] for a in whole["archives"][:4]]
    assert all(key in proc.stdout for key in shown), proc.stdout
    assert whole["archives"][4]["key"] not in proc.stdout

    # --all --json: every archive, fetched page by page, the same as the API's whole answer.
    proc = run_cli(d.config, "show", str(backup_id), "--all", "--json", "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    everything = json.loads(proc.stdout)
    assert [a["id"] for a in everything["archives"]] == [a["id"] for a in whole["archives"]]

    missing = run_cli(d.config, "show", "999")
    assert missing.returncode == exits.NOT_FOUND, missing.stderr
    assert missing.stderr.strip() == (
        "glacierd: backup 999 does not exist; GET /backups lists the ids."
    )
    d.stop()


def test_delete_retrieve_and_list_paging(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    ids = backups(d, 3)

    # list pages backwards from an id and names the store.
    proc = run_cli(d.config, "list", "--limit", "1", "--before", str(ids[2]))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[0] for line in proc.stdout.splitlines() if line[:5].strip().isdigit()]
    assert rows == [str(ids[1])]
    assert "store local (local)" in proc.stdout
    assert f"glacierd list --limit 1 --before {ids[1]}" in proc.stdout
    as_json = json.loads(run_cli(d.config, "list", "--json", "--before", str(ids[1])).stdout)
    assert [b["id"] for b in as_json] == [ids[0]] and as_json[0]["store"] == "local"
    assert [b["id"] for b in d.request("GET", f"/backups?before={ids[2]}").json()["backups"]] == [
        ids[1],
        ids[0],
    ]

    # retrieve: the local vault without a delay makes everything readable at once.
    proc = run_cli(d.config, "retrieve", str(ids[0]), "--tier", "Bulk", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["id"] == ids[0] and answer["tier"] == "Bulk"
    assert run_cli(d.config, "retrieve", str(ids[0])).stdout.startswith(
        f"backup {ids[0]}: retrieval"
    )

    # delete asks for --yes when nobody can be asked (no terminal), and changes nothing.
    refused = run_cli(d.config, "delete", str(ids[0]))
    assert refused.returncode == exits.USAGE, refused.stderr
    assert "--yes" in refused.stderr
    assert d.request("GET", f"/backups/{ids[0]}").status == 200
    proc = run_cli(d.config, "delete", str(ids[0]), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"backup {ids[0]} deleted")
    assert d.request("GET", f"/backups/{ids[0]}").status == 404
    again = run_cli(d.config, "delete", str(ids[0]), "--yes")
    assert again.returncode == exits.NOT_FOUND, again.stderr
    d.stop()


def test_snapshots_restores_and_restoring_a_snapshot(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory()
    (backup_id,) = backups(d, 1)
    assert run_cli(d.config, "snapshots").stdout.startswith("no safety snapshots")
    proc = run_cli(d.config, "restore", str(backup_id), "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    proc = run_cli(d.config, "snapshots", "--json")
    assert proc.returncode == 0, proc.stderr
    (snapshot,) = json.loads(proc.stdout)
    table = run_cli(d.config, "snapshots").stdout
    assert str(snapshot["id"]) in table and snapshot["reason"] in table

    proc = run_cli(d.config, "restore-snapshot", str(snapshot["id"]), "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restored" in proc.stdout.splitlines()[-1]

    proc = run_cli(d.config, "restores", "--json")
    restores = json.loads(proc.stdout)
    assert [r["state"] for r in restores] == ["restored", "restored"]
    assert restores[0]["snapshot_id"] == snapshot["id"]
    table = run_cli(d.config, "restores").stdout
    assert f"snapshot {snapshot['id']}" in table and f"backup {backup_id}" in table

    missing = run_cli(d.config, "restore-snapshot", "999")
    assert missing.returncode == exits.NOT_FOUND, missing.stderr
    d.stop()


def test_restore_defaults_follow_a_database_only_configuration(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict]
) -> None:
    settings = make_settings()
    settings["files"] = {}  # no files.root: the database only
    d = daemon_factory(settings)
    (backup_id,) = backups(d, 1)

    plan = d.request("POST", f"/backups/{backup_id}/restore", {"dry_run": True})
    assert plan.status == 200, plan.body
    assert (plan.json()["database"], plan.json()["files"]) == (True, False)

    proc = run_cli(d.config, "restore", str(backup_id), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] is False

    # Asking for the files explicitly still gets the sentence.
    proc = run_cli(d.config, "restore", str(backup_id), "--files", "--dry-run")
    assert proc.returncode == exits.FAILED, proc.stderr
    assert "files: true needs files.root" in proc.stderr

    proc = run_cli(d.config, "restore", str(backup_id), "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restored" in proc.stdout.splitlines()[-1]
    d.stop()


def test_restore_defaults_with_files_still_restore_both(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory()
    (backup_id,) = backups(d, 1)
    plan = d.request("POST", f"/backups/{backup_id}/restore", {"dry_run": True}).json()
    assert (plan["database"], plan["files"]) == (True, True)
    proc = run_cli(d.config, "restore", str(backup_id), "--no-files", "--dry-run")
    assert json.loads(proc.stdout)["files"] is False
    d.stop()


def test_api_commands_say_when_the_daemon_is_not_running(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> None:
    from tests.conftest import to_toml

    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(make_settings()))
    for command in (["show", "1"], ["snapshots"], ["restores"], ["retrieve", "1"]):
        proc = run_cli(path, *command)
        assert proc.returncode == exits.UNAVAILABLE, (command, proc.stderr)
        assert "the glacierd daemon is not reachable" in proc.stderr
        assert "Traceback" not in proc.stderr
