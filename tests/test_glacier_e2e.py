"""The whole asynchronous lifecycle against moto, driven over HTTP on the real daemon process.

backup → POST /backups/{id}/retrieve → pending → ready (by a signed SNS notification, or by
polling alone) → automatic download → local, with the SHA-256 verified — for the S3 store
and for the vault store.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.aws_fixtures import (
    AWS_ENV,
    REGION,
    aws_client,
    notify_restores,
    sns_settings,
    subscribe,
)
from tests.daemon import free_port, http

client = aws_client


@pytest.fixture
def topic(moto_server: str) -> str:
    return client("sns", moto_server).create_topic(Name=f"glacierd-{uuid.uuid4().hex[:8]}")[
        "TopicArn"
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive(detail: dict[str, Any], kind: str, path: str | None = None) -> dict[str, Any]:
    return next(a for a in detail["archives"] if a["kind"] == kind and a["path"] == path)


def statuses(d, backup_id: int) -> dict[str | None, str]:
    detail = d.request("GET", f"/backups/{backup_id}").json()
    return {a["path"]: a["status"] for a in detail["archives"]}


def backup_and_lose_a_file(d, files_root: Path) -> tuple[dict[str, Any], Path, bytes]:
    detail = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert detail["status"] == "completed", detail
    lost = files_root / "ab" / "ef" / "abef5678"
    original = lost.read_bytes()
    lost.unlink()
    return detail, lost, original


def check_fetched(tmp_path: Path, detail: dict[str, Any], lost_rel: str, original: bytes) -> None:
    fetched = tmp_path / "state" / "fetched"
    db = archive(detail, "database")
    f = archive(detail, "file", lost_rel)
    assert sha256(fetched / f"archive-{db['id']}") == db["sha256"]
    assert (fetched / f"archive-{f['id']}").read_bytes() == original
    # Files that were on disk were never retrieved nor downloaded.
    for a in detail["archives"]:
        if a["kind"] == "file" and a["path"] != lost_rel:
            assert not (fetched / f"archive-{a['id']}").exists()


def test_s3_restore_completed_by_signed_sns_notification(
    daemon_factory, make_settings, moto_server, s3_bucket, topic, files_root, tmp_path
):
    s3 = client("s3", moto_server)
    # The bucket tells SNS when a restore completes; SNS posts it, signed, to glacierd.
    notify_restores(moto_server, s3_bucket, topic)
    sns_port = free_port()
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {
                "bucket": s3_bucket,
                "endpoint_url": moto_server,
                "region": REGION,
                "prefix": "prod/",
            },
        },
        sns=sns_settings(sns_port, topic, moto_server),
        schedule={"enabled": False, "poll_interval_seconds": 3600},  # no polling help
    )
    d = daemon_factory(settings, env=AWS_ENV)
    subscribe(moto_server, topic, sns_port)
    detail, _, original = backup_and_lose_a_file(d, files_root)
    db = archive(detail, "database")
    head = s3.head_object(Bucket=s3_bucket, Key="prod/" + db["key"])
    assert head["StorageClass"] == "GLACIER"

    r = d.request("POST", f"/backups/{detail['id']}/retrieve", {"tier": "Bulk"})
    assert r.status == 202, r.body
    assert r.json()["requested"] == 2 and r.json()["on_disk"] == 2
    st = statuses(d, detail["id"])
    assert st[None] == "pending" and st["ab/ef/abef5678"] == "pending"
    assert st["ab/cd/abcd1234"] == "exists"
    pending = archive(d.request("GET", f"/backups/{detail['id']}").json(), "database")
    assert pending["expected_ready_at"] is not None and pending["retrieval_tier"] == "Bulk"
    # Nothing moves without news: polling is hourly (its one run at start found nothing
    # pending), so only the notification may make these archives ready — checked against
    # the daemon's log below, not by waiting a while and looking.
    lost_file = archive(detail, "file", "ab/ef/abef5678")

    # Glacier finishes (moto completes a restore when the object is next looked at): S3
    # emits ObjectRestore:Completed, SNS delivers it signed, glacierd downloads by itself.
    for a in (db, lost_file):
        s3.head_object(Bucket=s3_bucket, Key="prod/" + a["key"])
    d.wait_for(
        lambda: set(statuses(d, detail["id"]).values()) == {"local", "exists"},
        timeout=30,
        what="archives to become local",
    )
    check_fetched(tmp_path, detail, "ab/ef/abef5678", original)
    # After our request made them pending, the only news that moved these archives was the
    # notification (the verified download then made them local): no poll, no request's
    # answer, nothing else.
    moves = sorted(
        (e["archive_id"], e["old"], e["new"], e["source"])
        for e in d.events()
        if e.get("event") == "archive.status_changed"
    )
    assert moves == sorted((a["id"], "pending", "ready", "sns") for a in (db, lost_file)), moves
    d.stop()


def test_s3_restore_found_by_polling_alone_and_tampered_copy_refused(
    daemon_factory, make_settings, moto_server, s3_bucket, files_root, tmp_path
):
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {"bucket": s3_bucket, "endpoint_url": moto_server, "region": REGION},
        },
        schedule={"enabled": False, "poll_interval_seconds": 0.5},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    detail, _, original = backup_and_lose_a_file(d, files_root)
    # Someone overwrites the database archive in the bucket with other bytes.
    db = archive(detail, "database")
    s3 = client("s3", moto_server)
    s3.put_object(Bucket=s3_bucket, Key=db["key"], Body=b"PGDMP tampered", StorageClass="GLACIER")

    assert d.request("POST", f"/backups/{detail['id']}/retrieve").status == 202
    d.wait_for(
        lambda: statuses(d, detail["id"])["ab/ef/abef5678"] == "local",
        timeout=30,
        what="the lost file to be fetched by polling",
    )
    f = archive(d.request("GET", f"/backups/{detail['id']}").json(), "file", "ab/ef/abef5678")
    assert (tmp_path / "state/fetched" / f"archive-{f['id']}").read_bytes() == original

    def refused() -> dict[str, Any] | None:
        a = archive(d.request("GET", f"/backups/{detail['id']}").json(), "database")
        return a if a["retrieval_error"] else None

    bad = d.wait_for(refused, timeout=30, what="the tampered download to be refused")
    assert bad["status"] == "ready" and "failed verification" in bad["retrieval_error"]
    assert not (tmp_path / "state/fetched" / f"archive-{db['id']}").exists()
    assert not list((tmp_path / "state/fetched").glob("*.glacierd-partial"))
    assert any(e.get("event") == "fetch.verification_failed" for e in d.events())
    assert not any(e.get("source") == "sns" for e in d.events())
    d.stop()


@pytest.fixture
def vault_server(vault_moto: str) -> str:
    """moto with the Glacier multipart calls it lacks (see tests/test_store_vault.py)."""
    return vault_moto


@pytest.fixture
def vault(vault_server: str) -> str:
    name = f"glacierd-{uuid.uuid4().hex[:8]}"
    client("glacier", vault_server).create_vault(vaultName=name)
    return name


@pytest.fixture
def vault_topic(vault_server: str) -> str:
    return client("sns", vault_server).create_topic(Name=f"glacierd-{uuid.uuid4().hex[:8]}")[
        "TopicArn"
    ]


def vault_store(vault_name: str, moto: str, topic_arn: str | None = None) -> dict[str, Any]:
    cfg = {"vault": vault_name, "endpoint_url": moto, "region": REGION, "default_tier": "Expedited"}
    if topic_arn:
        cfg["sns_topic"] = topic_arn
    return {"type": "vault", "vault": cfg}


def test_vault_job_completed_by_signed_sns_notification(
    daemon_factory, make_settings, vault_server, vault, vault_topic, files_root, tmp_path
):
    moto_server, topic = vault_server, vault_topic
    sns_port = free_port()
    settings = make_settings(
        store=vault_store(vault, moto_server, topic),
        sns=sns_settings(sns_port, topic, moto_server),
        schedule={"enabled": False, "poll_interval_seconds": 3600},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    subscribe(moto_server, topic, sns_port)
    detail, _, original = backup_and_lose_a_file(d, files_root)
    assert d.request("POST", f"/backups/{detail['id']}/retrieve").status == 202
    glacier = client("glacier", moto_server)
    pending = d.request("GET", f"/backups/{detail['id']}").json()
    jobs = [a for a in pending["archives"] if a["status"] == "pending"]
    assert len(jobs) == 2
    # Glacier finishes the jobs (moto: Expedited after 2 s) and publishes each job's
    # DescribeJob JSON to the vault's topic; SNS signs and posts it to glacierd.
    job_list = glacier.list_jobs(vaultName=vault)["JobList"]
    assert len(job_list) == 2
    for job in job_list:
        deadline = time.monotonic() + 20
        while True:
            desc = glacier.describe_job(vaultName=vault, jobId=job["JobId"])
            if desc["StatusCode"] == "Succeeded" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        desc.pop("ResponseMetadata")
        message = json.dumps(desc, default=str)
        client("sns", moto_server).publish(TopicArn=topic, Message=message)
        # At-least-once delivery: the same news twice changes nothing more.
        client("sns", moto_server).publish(TopicArn=topic, Message=message)
    d.wait_for(
        lambda: set(statuses(d, detail["id"]).values()) == {"local", "exists"},
        timeout=30,
        what="vault archives to become local",
    )
    check_fetched(tmp_path, detail, "ab/ef/abef5678", original)
    ready = [
        e
        for e in d.events()
        if e.get("event") == "archive.status_changed" and e.get("new") == "ready"
    ]
    assert len(ready) == 2 and {e["source"] for e in ready} == {"sns"}
    d.stop()


def test_vault_job_found_by_polling_alone(
    daemon_factory, make_settings, vault_server, vault, files_root, tmp_path
):
    moto_server = vault_server
    settings = make_settings(
        store=vault_store(vault, moto_server),
        schedule={"enabled": False, "poll_interval_seconds": 0.5},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    detail, _, original = backup_and_lose_a_file(d, files_root)
    assert (
        d.request("POST", f"/backups/{detail['id']}/retrieve", {"tier": "Expedited"}).status == 202
    )
    assert statuses(d, detail["id"])[None] == "pending"
    d.wait_for(
        lambda: set(statuses(d, detail["id"]).values()) == {"local", "exists"},
        timeout=40,
        what="vault archives to become local by polling",
    )
    check_fetched(tmp_path, detail, "ab/ef/abef5678", original)
    d.stop()


def test_forged_and_malformed_sns_messages_change_nothing(
    daemon_factory, make_settings, moto_server, s3_bucket, topic, files_root
):
    sns_port = free_port()
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {"bucket": s3_bucket, "endpoint_url": moto_server, "region": REGION},
        },
        sns=sns_settings(sns_port, topic, moto_server),
        schedule={"enabled": False, "poll_interval_seconds": 3600},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    detail, _, _ = backup_and_lose_a_file(d, files_root)
    d.request("POST", f"/backups/{detail['id']}/retrieve")
    before = statuses(d, detail["id"])
    db = archive(detail, "database")
    record = {
        "Records": [
            {
                "eventName": "ObjectRestore:Completed",
                "eventTime": "2026-11-26T00:00:00.000Z",
                "s3": {
                    "bucket": {"name": s3_bucket},
                    "object": {"key": db["key"], "size": db["size"]},
                },
            }
        ]
    }
    forged = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(record),
        "Timestamp": "2026-11-26T00:00:00.000Z",
        "SignatureVersion": "2",
        "Signature": "Zm9yZ2Vk",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    }
    url = f"http://127.0.0.1:{sns_port}/sns"
    cases = [
        (json.dumps(forged), 403),  # wrongly signed (or stale)
        (json.dumps({k: v for k, v in forged.items() if k != "Signature"}), 400),  # unsigned
        (json.dumps({**forged, "TopicArn": "arn:aws:sns:us-east-1:123456789012:other"}), 403),
        ("{not json", 400),
        (json.dumps({**forged, "SigningCertURL": "https://evil.example.com/cert.pem"}), 403),
    ]
    for raw, status in cases:
        r = http(
            "POST",
            url,
            raw,
            {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"},
        )
        assert r.status == status, (raw[:80], r.status, r.body)
        assert "error" in r.json()
    assert statuses(d, detail["id"]) == before
    rejected = [e for e in d.events() if e.get("event") == "sns.rejected"]
    assert len(rejected) == len(cases) and all(e["reason"] for e in rejected)
    d.stop()


def test_control_api_refuses_bad_retrieve_requests(daemon_factory):
    d = daemon_factory()
    b = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert d.request("POST", f"/backups/{b['id']}/retrieve", {"tier": "Fast"}).status == 400
    assert d.request("POST", "/backups/999/retrieve").status == 404
    r = d.request("POST", f"/backups/{b['id']}/retrieve", raw="[]")
    assert r.status == 400 and "JSON object" in r.json()["error"]
    d.stop()


def test_local_vault_with_delay_behaves_like_glacier(
    daemon_factory, make_settings, files_root, tmp_path
):
    d = daemon_factory(
        make_settings(
            store={
                "type": "local",
                "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 5},
            },
            schedule={"enabled": False, "poll_interval_seconds": 0.5},
        )
    )
    detail, _, original = backup_and_lose_a_file(d, files_root)
    assert d.request("POST", f"/backups/{detail['id']}/retrieve").status == 202
    assert statuses(d, detail["id"])[None] == "pending"
    d.wait_for(
        lambda: set(statuses(d, detail["id"]).values()) == {"local", "exists"},
        timeout=20,
        what="the local vault's retrieval",
    )
    check_fetched(tmp_path, detail, "ab/ef/abef5678", original)
    assert os.path.exists(tmp_path / "vault" / ".retrievals")
    d.stop()
