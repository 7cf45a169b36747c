#!/usr/bin/env bash
# Apply glacierd's SNS documents with the AWS CLI (deploy/AWS-SETUP.md, sections 3 and 5):
#   - the topic's access policy: the account, the backup bucket (S3 restore events) and the
#     account's Glacier vaults (job completions) may publish (sns-topic-policy.json);
#   - the HTTPS subscription's delivery retry policy: about 50 minutes of retries instead
#     of SNS's default 3 retries 20 s apart (sns-delivery-policy.json);
#   - optionally, for an encrypted topic: the KMS key policy that lets S3 and Glacier
#     publish to it (kms-key-policy.json), then the topic's encryption with that key.
#
#   TOPIC_ARN=arn:aws:sns:eu-central-1:123456789012:glacierd-restores \
#   BUCKET=example-app-backups \                   # empty for vaults only: no S3 statements
#   SUBSCRIPTION_ARN=arn:aws:sns:…:glacierd-restores:0b5c… \   # optional
#   KMS_KEY_ID=arn:aws:kms:eu-central-1:123456789012:key/… \   # optional
#   deploy/aws/sns-policies.sh [--dry-run]
#
# The account and region come from the topic's ARN. --dry-run prints the documents and the
# commands and changes nothing. Each command replaces the whole attribute or key policy:
# merge by hand if the topic or key already has statements of its own.
set -euo pipefail

die() {
    printf 'sns-policies.sh: %s\n' "$*" >&2
    exit 1
}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DRY_RUN=false
case "${1:-}" in
    "") ;;
    --dry-run) DRY_RUN=true ;;
    -h | --help)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1'; see --help" ;;
esac

TOPIC_ARN="${TOPIC_ARN:-}"
BUCKET="${BUCKET:-}"
SUBSCRIPTION_ARN="${SUBSCRIPTION_ARN:-}"
KMS_KEY_ID="${KMS_KEY_ID:-}"
[[ "$TOPIC_ARN" =~ ^arn:aws[a-z-]*:sns:([a-z0-9-]+):([0-9]{12}):[A-Za-z0-9_-]+$ ]] \
    || die "set TOPIC_ARN to the topic's ARN (arn:aws:sns:REGION:ACCOUNT_ID:NAME); got '$TOPIC_ARN'"
REGION="${BASH_REMATCH[1]}"
ACCOUNT_ID="${BASH_REMATCH[2]}"
if [ -n "$BUCKET" ] && ! [[ "$BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
    die "BUCKET '$BUCKET' is not a valid bucket name"
fi
command -v python3 >/dev/null || die "python3 is needed to fill in the documents"
$DRY_RUN || command -v aws >/dev/null || die "the AWS CLI (aws) is not installed"

WORK="$(mktemp -d)"
trap 'rm -rf -- "$WORK"' EXIT

# render TEMPLATE OUTPUT: the placeholders filled in; without a bucket, the S3 statements
# are left out. The result must be valid JSON with no placeholder left.
render() {
    python3 - "$1" "$2" "$TOPIC_ARN" "$ACCOUNT_ID" "$BUCKET" <<'PY'
import json, sys

template, output, topic_arn, account_id, bucket = sys.argv[1:]
text = open(template).read()
for name, value in (("TOPIC_ARN", topic_arn), ("ACCOUNT_ID", account_id), ("BUCKET_NAME", bucket)):
    text = text.replace(name, value)
policy = json.loads(text)
if not bucket:
    policy["Statement"] = [s for s in policy["Statement"] if not s["Sid"].startswith("S3")]
json.dump(policy, open(output, "w"), indent=2)
PY
}

run() {
    printf '+ %s\n' "$*"
    $DRY_RUN || "$@"
}
show() {
    printf -- '--- %s\n' "$1"
    cat "$1"
    printf '\n'
}

render "$HERE/sns-topic-policy.json" "$WORK/topic-policy.json"
$DRY_RUN && show "$WORK/topic-policy.json"
run aws sns set-topic-attributes --region "$REGION" --topic-arn "$TOPIC_ARN" \
    --attribute-name Policy --attribute-value "file://$WORK/topic-policy.json"

if [ -n "$SUBSCRIPTION_ARN" ]; then
    $DRY_RUN && show "$HERE/sns-delivery-policy.json"
    run aws sns set-subscription-attributes --region "$REGION" \
        --subscription-arn "$SUBSCRIPTION_ARN" \
        --attribute-name DeliveryPolicy --attribute-value "file://$HERE/sns-delivery-policy.json"
fi

if [ -n "$KMS_KEY_ID" ]; then
    render "$HERE/kms-key-policy.json" "$WORK/kms-key-policy.json"
    $DRY_RUN && show "$WORK/kms-key-policy.json"
    # The key first: a topic encrypted with a key S3 may not use drops S3's events.
    run aws kms put-key-policy --region "$REGION" --key-id "$KMS_KEY_ID" \
        --policy-name default --policy "file://$WORK/kms-key-policy.json"
    run aws sns set-topic-attributes --region "$REGION" --topic-arn "$TOPIC_ARN" \
        --attribute-name KmsMasterKeyId --attribute-value "$KMS_KEY_ID"
fi
$DRY_RUN && printf '(dry run: nothing was changed)\n'
exit 0
