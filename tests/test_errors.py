"""The one error shape: detail and fix as fields, the sentence built from them, and each
renderer (the control API, its client in the CLI, doctor) using the fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from glacierd.api import client
from glacierd.api.client import ApiError
from glacierd.catalog.pool import CatalogError
from glacierd.config import ConfigError, ConfigProblem, config_from_dict
from glacierd.errors import GlacierdError, sentence
from glacierd.operations.errors import EXPECTED, OperationError
from glacierd.sources.database import DatabaseSourceError, find_tool
from glacierd.stores.base import StoreError
from tests.aws_fixtures import AWS_ENV, REGION, aws_client


def test_the_sentence_joins_detail_and_fix() -> None:
    error = StoreError("S3 bucket b does not exist", "create it or correct store.s3.bucket")
    assert str(error) == "S3 bucket b does not exist; create it or correct store.s3.bucket."
    assert (error.detail, error.fix) == (
        "S3 bucket b does not exist",
        "create it or correct store.s3.bucket",
    )
    assert error.fields() == {
        "detail": "S3 bucket b does not exist",
        "fix": "create it or correct store.s3.bucket",
    }
    # A fix that ends a question or already has its full stop gets no second one.
    assert (
        sentence("unknown key", "did you mean [database]?")
        == "unknown key; did you mean [database]?"
    )
    assert sentence("it failed", "retry later.") == "it failed; retry later."


def test_a_sentence_written_whole_is_kept_as_it_is() -> None:
    # Errors raised with one sentence keep it exactly, full stop or not.
    assert str(OperationError("backup 9 does not exist; GET /backups lists the ids.")) == (
        "backup 9 does not exist; GET /backups lists the ids."
    )
    assert str(DatabaseSourceError("pg_dump exited with code 1: boom")) == (
        "pg_dump exited with code 1: boom"
    )
    whole = CatalogError("the catalog is gone.")
    assert whole.fix is None and whole.fields() == {"detail": "the catalog is gone", "fix": None}


def test_every_expected_error_and_config_errors_share_the_base() -> None:
    for kind in EXPECTED:
        assert issubclass(kind, GlacierdError), kind
    single = ConfigError("api.port 0 is out of range", "use a port between 1 and 65535")
    assert isinstance(single, GlacierdError)
    assert str(single) == "api.port 0 is out of range; use a port between 1 and 65535."
    several = ConfigError.of(
        [ConfigProblem("a is wrong", "fix a", "a"), ConfigProblem("b is wrong", "fix b", "b")]
    )
    assert (several.detail, several.fix) == (
        "the configuration has 2 problems",
        "correct each one as its line says, then run glacierd check-config again",
    )
    assert str(several).splitlines() == [
        "the configuration has 2 problems:",
        "  a is wrong; fix a.",
        "  b is wrong; fix b.",
    ]


def test_a_missing_tool_says_what_and_what_to_do_apart() -> None:
    with pytest.raises(DatabaseSourceError) as info:
        find_tool("no-such-pg_dump-here", "database.pg_dump")
    assert info.value.detail == "no-such-pg_dump-here was not found"
    assert info.value.fix == (
        "install it with 'apt-get install postgresql-client' "
        "(or set database.pg_dump to its full path)"
    )
    assert str(info.value) == f"{info.value.detail}; {info.value.fix}."


# ------------------------------------------------- the API and its client, on a real daemon


async def test_a_store_error_reaches_api_and_cli_with_detail_and_fix(
    daemon_factory: Callable, make_settings: Callable, moto_server: str, s3_bucket: str
) -> None:
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {"bucket": s3_bucket, "endpoint_url": moto_server, "region": REGION},
        },
        schedule={"enabled": False, "poll_interval_seconds": 3600},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert backup["status"] == "completed", backup
    # The bucket goes away (deleted by hand, or store.s3.bucket points elsewhere).
    s3 = aws_client("s3", moto_server)
    for obj in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []):
        s3.delete_object(Bucket=s3_bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=s3_bucket)

    detail = f"S3 bucket {s3_bucket} does not exist"
    fix = "create it or correct store.s3.bucket"
    r = d.request("POST", f"/backups/{backup['id']}/retrieve", {})
    assert (r.status, r.json()) == (
        502,
        {"error": f"{detail}; {fix}.", "status": 502, "detail": detail, "fix": fix},
    )
    # The CLI's client keeps the fields the daemon sent apart.
    with pytest.raises(ApiError) as info:
        await client.call(config_from_dict(settings), "POST", f"/backups/{backup['id']}/retrieve")
    assert (info.value.status, info.value.detail, info.value.fix) == (502, detail, fix)
    assert str(info.value) == f"{detail}; {fix}."
    # An error written as one sentence keeps its old shape: no detail or fix to add.
    r = d.request("GET", "/backups/999")
    assert r.status == 404 and set(r.json()) == {"error", "status"}
    d.stop()
