"""moto's Glacier vault API, completed where glacierd depends on it (a pytest plugin).

moto 5.2.5 implements only part of the vault API, so ``_extend_moto`` adds, for the test
session and with AWS's behaviour: multipart uploads (initiate, parts, complete, abort, list —
checking byte ranges, part sizes, per-part and whole-archive tree hashes and the payload
SHA-256), tree-hash checks on UploadArchive, the ``x-amz-sha256-tree-hash`` header on job
output, and ResourceNotFoundException for unknown jobs and archives (moto answers 500).

Registered once in conftest.py, so every test module shares one ``vault_moto`` server.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.utils import calculate_tree_hash
from moto.core.exceptions import JsonRESTError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.glacier import urls as glacier_urls
from moto.glacier.models import Vault
from moto.glacier.responses import GlacierResponse

from tests.aws_fixtures import running_moto

MIB = 1024 * 1024
REGION = "us-east-1"

# -- moto, completed where the Glacier vault API matters here ---------------------------

CALLS: list[str] = []  # operations the extension handled, for asserting which path ran
FAIL_PART_AT: set[int] = set()  # part offsets to reject (an AWS failure mid-upload)
LIST_PAGE_SIZE = 2  # small pages so the store has to follow Marker


class _NotFound(JsonRESTError):
    code = 404

    def __init__(self, message: str) -> None:
        super().__init__("ResourceNotFoundException", message)


class _Invalid(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("InvalidParameterValueException", message)


def _tree(data: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(data))


def _path_parts(resp: GlacierResponse) -> list[str]:
    return resp.parsed_url.path.split("/")


def _vault_of(resp: GlacierResponse) -> Vault:
    parts = _path_parts(resp)
    return resp.glacier_backend.describe_vault(parts[parts.index("vaults") + 1])


def _uploads(vault: Vault) -> dict[str, dict[str, Any]]:
    if not hasattr(vault, "glacierd_uploads"):
        vault.glacierd_uploads = {}  # type: ignore[attr-defined]
    return vault.glacierd_uploads  # type: ignore[attr-defined]


def _check_payload(resp: GlacierResponse, body: bytes) -> str:
    if resp.headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
        raise _Invalid("x-amz-content-sha256 does not match the payload")
    tree = _tree(body)
    if resp.headers.get("x-amz-sha256-tree-hash") != tree:
        raise _Invalid("Checksum mismatch: x-amz-sha256-tree-hash differs from the payload")
    return tree


def _initiate_multipart_upload(self: GlacierResponse) -> Any:
    CALLS.append("initiate_multipart_upload")
    vault = _vault_of(self)
    part_size = int(self.headers["x-amz-part-size"])
    mibs = part_size // MIB
    if part_size % MIB or mibs & (mibs - 1):
        raise _Invalid(f"invalid part size {part_size}")
    upload_id = uuid.uuid4().hex
    _uploads(vault)[upload_id] = {
        "part_size": part_size,
        "description": self.headers.get("x-amz-archive-description") or "",
        "parts": {},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    location = f"/{DEFAULT_ACCOUNT_ID}/vaults/{vault.vault_name}/multipart-uploads/{upload_id}"
    return 201, {"status": 201, "x-amz-multipart-upload-id": upload_id, "Location": location}, ""


def _upload_of(self: GlacierResponse) -> tuple[Vault, str, dict[str, Any]]:
    vault = _vault_of(self)
    upload_id = _path_parts(self)[-1]
    upload = _uploads(vault).get(upload_id)
    if upload is None:
        raise _NotFound(f"The upload ID was not found: {upload_id}")
    return vault, upload_id, upload


def _upload_multipart_part(self: GlacierResponse) -> Any:
    CALLS.append("upload_multipart_part")
    _, _, upload = _upload_of(self)
    body = self.body
    match = re.fullmatch(r"bytes (\d+)-(\d+)/\*", self.headers.get("Content-Range", ""))
    if not match:
        raise _Invalid(f"bad Content-Range {self.headers.get('Content-Range')!r}")
    start, end = int(match[1]), int(match[2])
    if start in FAIL_PART_AT:
        raise _Invalid("injected failure")
    if (
        end - start + 1 != len(body)
        or start % upload["part_size"]
        or len(body) > upload["part_size"]
    ):
        raise _Invalid(f"range {start}-{end} does not fit part size {upload['part_size']}")
    tree = _check_payload(self, body)
    upload["parts"][start] = body
    return 204, {"status": 204, "x-amz-sha256-tree-hash": tree}, ""


def _complete_multipart_upload(self: GlacierResponse) -> Any:
    CALLS.append("complete_multipart_upload")
    vault, upload_id, upload = _upload_of(self)
    starts = sorted(upload["parts"])
    expected = 0
    for i, start in enumerate(starts):
        part = upload["parts"][start]
        if start != expected or (i < len(starts) - 1 and len(part) != upload["part_size"]):
            raise _Invalid("parts are not contiguous and equal-sized")
        expected += len(part)
    body = b"".join(upload["parts"][s] for s in starts)
    if len(body) != int(self.headers["x-amz-archive-size"]):
        raise _Invalid("archive size mismatch")
    tree = _tree(body)
    if self.headers.get("x-amz-sha256-tree-hash") != tree:
        raise _Invalid("Checksum mismatch: the archive tree hash is wrong")
    archive = vault.create_archive(body, upload["description"])
    del _uploads(vault)[upload_id]
    return (
        201,
        {"status": 201, "x-amz-archive-id": archive["archive_id"], "x-amz-sha256-tree-hash": tree},
        "",
    )


def _abort_multipart_upload(self: GlacierResponse) -> Any:
    CALLS.append("abort_multipart_upload")
    vault, upload_id, _ = _upload_of(self)
    del _uploads(vault)[upload_id]
    return 204, {"status": 204}, ""


def _list_multipart_uploads(self: GlacierResponse) -> Any:
    vault = _vault_of(self)
    ids = sorted(_uploads(vault))
    marker = self.querystring.get("marker", [None])[0]
    first = ids.index(marker) if marker in ids else 0
    page = ids[first : first + LIST_PAGE_SIZE]
    rest = ids[first + LIST_PAGE_SIZE :]
    body = {
        "UploadsList": [
            {
                "MultipartUploadId": i,
                "VaultARN": vault.arn,
                "ArchiveDescription": _uploads(vault)[i]["description"],
                "PartSizeInBytes": _uploads(vault)[i]["part_size"],
                "CreationDate": _uploads(vault)[i]["created"],
            }
            for i in page
        ],
        "Marker": rest[0] if rest else None,
    }
    return 200, {"content-type": "application/json"}, json.dumps(body)


def _extend_moto(mp: pytest.MonkeyPatch) -> None:
    original_upload_archive = GlacierResponse.upload_archive
    original_create_archive = Vault.create_archive
    original_describe_job = GlacierResponse.describe_job
    original_delete_archive = GlacierResponse.delete_archive

    def upload_archive(self: GlacierResponse) -> Any:
        CALLS.append("upload_archive")
        _check_payload(self, self.body)
        return original_upload_archive(self)

    def create_archive(self: Vault, body: bytes, description: str) -> dict[str, Any]:
        archive = original_create_archive(self, body, description)
        archive["tree_hash"] = _tree(body)  # what Glacier recorded at upload
        return archive

    def describe_job(self: GlacierResponse) -> Any:
        parts = _path_parts(self)
        if self.glacier_backend.describe_job(parts[-3], parts[-1]) is None:
            raise _NotFound(f"The job ID was not found: {parts[-1]}")
        return original_describe_job(self)

    def get_job_output(self: GlacierResponse) -> Any:
        parts = _path_parts(self)
        vault = self.glacier_backend.describe_vault(parts[-4])
        job = vault.describe_job(parts[-2])
        if job is None:
            raise _NotFound(f"The job ID was not found: {parts[-2]}")
        if not vault.job_ready(parts[-2]):
            raise _Invalid("The job is not currently available for download")
        archive = vault.archives[job.archive_id]  # type: ignore[attr-defined]
        headers = {"content-type": "application/octet-stream"}
        headers["x-amz-sha256-tree-hash"] = archive["tree_hash"]
        return 200, headers, archive["body"]

    def delete_archive(self: GlacierResponse) -> Any:
        parts = _path_parts(self)
        if parts[-1] not in self.glacier_backend.describe_vault(parts[-3]).archives:
            raise _NotFound("Archive not found")
        return original_delete_archive(self)

    for name, method in {
        "upload_archive": upload_archive,
        "describe_job": describe_job,
        "get_job_output": get_job_output,
        "delete_archive": delete_archive,
        "initiate_multipart_upload": _initiate_multipart_upload,
        "upload_multipart_part": _upload_multipart_part,
        "complete_multipart_upload": _complete_multipart_upload,
        "abort_multipart_upload": _abort_multipart_upload,
        "list_multipart_uploads": _list_multipart_uploads,
    }.items():
        mp.setattr(GlacierResponse, name, method, raising=False)
    mp.setattr(Vault, "create_archive", create_archive)
    paths = dict(glacier_urls.url_paths)
    base = "{0}/(?P<account_number>.+)/vaults/(?P<vault_name>[^/]+)/multipart-uploads"
    paths[base + "$"] = GlacierResponse.dispatch
    paths[base + "/(?P<upload_id>[^/]+)$"] = GlacierResponse.dispatch
    mp.setattr(glacier_urls, "url_paths", paths)


@pytest.fixture(scope="session")
def vault_moto() -> Iterator[str]:
    """An in-process moto server with the vault API completed; yields its endpoint URL."""
    mp = pytest.MonkeyPatch()
    _extend_moto(mp)
    try:
        with running_moto() as url:
            yield url
    finally:
        mp.undo()
