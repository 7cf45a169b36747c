"""The JSON documents in deploy/ (IAM, SNS and KMS policies, the SNS delivery policy) and
deploy/aws/sns-policies.sh, which fills them in and applies them with the AWS CLI — run
for real against moto when the CLI is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.aws_fixtures import AWS_ENV, aws_client
from tests.daemon import free_port

REPO = Path(__file__).resolve().parent.parent
AWS_DIR = REPO / "deploy" / "aws"
SCRIPT = AWS_DIR / "sns-policies.sh"
PLACEHOLDERS = re.compile(r"TOPIC_ARN|ACCOUNT_ID|BUCKET_NAME|KEY_PREFIX|VAULT_NAME|REGION")
TOPIC_ARN = "arn:aws:sns:eu-central-1:123456789012:glacierd-restores"

DOCUMENTS = sorted((REPO / "deploy").rglob("*.json"))


def load(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_json_document_parses(path: Path) -> None:
    assert isinstance(load(path), dict)


def test_the_documents_are_all_found() -> None:
    names = {p.name for p in DOCUMENTS}
    assert {"sns-delivery-policy.json", "sns-topic-policy.json", "kms-key-policy.json"} <= names
    assert {"s3-policy.json", "vault-policy.json"} <= names


def test_delivery_policy_keeps_retrying_for_most_of_an_hour_within_sns_limits() -> None:
    """SNS's limits for HTTP/S delivery policies: at most 100 retries, delays of 1 to 3,600
    whole seconds with min <= max, phase counts within the total, at most 3,600 s of
    retrying in all. The default (3 retries, 20 s apart) gives up after a minute."""
    policy = load(AWS_DIR / "sns-delivery-policy.json")
    assert set(policy) == {"healthyRetryPolicy"}
    retry = policy["healthyRetryPolicy"]
    counts = ("numRetries", "numNoDelayRetries", "numMinDelayRetries", "numMaxDelayRetries")
    assert all(isinstance(retry[c], int) and retry[c] >= 0 for c in counts)
    assert retry["numRetries"] <= 100
    low, high = retry["minDelayTarget"], retry["maxDelayTarget"]
    assert isinstance(low, int) and isinstance(high, int) and 1 <= low <= high <= 3600
    assert retry["backoffFunction"] in ("linear", "arithmetic", "geometric", "exponential")
    phases = retry["numNoDelayRetries"] + retry["numMinDelayRetries"] + retry["numMaxDelayRetries"]
    backoff = retry["numRetries"] - phases
    assert backoff >= 0
    fixed = retry["numMinDelayRetries"] * low + retry["numMaxDelayRetries"] * high
    shortest, longest = fixed + backoff * low, fixed + backoff * high
    assert longest <= 3600  # SNS refuses a policy that could retry longer than an hour
    assert shortest >= 40 * 60  # an outage of 40 minutes loses no notification


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy["Statement"]}


def test_topic_policy_lets_the_bucket_and_the_vaults_publish() -> None:
    policy = statements(load(AWS_DIR / "sns-topic-policy.json"))
    s3 = policy["S3RestoreEventsFromTheBackupBucket"]
    assert s3["Principal"] == {"Service": "s3.amazonaws.com"} and s3["Action"] == "SNS:Publish"
    # Only this bucket of this account (the confused-deputy conditions).
    assert s3["Condition"]["ArnLike"] == {"aws:SourceArn": "arn:aws:s3:::BUCKET_NAME"}
    assert s3["Condition"]["StringEquals"] == {"aws:SourceAccount": "ACCOUNT_ID"}
    glacier = policy["GlacierJobEventsFromTheAccountsVaults"]
    assert glacier["Principal"] == {"Service": "glacier.amazonaws.com"}
    assert glacier["Condition"] == {"StringEquals": {"AWS:SourceOwner": "ACCOUNT_ID"}}
    # The account keeps managing its topic (set-topic-attributes replaces the whole policy).
    owner = policy["AccountOwnerAccess"]
    assert "SNS:SetTopicAttributes" in owner["Action"]
    assert all(s["Resource"] == "TOPIC_ARN" for s in policy.values())


def test_kms_key_policy_lets_the_publishers_use_the_key_and_the_account_manage_it() -> None:
    policy = statements(load(AWS_DIR / "kms-key-policy.json"))
    root = policy["TheAccountManagesTheKey"]
    # Without it the key could no longer be managed by anyone in the account.
    assert root["Principal"] == {"AWS": "arn:aws:iam::ACCOUNT_ID:root"}
    assert root["Action"] == "kms:*"
    for sid, service in (
        ("S3PublishesToTheEncryptedTopic", "s3.amazonaws.com"),
        ("GlacierPublishesToTheEncryptedTopic", "glacier.amazonaws.com"),
    ):
        statement = policy[sid]
        assert statement["Principal"] == {"Service": service}
        assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
        context = statement["Condition"]["StringEquals"]
        assert context["kms:EncryptionContext:aws:sns:topicArn"] == "TOPIC_ARN"


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )


def shown_documents(stdout: str) -> list[Any]:
    """The documents a dry run prints after its '--- FILE' lines."""
    documents, current = [], None
    for line in stdout.splitlines():
        if line.startswith("--- "):
            current = []
            documents.append(current)
        elif line.startswith("+ ") or line.startswith("(dry run"):
            current = None
        elif current is not None:
            current.append(line)
    return [json.loads("\n".join(lines)) for lines in documents]


def test_dry_run_fills_in_every_placeholder_and_changes_nothing() -> None:
    env = {
        "TOPIC_ARN": TOPIC_ARN,
        "BUCKET": "example-app-backups",
        "SUBSCRIPTION_ARN": TOPIC_ARN + ":0b5c2f7e",
        "KMS_KEY_ID": "arn:aws:kms:eu-central-1:123456789012:key/abcd",
        "PATH": "/usr/bin:/bin",  # without `aws`: a dry run must not need it
    }
    proc = run_script(env, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    topic, delivery, key = shown_documents(proc.stdout)
    for document in (topic, delivery, key):
        assert not PLACEHOLDERS.search(json.dumps(document)), document
    assert statements(topic)["S3RestoreEventsFromTheBackupBucket"]["Condition"]["ArnLike"] == {
        "aws:SourceArn": "arn:aws:s3:::example-app-backups"
    }
    assert delivery == load(AWS_DIR / "sns-delivery-policy.json")
    commands = [line for line in proc.stdout.splitlines() if line.startswith("+ aws")]
    assert [c.split()[2:4] for c in commands] == [
        ["sns", "set-topic-attributes"],
        ["sns", "set-subscription-attributes"],
        ["kms", "put-key-policy"],
        ["sns", "set-topic-attributes"],
    ]
    assert all("--region eu-central-1" in c for c in commands)


def test_vaults_only_leaves_out_the_bucket_statements() -> None:
    proc = run_script({"TOPIC_ARN": TOPIC_ARN, "PATH": "/usr/bin:/bin"}, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    (topic,) = shown_documents(proc.stdout)
    assert set(statements(topic)) == {"AccountOwnerAccess", "GlacierJobEventsFromTheAccountsVaults"}


def test_a_wrong_topic_arn_is_refused_with_a_sentence() -> None:
    proc = run_script({"TOPIC_ARN": "glacierd-restores"}, "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sns-policies.sh: set TOPIC_ARN to the topic's ARN")


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_the_script_applies_the_policies_with_the_aws_cli(moto_server: str) -> None:
    """Against moto: the attribute names and commands are the ones SNS and KMS take."""
    sns, kms = aws_client("sns", moto_server), aws_client("kms", moto_server)
    topic_arn = sns.create_topic(Name=f"glacierd-{uuid.uuid4().hex[:8]}")["TopicArn"]
    # An endpoint nobody listens on: the subscription stays pending, which is all we need.
    endpoint = f"http://127.0.0.1:{free_port()}/sns"
    subscription = sns.subscribe(
        TopicArn=topic_arn, Protocol="http", Endpoint=endpoint, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    key_id = kms.create_key(Description="glacierd topic")["KeyMetadata"]["KeyId"]
    env = {
        **AWS_ENV,
        "AWS_ENDPOINT_URL": moto_server,
        "TOPIC_ARN": topic_arn,
        "BUCKET": "example-app-backups",
        "SUBSCRIPTION_ARN": subscription,
        "KMS_KEY_ID": key_id,
    }
    proc = run_script(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    account = topic_arn.split(":")[4]
    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    topic_policy = json.loads(attributes["Policy"])
    s3 = statements(topic_policy)["S3RestoreEventsFromTheBackupBucket"]
    assert s3["Resource"] == topic_arn
    assert s3["Condition"]["StringEquals"] == {"aws:SourceAccount": account}
    assert attributes["KmsMasterKeyId"] == key_id
    delivery = sns.get_subscription_attributes(SubscriptionArn=subscription)["Attributes"]
    assert json.loads(delivery["DeliveryPolicy"]) == load(AWS_DIR / "sns-delivery-policy.json")
    key_policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert (
        statements(key_policy)["S3PublishesToTheEncryptedTopic"]["Condition"]["StringEquals"][
            "kms:EncryptionContext:aws:sns:topicArn"
        ]
        == topic_arn
    )
