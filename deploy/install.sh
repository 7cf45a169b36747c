#!/usr/bin/env bash
# Install or upgrade glacierd on Debian 12, as root. Safe to run again: it only creates what
# is missing and never overwrites the configuration or the secrets.
#
#   sudo deploy/install.sh                 # from a checkout (or an unpacked release)
#   sudo deploy/install.sh --source DIR    # install from another checkout
#
# What it does:
#   1. apt-get install python3-venv postgresql-client
#   2. creates the system user and group "glacierd" (home /var/lib/glacierd, no login shell)
#   3. copies the source to /opt/glacierd (root-owned; an upgrade replaces it, keeping .venv)
#   4. creates /opt/glacierd/.venv and pip-installs glacierd into it (from PyPI's packages)
#   5. installs /etc/glacierd/glacierd.toml (root:glacierd 0640) from
#      deploy/glacierd.example.toml and /etc/glacierd/environment (root:root 0600, with a
#      fresh random GLACIERD_API_TOKEN) — each only if absent
#   6. installs the systemd unit to /etc/systemd/system/glacierd.service (replaced on every
#      run: put local changes in a drop-in, `systemctl edit glacierd`) and reloads systemd;
#      an already running glacierd is restarted onto the new code. Without systemd as PID 1
#      (a container, a chroot) the systemctl commands are printed instead of run.
# It does not enable or start the service: edit the configuration first.
set -euo pipefail

readonly PREFIX=/opt/glacierd
readonly VENV="$PREFIX/.venv"
readonly CONF_DIR=/etc/glacierd
readonly CONF_FILE="$CONF_DIR/glacierd.toml"
readonly ENV_FILE="$CONF_DIR/environment"
readonly STATE_DIR=/var/lib/glacierd
readonly UNIT_FILE=/etc/systemd/system/glacierd.service
readonly SERVICE_USER=glacierd
# Debian's own Python 3.11, whatever python3 a root shell's PATH finds first.
readonly PYTHON=/usr/bin/python3

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --source)
            [ "$#" -ge 2 ] || die "--source needs a directory"
            source_dir="$(cd "$2" && pwd -P)" || die "--source $2 is not a directory"
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            die "unknown argument '$1'; see --help"
            ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run me as root (sudo $0)"
if [ ! -f "$source_dir/pyproject.toml" ] || [ ! -d "$source_dir/glacierd" ]; then
    die "$source_dir is not a glacierd checkout (no pyproject.toml and glacierd/); pass --source DIR"
fi

# systemd is PID 1 exactly when this directory exists (sd_booted(3)).
systemd_running() { [ -d /run/systemd/system ]; }

# --- 1. packages ------------------------------------------------------------------------
missing_packages=()
for pkg in python3-venv postgresql-client; do
    dpkg-query --show --showformat='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed \
        || missing_packages+=("$pkg")
done
if [ "${#missing_packages[@]}" -gt 0 ]; then
    say "installing ${missing_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing_packages[@]}"
fi
[ -x "$PYTHON" ] || die "$PYTHON is missing; apt-get install python3"

# --- 2. user ----------------------------------------------------------------------------
if ! getent group "$SERVICE_USER" >/dev/null; then
    say "creating group $SERVICE_USER"
    groupadd --system "$SERVICE_USER"
fi
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    say "creating system user $SERVICE_USER"
    useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "glacierd backup daemon" "$SERVICE_USER"
fi
# The home and state directory (systemd's StateDirectory= keeps it so); made here as well
# so that CLI commands run as glacierd work before the service's first start.
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"

# --- 3. source --------------------------------------------------------------------------
if [ "$source_dir" = "$(cd "$PREFIX" 2>/dev/null && pwd -P || true)" ]; then
    say "installing from $PREFIX itself; not copying"
else
    say "copying $source_dir to $PREFIX"
    staging="$(mktemp -d "$PREFIX.new.XXXXXX")"
    trap 'rm -rf -- "$staging"' EXIT
    # Everything but VCS data, virtualenvs, caches and build output.
    tar -C "$source_dir" \
        --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./deploy/demo-work \
        --exclude='__pycache__' --exclude='*.egg-info' --exclude='.pytest_cache' \
        --exclude='.ruff_cache' --exclude='.mypy_cache' \
        -cf - . | tar -C "$staging" --no-same-owner -xf -
    chmod 0755 "$staging"
    # Swap the new tree in, keeping the existing virtualenv (its scripts name $VENV).
    if [ -d "$VENV" ]; then
        mv -- "$VENV" "$staging/.venv"
    fi
    if [ -e "$PREFIX" ]; then
        rm -rf -- "$PREFIX"
    fi
    mv -- "$staging" "$PREFIX"
    trap - EXIT
fi
chown -R root:root "$PREFIX"

# --- 4. virtualenv ----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating $VENV"
    rm -rf -- "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
say "installing glacierd into $VENV"
# A build/ left by an earlier build could slip stale modules into the wheel.
rm -rf -- "$PREFIX/build"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --root-user-action=ignore --upgrade "$PREFIX"
"$VENV/bin/glacierd" --version

# --- 5. configuration and secrets -----------------------------------------------------------
install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
if [ -e "$CONF_FILE" ]; then
    say "keeping $CONF_FILE (compare with $PREFIX/deploy/glacierd.example.toml)"
else
    say "installing $CONF_FILE from the example: edit it before starting the service"
    install -m 0640 -o root -g "$SERVICE_USER" "$PREFIX/deploy/glacierd.example.toml" "$CONF_FILE"
fi
if [ -e "$ENV_FILE" ]; then
    say "keeping $ENV_FILE"
else
    say "creating $ENV_FILE (root only, 0600) with a new API token"
    token="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')"
    (
        umask 077
        cat >"$ENV_FILE" <<EOF
# Secrets for glacierd, read by systemd (EnvironmentFile= in glacierd.service) as root.
# KEY=value lines, no "export", no shell syntax. Keep this file root:root mode 0600.

# Bearer token of the control API ([api] token_env names this variable).
GLACIERD_API_TOKEN=$token

# Database password (or put a .pgpass file, mode 0600, in $STATE_DIR).
#PGPASSWORD=

# Whole connection strings, replacing [database] dsn / [catalog] dsn.
#GLACIERD_DATABASE_DSN=
#GLACIERD_CATALOG_DSN=

# AWS credentials, unless an instance role or a profile in $STATE_DIR/.aws/ provides them.
#AWS_ACCESS_KEY_ID=
#AWS_SECRET_ACCESS_KEY=
#AWS_REGION=
#AWS_PROFILE=
EOF
    )
    unset token
fi
chown root:root "$ENV_FILE"
chmod 0600 "$ENV_FILE"

# --- 6. systemd unit --------------------------------------------------------------------
install -m 0644 -o root -g root "$PREFIX/systemd/glacierd.service" "$UNIT_FILE"
say "installed $UNIT_FILE"
if systemd_running; then
    systemctl daemon-reload
    if systemctl --quiet is-active glacierd.service; then
        say "restarting the running glacierd onto the new version"
        systemctl restart glacierd.service
    fi
else
    say "systemd is not running here (not PID 1); run these where it is:"
    printf '    %s\n' "systemctl daemon-reload" "systemctl try-restart glacierd.service"
fi

cat <<EOF

glacierd is installed. Next:
  1. Edit $CONF_FILE ([database] dsn, [files] root, [store]) and the secrets in $ENV_FILE.
  2. In the unit, set SupplementaryGroups= (to read the app's files) and ReadWritePaths=
     (for restores):   systemctl edit glacierd
  3. Check:            sudo -u $SERVICE_USER $VENV/bin/glacierd --config $CONF_FILE check-config
  4. Start:            systemctl enable --now glacierd
                       journalctl -u glacierd -f
EOF
