#!/usr/bin/env bash
# glacierd demo: one backup on the embedded default store (a local directory acting as a
# vault), then the retrieval lifecycle, against a sample database and sample attachments.
#
#   deploy/demo.sh             # as root on Debian 12, from a checkout; safe to run again
#   deploy/demo.sh --cleanup   # drop the database and role it created, remove its work dir
#
# Names (environment variables; lower-case letters, digits and "_"):
#   GLACIERD_DEMO_DB    the sample database   (default glacierd_demo)
#   GLACIERD_DEMO_ROLE  the role that owns it (default glacierd_demo)
#   GLACIERD_DEMO_WORK  its work directory, an absolute path (default deploy/demo-work)
# The demo never drops or changes a database or role it did not create: it refuses to run
# when one of these names is taken by something else. What it created is recorded in
# deploy/demo-work/created (name and OID, so that a database dropped and created again by
# someone else under the same name is not taken for the demo's).
#
# Each step runs only if needed:
#   1. apt-get install python3 python3-venv postgresql-client curl (and postgresql when no
#      server is installed), starts PostgreSQL on 127.0.0.1:5432
#   2. builds .venv from pyproject.toml (pip install -e .)
#   3. creates the role (its fresh random password reaches glacierd through PGPASSWORD) and
#      the database, recreating the demo's own database of an earlier run, with users,
#      documents and a sequence, and writes sample attachments under
#      deploy/demo-work/files (ab/cd/<key>)
#   4. writes deploy/demo-work/glacierd.toml: local vault with a 2-second retrieval delay,
#      control API on a free loopback port with a random bearer token
#   5. starts `glacierd serve`, triggers a backup with curl, prints what was archived
#   6. deletes one attachment, requests a retrieval, shows pending -> local, checks the
#      fetched copy's SHA-256, stops glacierd with SIGTERM
# Everything it writes is under deploy/demo-work/ (wiped at the start of each run, except
# the record of what it created) and in its database.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
WORK="${GLACIERD_DEMO_WORK:-$REPO/deploy/demo-work}"
CREATED="$WORK/created"
VENV="$REPO/.venv"
DB="${GLACIERD_DEMO_DB:-glacierd_demo}"
ROLE="${GLACIERD_DEMO_ROLE:-glacierd_demo}"
CLEANUP=false
case "${1:-}" in
    "") ;;
    --cleanup) CLEANUP=true ;;
    -h | --help)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        printf 'demo: unknown argument %s; see --help.\n' "$1" >&2
        exit 2
        ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# Settings from the caller's environment must not redirect the demo to another database.
unset GLACIERD_CONFIG GLACIERD_DATABASE_DSN GLACIERD_CATALOG_DSN \
    PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE

if [ ! -f "$REPO/pyproject.toml" ] || [ ! -d "$REPO/glacierd" ]; then
    die "$REPO is not a glacierd checkout (no pyproject.toml and glacierd/)."
fi
case "$WORK" in
    /*) ;;
    *) die "GLACIERD_DEMO_WORK must be an absolute path; got '$WORK'." ;;
esac
case "$WORK" in
    *'"'* | *\\*) die "the work directory $WORK holds a quote or backslash; choose another." ;;
esac
# Each run empties the work directory: never one that holds anything but an earlier demo.
if [ "$WORK" != "$REPO/deploy/demo-work" ] && [ -d "$WORK" ] && [ ! -e "$WORK/.glacierd-demo" ] \
    && [ -n "$(ls -A -- "$WORK")" ]; then
    die "$WORK is not empty and not a demo work directory; set GLACIERD_DEMO_WORK to a new or empty one."
fi
# The names go into SQL unquoted: plain identifiers only.
for name in "$DB" "$ROLE"; do
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] \
        || die "'$name' is not a plain lower-case SQL name; set GLACIERD_DEMO_DB / GLACIERD_DEMO_ROLE to names of letters, digits and _."
done
case "$DB" in
    postgres | template0 | template1) die "GLACIERD_DEMO_DB must not be $DB; choose a name of its own." ;;
esac

# --- 1. system packages and PostgreSQL ----------------------------------------------------

apt_install() {
    [ "$(id -u)" -eq 0 ] || die "missing packages ($*); run me as root to install them."
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when there are none or the install fails with them.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null \
        || ! apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "$@" >/dev/null
    fi
}

missing=()
command -v python3 >/dev/null || missing+=(python3)
# Debian keeps ensurepip (which `python3 -m venv` needs) in python3-venv.
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
for tool in pg_dump pg_isready psql; do
    command -v "$tool" >/dev/null || { missing+=(postgresql-client) && break; }
done
command -v curl >/dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "glacierd needs Python 3.11 or newer; $(python3 --version) is installed."

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
        apt_install postgresql
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432."
fi

# The administrator: the postgres user over the local socket (peer authentication on a
# fresh Debian), else the postgres role over TCP.
if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 \
    && runuser -u postgres -- psql -X -q -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    admin_psql() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
else
    admin_psql() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres "$@"; }
fi

# --- what the demo created ------------------------------------------------------------------
# $CREATED holds one line per database or role the demo created: "database NAME OID" or
# "role NAME OID". The OID tells the demo's object from another one created later under
# the same name: only an object whose name and OID are both recorded is ever dropped.

# oid_of database|role NAME: its OID, or nothing when it does not exist.
oid_of() {
    local table=pg_database column=datname
    if [ "$1" = role ]; then
        table=pg_roles column=rolname
    fi
    admin_psql -At -c "SELECT oid FROM $table WHERE $column = '$2'"
}
# created_by_demo database|role NAME: it exists and is the very one the demo created.
created_by_demo() {
    local oid
    oid="$(oid_of "$1" "$2")"
    [ -n "$oid" ] && [ -f "$CREATED" ] && grep -qxF "$1 $2 $oid" "$CREATED"
}
record_created() {
    printf '%s %s %s\n' "$1" "$2" "$(oid_of "$1" "$2")" >>"$CREATED"
}
forget_created() {
    if [ -f "$CREATED" ]; then
        grep -vx "$1 $2 [0-9]*" "$CREATED" >"$CREATED.new" || true
        mv -- "$CREATED.new" "$CREATED"
    fi
}

if $CLEANUP; then
    # Databases first: a role cannot be dropped while it owns one.
    if [ -f "$CREATED" ]; then
        mapfile -t records <"$CREATED"
        for kind in database role; do
            for line in "${records[@]}"; do
                read -r recorded name _ <<<"$line"
                [ "$recorded" = "$kind" ] || continue
                if created_by_demo "$kind" "$name"; then
                    say "dropping the $kind $name (created by the demo)"
                    if [ "$kind" = database ]; then
                        admin_psql -c "DROP DATABASE $name WITH (FORCE)"
                    else
                        admin_psql -c "DROP ROLE $name" \
                            || die "the role $name owns objects elsewhere now; it was kept."
                    fi
                elif [ -n "$(oid_of "$kind" "$name")" ]; then
                    note "keeping the $kind $name: it is not the one the demo created"
                fi
            done
        done
    fi
    say "removing $WORK"
    rm -rf -- "$WORK"
    exit 0
fi

# A fresh work directory for every run; only the record of what the demo created stays.
mkdir -p -- "$WORK"
find "$WORK" -mindepth 1 -maxdepth 1 ! -name created ! -name .glacierd-demo -exec rm -rf -- {} +
mkdir -p -- "$WORK/files"
chmod 0700 "$WORK"
touch "$WORK/.glacierd-demo"

# --- 2. the virtualenv (the same rule as deploy/test.sh: only when missing or outdated) ----

# deploy/test.sh's marker (.installed: glacierd plus the test tools) counts as well.
venv_current() {
    "$VENV/bin/python" -c '' 2>/dev/null || return 1
    local marker
    for marker in "$VENV/.installed" "$VENV/.installed-demo"; do
        [ -e "$marker" ] && [ ! "$REPO/pyproject.toml" -nt "$marker" ] && return 0
    done
    return 1
}
if ! venv_current; then
    say "building $VENV from pyproject.toml"
    python3 -m venv "$VENV"
    if ! { "$VENV/bin/pip" install -q --upgrade pip \
        && "$VENV/bin/pip" install -q -e "$REPO"; } >"$WORK/pip.log" 2>&1; then
        tail -n 30 "$WORK/pip.log" >&2
        die "pip install failed; the whole output is in $WORK/pip.log."
    fi
    touch "$VENV/.installed-demo"
fi
GLACIERD="$VENV/bin/glacierd"

# --- 3. the sample database and attachments -----------------------------------------------

secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
DB_PASSWORD="$(secret)"
API_TOKEN="$(secret)"

# Names taken by something else are left alone: the demo stops instead.
if [ -n "$(oid_of database "$DB")" ] && ! created_by_demo database "$DB"; then
    die "a database named $DB exists and deploy/demo.sh did not create it (see $CREATED); it is left alone: run the demo with another name, e.g. GLACIERD_DEMO_DB=${DB}_2 $0."
fi
if [ -n "$(oid_of role "$ROLE")" ] && ! created_by_demo role "$ROLE"; then
    die "a role named $ROLE exists and deploy/demo.sh did not create it (see $CREATED); it is left alone: run the demo with another name, e.g. GLACIERD_DEMO_ROLE=${ROLE}_2 $0."
fi

say "creating the database $DB (role $ROLE) on 127.0.0.1:5432"
if created_by_demo database "$DB"; then
    note "dropping the demo's own $DB of an earlier run"
    admin_psql -c "DROP DATABASE $DB WITH (FORCE)"
    forget_created database "$DB"
fi
if ! created_by_demo role "$ROLE"; then
    admin_psql -c "CREATE ROLE $ROLE LOGIN"
    record_created role "$ROLE"
fi
# SQL on standard input: the password never appears on a command line.
admin_psql >/dev/null <<SQL
ALTER ROLE $ROLE LOGIN PASSWORD '$DB_PASSWORD';
SQL
admin_psql -c "CREATE DATABASE $DB OWNER $ROLE"
record_created database "$DB"
note "recorded in $CREATED (deploy/demo.sh --cleanup drops them)"

say "writing sample attachments to $WORK/files"
# ActiveStorage's disk layout: files/<k[0:2]>/<k[2:4]>/<key>, a random base36 key per blob.
# Prints one INSERT per file for the documents table.
documents_sql="$(python3 - "$WORK/files" <<'PY'
import os, secrets, sys
from pathlib import Path

root = Path(sys.argv[1])
alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
samples = [
    (1, "Signed contract", 2400),
    (1, "Invoice 1000", 800),
    (2, "Passport scan", 48_000),
    (2, "Invoice 1001", 900),
    (3, "Floor plan", 130_000),
    (3, "Meeting notes", 350),
]
for user_id, title, size in samples:
    key = "".join(secrets.choice(alphabet) for _ in range(28))
    path = root / key[:2] / key[2:4] / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    print(
        f"INSERT INTO documents (user_id, title, blob_key, byte_size) "
        f"VALUES ({user_id}, '{title}', '{key}', {size});"
    )
PY
)"

PGPASSWORD="$DB_PASSWORD" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U "$ROLE" -d "$DB" \
    >/dev/null <<SQL
CREATE SEQUENCE invoice_number_seq START 1000;
CREATE TABLE users (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id),
    title text NOT NULL,
    blob_key text NOT NULL UNIQUE,
    byte_size integer NOT NULL,
    invoice_number bigint NOT NULL DEFAULT nextval('invoice_number_seq')
);
INSERT INTO users (email) VALUES ('ada@example.com'), ('grace@example.com'), ('linus@example.com');
$documents_sql
SQL
note "tables users (3 rows) and documents (6 rows, FK to users), sequence invoice_number_seq"
note "$(find "$WORK/files" -type f | wc -l) files in nested folders ab/cd/<key>"

# --- 4. configuration ---------------------------------------------------------------------

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE_URL="http://127.0.0.1:$PORT"
CONFIG="$WORK/glacierd.toml"
LOG="$WORK/glacierd.log"
HEADERS="$WORK/api-headers"
STATE="$WORK/state"
VAULT="$WORK/vault"

cat >"$CONFIG" <<TOML
# Written by deploy/demo.sh; every setting is explained in deploy/glacierd.example.toml.
state_dir = "$STATE"
shutdown_timeout_seconds = 10

[database]
# The password comes from PGPASSWORD in glacierd's environment, never from this file.
dsn = "postgresql://$ROLE@127.0.0.1:5432/$DB"

[files]
root = "$WORK/files"
orphan_dir = "$WORK/orphan_files"

[store]
type = "local"

[store.local]
path = "$VAULT"
# Behave like Glacier: an archive is readable only 2 s after its retrieval was requested.
retrieval_delay_seconds = 2

[schedule]
# No daily backup in the demo; it triggers one itself. Check pending retrievals twice a second.
enabled = false
poll_interval_seconds = 0.5

[api]
host = "127.0.0.1"
port = $PORT

[logging]
format = "json"
TOML
# curl reads the bearer token from this file (-H @file), so it is not on a command line.
(
    umask 077
    printf 'Authorization: Bearer %s\n' "$API_TOKEN" >"$HEADERS"
)
"$GLACIERD" --config "$CONFIG" check-config | sed 's/^/    /'

# --- helpers ------------------------------------------------------------------------------

# Formats the control API's JSON answers (read on standard input).
SHOW="$WORK/show.py"
cat >"$SHOW" <<'PY'
import json, sys

cmd, args = sys.argv[1], sys.argv[2:]
data = json.load(sys.stdin)


def human(n):
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


if cmd == "get":
    value = data
    for part in args[0].split("."):
        value = value[part]
    print("" if value is None else value)
elif cmd == "summary":
    print(
        f"backup {data['id']} {data['status']} in {data['duration_s']} s: database "
        f"{data['database']}, {data['file_count']} files ({data['new_files']} new, "
        f"{data['skipped_files']} skipped), {human(data['bytes_uploaded'])} uploaded"
    )
elif cmd == "table":
    print(f"    {'ID':>3}  {'KIND':8}  {'SIZE':>9}  {'SHA256':12}  {'STATUS':9}  PATH / STORE KEY")
    for a in data["archives"]:
        print(
            f"    {a['id']:>3}  {a['kind']:8}  {human(a['size']):>9}  {(a['sha256'] or '')[:12]:12}"
            f"  {a['status']:9}  {a['path'] or a['key']}"
        )
elif cmd == "first-file":
    a = next(a for a in data["archives"] if a["kind"] == "file")
    print(a["id"], a["path"], a["sha256"])
elif cmd == "statuses":
    shown = [a for a in data["archives"] if a["status"] != "exists"]
    exists = len(data["archives"]) - len(shown)
    parts = []
    for a in shown:
        part = f"{a['kind'] if a['kind'] == 'database' else a['path']}: {a['status']}"
        if a["status"] == "pending" and a["expected_ready_at"]:
            part += f" (expected {a['expected_ready_at'][11:19]} UTC)"
        parts.append(part)
    print(f"backup: {data['retrieval_status']:9} | " + ", ".join(parts) + f" | {exists} more: exists")
PY
show() { "$VENV/bin/python" "$SHOW" "$@"; }

# api METHOD PATH [JSON]: sets API_STATUS and API_BODY.
api() {
    local method="$1" path="$2" response
    local args=(--silent --show-error --max-time 30 --header "@$HEADERS" --request "$method"
        --write-out '\n%{http_code}')
    if [ "$#" -ge 3 ]; then
        args+=(--header 'Content-Type: application/json' --data "$3")
    fi
    response="$(curl "${args[@]}" "$BASE_URL$path")" || die "curl $method $path failed."
    API_STATUS="${response##*$'\n'}"
    API_BODY="${response%$'\n'*}"
}
expect() {
    [ "$API_STATUS" = "$1" ] || {
        printf 'demo: expected HTTP %s, got %s: %s\n' "$1" "$API_STATUS" "$API_BODY" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    }
}

# --- 5. the daemon and a backup -----------------------------------------------------------

GLACIERD_PID=""
stop_daemon() {
    if [ -n "$GLACIERD_PID" ] && kill -0 "$GLACIERD_PID" 2>/dev/null; then
        kill -TERM "$GLACIERD_PID"
        wait "$GLACIERD_PID" || true
    fi
    GLACIERD_PID=""
}
trap stop_daemon EXIT
trap 'exit 130' INT TERM

say "starting glacierd serve (log: $LOG)"
PGPASSWORD="$DB_PASSWORD" GLACIERD_API_TOKEN="$API_TOKEN" \
    "$GLACIERD" --config "$CONFIG" serve >>"$LOG" 2>&1 &
GLACIERD_PID=$!
for _ in $(seq 1 120); do
    if ! kill -0 "$GLACIERD_PID" 2>/dev/null; then
        GLACIERD_PID=""
        tail -n 20 "$LOG" >&2
        die "glacierd exited during start-up; see $LOG."
    fi
    curl --silent --fail --max-time 2 --output /dev/null "$BASE_URL/health" && break
    sleep 0.25
done
api GET /health
expect 200
note "GET /health -> $API_BODY"

say "curl -X POST $BASE_URL/backups"
api POST /backups
expect 202
note "$API_BODY"
BACKUP_ID="$(show get id <<<"$API_BODY")"

for _ in $(seq 1 240); do
    api GET "/backups/$BACKUP_ID"
    expect 200
    [ "$(show get status <<<"$API_BODY")" != running ] && break
    sleep 0.5
done
status="$(show get status <<<"$API_BODY")"
if [ "$status" != completed ]; then
    tail -n 20 "$LOG" >&2
    die "backup $BACKUP_ID is $status: $(show get error <<<"$API_BODY")"
fi
note "$(show summary <<<"$API_BODY")"

say "what was archived (GET /backups/$BACKUP_ID)"
show table <<<"$API_BODY"
note "status 'available': archived, readable only after a retrieval (the vault imitates Glacier)"

# --- 6. the retrieval lifecycle -----------------------------------------------------------

read -r VICTIM_ID VICTIM_PATH VICTIM_SHA <<<"$(show first-file <<<"$API_BODY")"
say "deleting the attachment $VICTIM_PATH from disk"
rm -- "$WORK/files/$VICTIM_PATH"
api GET "/backups/$BACKUP_ID"
expect 200
note "$(show statuses <<<"$API_BODY")"

say "curl -X POST $BASE_URL/backups/$BACKUP_ID/retrieve -d '{\"tier\": \"Expedited\"}'"
api POST "/backups/$BACKUP_ID/retrieve" '{"tier": "Expedited"}'
expect 202
note "$API_BODY"
note "(files still on disk are never retrieved; the database dump and the deleted file are)"

say "watching the statuses (the vault's retrieval delay is 2 s)"
last=""
started=$SECONDS
for _ in $(seq 1 120); do
    api GET "/backups/$BACKUP_ID"
    expect 200
    line="$(show statuses <<<"$API_BODY")"
    if [ "$line" != "$last" ]; then
        note "+$((SECONDS - started)) s  $line"
        last="$line"
    fi
    [ "$(show get retrieval_status <<<"$API_BODY")" = local ] && break
    sleep 0.25
done
[ "$(show get retrieval_status <<<"$API_BODY")" = local ] \
    || die "the retrieval did not finish within 30 s; see $LOG."

FETCHED="$STATE/fetched/archive-$VICTIM_ID"
fetched_sha="$(sha256sum "$FETCHED" | cut -d ' ' -f 1)"
[ "$fetched_sha" = "$VICTIM_SHA" ] || die "fetched copy $FETCHED does not match its SHA-256."
note "fetched copy $FETCHED"
note "SHA-256 ${fetched_sha:0:16}… matches the one recorded at backup time"

# --- 6b. a restore ----------------------------------------------------------------------------

field() { "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
in_db() { printf '\\c %s\n%s\n' "$DB" "$1" | admin_psql -At | tail -n 1; }

say "changing things after the backup: all documents deleted, a table added, a stray upload"
# As the application's role, like the application itself would.
in_db "SET ROLE $ROLE; DELETE FROM documents; CREATE TABLE added_after_backup (id int);" >/dev/null
mkdir -p "$WORK/files/zz"
printf 'not in any backup\n' >"$WORK/files/zz/stray-upload.bin"
note "documents now: $(in_db 'SELECT count(*) FROM documents;')"

say "curl -X POST $BASE_URL/backups/$BACKUP_ID/restore -d '{\"tier\": \"Expedited\"}'"
api POST "/backups/$BACKUP_ID/restore" '{"tier": "Expedited"}'
expect 202
RESTORE_ID="$(field id <<<"$API_BODY")"
note "$API_BODY"
last="" state=""
for _ in $(seq 1 120); do
    api GET "/restores/$RESTORE_ID"
    state="$(field state <<<"$API_BODY")"
    if [ "$state" != "$last" ]; then note "restore $RESTORE_ID: $state"; last="$state"; fi
    case "$state" in restored|failed) break ;; esac
    sleep 0.5
done
[ "$state" = "restored" ] || die "restore $RESTORE_ID ended '$state': $(field error <<<"$API_BODY")"
note "documents again: $(in_db 'SELECT count(*) FROM documents;') (the table added later is gone:" \
    "$(in_db "SELECT count(*) FROM pg_tables WHERE tablename = 'added_after_backup';") left)"
note "the stray upload was moved, not deleted: $WORK/orphan_files/zz/stray-upload.bin"
[ -f "$WORK/orphan_files/zz/stray-upload.bin" ] || die "the orphan was not moved aside."
note "a safety snapshot of the database as it was before: GET /snapshots"

# --- 7. stop --------------------------------------------------------------------------------

say "stopping glacierd (SIGTERM)"
kill -TERM "$GLACIERD_PID"
rc=0
wait "$GLACIERD_PID" || rc=$?
GLACIERD_PID=""
[ "$rc" -eq 0 ] || die "glacierd exited with status $rc; see $LOG."
note "glacierd exited with status 0"

say "done"
note "vault:         $VAULT"
note "fetched:       $STATE/fetched"
note "log (JSON):    $LOG"
note "configuration: $CONFIG"
note "database:      $DB on 127.0.0.1:5432 (catalog in its schema glacierd), role $ROLE"
note "clean up:      $0 --cleanup (drops only what the demo created)"
