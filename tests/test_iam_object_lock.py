"""The IAM policies grant what Object Lock and SSE-KMS need — and nothing that would let
stolen credentials shorten a lock or lift a hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IAM = Path(__file__).resolve().parent.parent / "deploy" / "iam"


def actions(policy: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        found.update([listed] if isinstance(listed, str) else listed)
    return found


def test_the_s3_policy_grants_the_object_lock_calls_glacierd_makes() -> None:
    granted = actions(json.loads((IAM / "s3-policy.json").read_text()))
    # PutObject/CreateMultipartUpload with a retention date, HeadObject showing the lock,
    # the bucket's lock setting, and deleting an archive's version.
    assert {
        "s3:PutObjectRetention",
        "s3:GetObjectRetention",
        "s3:GetObjectLegalHold",
        "s3:GetBucketObjectLockConfiguration",
        "s3:DeleteObjectVersion",
    } <= granted
    assert (
        not {
            "s3:BypassGovernanceRetention",
            "s3:PutObjectLegalHold",
            "s3:PutBucketObjectLockConfiguration",
            "s3:PutBucketVersioning",
            "s3:*",
        }
        & granted
    )


def test_the_kms_policy_allows_only_encrypting_and_decrypting_through_s3() -> None:
    policy = json.loads((IAM / "s3-kms-policy.json").read_text())
    assert actions(policy) == {"kms:GenerateDataKey", "kms:Decrypt"}
    [statement] = policy["Statement"]
    assert statement["Resource"] == "KMS_KEY_ARN"  # filled in by AWS-SETUP.md's sed
    assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "s3.REGION.amazonaws.com"}}
