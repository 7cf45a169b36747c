#!/usr/bin/env bash
# Create the SQS queue that glacierd long-polls for retrieval notifications, for hosts that
# accept no connections from the internet (deploy/AWS-SETUP.md, "Notifications through
# SQS"), with the AWS CLI:
#   - a dead-letter queue NAME-dead (14 days' retention) for messages glacierd could not
#     apply (unless DEAD_LETTER=false);
#   - the queue NAME: 14 days' retention, 20 s long polls, a 60 s visibility timeout, and a
#     redrive policy that moves a message to the dead-letter queue after 4 receives (below
#     glacierd's [sqs] max_receives, 5);
#   - its access policy: only the topic may send (sqs-queue-policy.json, aws:SourceArn);
#   - the topic's subscription to the queue (raw message delivery when RAW=true);
# then prints the [sqs] section for glacierd.toml. Grant glacierd's credentials
# sqs-consumer-policy.json (filled in with the queue's ARN).
#
#   TOPIC_ARN=arn:aws:sns:eu-central-1:123456789012:glacierd-restores \
#   QUEUE_NAME=glacierd-restores \      # default: the topic's name
#   RAW=false DEAD_LETTER=true \         # the defaults
#   ENDPOINT_URL=https://… \             # optional: another SQS/SNS endpoint (tests)
#   deploy/aws/sqs-setup.sh [--dry-run]
#
# The account and region come from the topic's ARN. --dry-run prints the documents and the
# commands and changes nothing.
set -euo pipefail

die() {
    printf 'sqs-setup.sh: %s\n' "$*" >&2
    exit 1
}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DRY_RUN=false
case "${1:-}" in
    "") ;;
    --dry-run) DRY_RUN=true ;;
    -h | --help)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1'; see --help" ;;
esac

TOPIC_ARN="${TOPIC_ARN:-}"
[[ "$TOPIC_ARN" =~ ^arn:aws[a-z-]*:sns:([a-z0-9-]+):([0-9]{12}):([A-Za-z0-9_-]+)$ ]] \
    || die "set TOPIC_ARN to the topic's ARN (arn:aws:sns:REGION:ACCOUNT_ID:NAME); got '$TOPIC_ARN'"
REGION="${BASH_REMATCH[1]}"
ACCOUNT_ID="${BASH_REMATCH[2]}"
QUEUE_NAME="${QUEUE_NAME:-${BASH_REMATCH[3]}}"
RAW="${RAW:-false}"
DEAD_LETTER="${DEAD_LETTER:-true}"
ENDPOINT=()
if [ -n "${ENDPOINT_URL:-}" ]; then
    ENDPOINT=(--endpoint-url "$ENDPOINT_URL")
fi
[[ "$QUEUE_NAME" =~ ^[A-Za-z0-9_-]{1,75}$ ]] || die "QUEUE_NAME '$QUEUE_NAME' is not a valid queue name"
[[ "$RAW" =~ ^(true|false)$ ]] || die "RAW must be true or false; got '$RAW'"
[[ "$DEAD_LETTER" =~ ^(true|false)$ ]] || die "DEAD_LETTER must be true or false; got '$DEAD_LETTER'"
command -v python3 >/dev/null || die "python3 is needed to fill in the documents"
$DRY_RUN || command -v aws >/dev/null || die "the AWS CLI (aws) is not installed"

WORK="$(mktemp -d)"
trap 'rm -rf -- "$WORK"' EXIT

run() {
    printf '+ %s\n' "$*" >&2
    $DRY_RUN || "$@"
}
show() {
    printf -- '--- %s\n' "$1"
    cat "$1"
    printf '\n'
}
# queue NAME ATTRIBUTES_FILE → its URL (printed)
queue() {
    if $DRY_RUN; then
        run aws "${ENDPOINT[@]}" sqs create-queue --region "$REGION" --queue-name "$1" --attributes "file://$2"
        printf 'https://sqs.%s.amazonaws.com/%s/%s\n' "$REGION" "$ACCOUNT_ID" "$1"
    else
        run aws "${ENDPOINT[@]}" sqs create-queue --region "$REGION" --queue-name "$1" --attributes "file://$2" \
            --query QueueUrl --output text
    fi
}
queue_arn() { # URL NAME
    if $DRY_RUN; then
        printf 'arn:aws:sqs:%s:%s:%s\n' "$REGION" "$ACCOUNT_ID" "$2"
    else
        aws "${ENDPOINT[@]}" sqs get-queue-attributes --region "$REGION" --queue-url "$1" \
            --attribute-names QueueArn --query Attributes.QueueArn --output text
    fi
}
# attributes FILE [DEAD_LETTER_ARN]: the queue's settings as create-queue takes them.
attributes() {
    python3 - "$1" "${2:-}" <<'PY'
import json, sys

output, dead_letter = sys.argv[1:]
attributes = {
    "MessageRetentionPeriod": "1209600",  # 14 days, SQS's longest
    "ReceiveMessageWaitTimeSeconds": "20",
    "VisibilityTimeout": "60",
}
if dead_letter:
    attributes["RedrivePolicy"] = json.dumps(
        {"deadLetterTargetArn": dead_letter, "maxReceiveCount": 4}
    )
json.dump(attributes, open(output, "w"), indent=2)
PY
}

dead_letter_arn=""
if [ "$DEAD_LETTER" = true ]; then
    attributes "$WORK/dead-letter.json"
    dead_letter_url="$(queue "$QUEUE_NAME-dead" "$WORK/dead-letter.json")"
    dead_letter_arn="$(queue_arn "$dead_letter_url" "$QUEUE_NAME-dead")"
fi
attributes "$WORK/queue.json" "$dead_letter_arn"
$DRY_RUN && show "$WORK/queue.json"
queue_url="$(queue "$QUEUE_NAME" "$WORK/queue.json")"
arn="$(queue_arn "$queue_url" "$QUEUE_NAME")"

# The access policy, as the Policy attribute (a JSON document inside a JSON string).
python3 - "$HERE/sqs-queue-policy.json" "$WORK" "$arn" "$TOPIC_ARN" <<'PY'
import json, sys

template, work, queue_arn, topic_arn = sys.argv[1:]
policy = json.loads(open(template).read().replace("QUEUE_ARN", queue_arn).replace("TOPIC_ARN", topic_arn))
json.dump(policy, open(f"{work}/queue-policy.json", "w"), indent=2)
json.dump({"Policy": json.dumps(policy)}, open(f"{work}/policy-attribute.json", "w"))
PY
$DRY_RUN && show "$WORK/queue-policy.json"
run aws "${ENDPOINT[@]}" sqs set-queue-attributes --region "$REGION" --queue-url "$queue_url" \
    --attributes "file://$WORK/policy-attribute.json"

subscribe=(aws "${ENDPOINT[@]}" sns subscribe --region "$REGION" --topic-arn "$TOPIC_ARN" --protocol sqs
    --notification-endpoint "$arn")
if [ "$RAW" = true ]; then
    subscribe+=(--attributes RawMessageDelivery=true)
fi
run "${subscribe[@]}" >/dev/null

cat <<EOF

# For glacierd.toml (grant glacierd's credentials deploy/aws/sqs-consumer-policy.json with
# $arn):
[sqs]
enabled = true
queue_url = "$queue_url"
topic_arns = ["$TOPIC_ARN"]
raw_delivery = $RAW
EOF
$DRY_RUN && printf '(dry run: nothing was changed)\n'
exit 0
