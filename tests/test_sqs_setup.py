"""[sqs] settings are checked at load with one sentence each, and deploy/aws/sqs-setup.sh
makes the queue, its policy and the subscription (a dry run; and for real against moto when
the AWS CLI is installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from glacierd.config import ConfigError, config_from_dict
from tests.aws_fixtures import AWS_ENV, aws_client

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "deploy" / "aws" / "sqs-setup.sh"
TOPIC = "arn:aws:sns:eu-central-1:123456789012:glacierd-restores"
QUEUE = "https://sqs.eu-central-1.amazonaws.com/123456789012/glacierd-restores"


def load(**sqs: Any) -> Any:
    return config_from_dict({"database": {"dsn": "postgresql://u@h/db"}, "sqs": sqs}, environ={})


def test_a_good_section_and_the_region_from_the_url() -> None:
    cfg = load(enabled=True, queue_url=QUEUE, topic_arns=[TOPIC])
    assert cfg.sqs.queue_region == "eu-central-1"
    assert load(enabled=True, queue_url=QUEUE, raw_delivery=True).sqs.raw_delivery
    assert not load().sqs.enabled  # off by default, nothing required


@pytest.mark.parametrize(
    ("settings", "sentence"),
    [
        ({"enabled": True, "topic_arns": [TOPIC]}, "sqs.enabled is true but sqs.queue_url is"),
        (
            {"enabled": True, "queue_url": "glacierd-restores", "topic_arns": [TOPIC]},
            "sqs.queue_url 'glacierd-restores' is not an SQS queue URL",
        ),
        ({"enabled": True, "queue_url": QUEUE}, "sqs.topic_arns is empty"),
        ({"topic_arns": ["glacierd"]}, "sqs.topic_arns holds 'glacierd', which is not"),
        ({"wait_time_seconds": 30}, "sqs.wait_time_seconds"),
        (
            {
                "enabled": True,
                "queue_url": QUEUE,
                "topic_arns": [TOPIC],
                "cert_url_override": "http://127.0.0.1:5000",
            },
            "sqs.cert_url_override is for tests only",
        ),
    ],
)
def test_wrong_settings_get_one_sentence(settings: dict[str, Any], sentence: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(**settings)
    assert sentence in str(raised.value)


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )


def printed_section(stdout: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(stdout.split("[sqs]", 1)[1].split("(dry run", 1)[0])


def test_dry_run_shows_the_queue_its_policy_and_the_subscription() -> None:
    proc = run_script({"TOPIC_ARN": TOPIC, "PATH": "/usr/bin:/bin"}, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stderr.splitlines() if line.startswith("+ aws")]
    assert [c.split()[1:3] for c in commands] == [
        ["sqs", "create-queue"],
        ["sqs", "create-queue"],
        ["sqs", "set-queue-attributes"],
        ["sns", "subscribe"],
    ]
    assert "--queue-name glacierd-restores-dead" in commands[0]
    assert "RawMessageDelivery" not in commands[3]
    policy = json.loads(proc.stdout.split("queue-policy.json\n", 1)[1].split("\n\n", 1)[0])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": TOPIC}}
    assert statement["Resource"] == "arn:aws:sqs:eu-central-1:123456789012:glacierd-restores"
    section = printed_section(proc.stdout)
    assert section == {
        "enabled": True,
        "queue_url": QUEUE,
        "topic_arns": [TOPIC],
        "raw_delivery": False,
    }
    # What it prints is a valid [sqs] section.
    assert load(**section).sqs.queue_region == "eu-central-1"


def test_a_wrong_topic_arn_is_refused() -> None:
    proc = run_script({"TOPIC_ARN": "glacierd"}, "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.startswith("sqs-setup.sh: set TOPIC_ARN to the topic's ARN")


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_the_script_makes_a_queue_that_receives_the_topics_messages(moto_server: str) -> None:
    sns, sqs = aws_client("sns", moto_server), aws_client("sqs", moto_server)
    topic = sns.create_topic(Name=f"glacierd-{uuid.uuid4().hex[:8]}")["TopicArn"]
    proc = run_script({**AWS_ENV, "ENDPOINT_URL": moto_server, "TOPIC_ARN": topic})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    url = printed_section(proc.stdout)["queue_url"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == "1209600"
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 4
    policy = json.loads(attributes["Policy"])
    assert policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] == topic
    sns.publish(TopicArn=topic, Message="hello")
    (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["TopicArn"] == topic and envelope["Message"] == "hello"
    assert envelope["Signature"]
