#!/usr/bin/env bash
# Install or upgrade glacierd, as root, on a systemd machine (Debian 12 and alike). Safe to
# run again: it only creates what is missing and never overwrites the configuration, the
# secrets or an edited logrotate file; running it again is how you upgrade.
#
#   sudo deploy/install.sh                   # from a git checkout (or an unpacked release)
#   sudo deploy/install.sh --source DIR      # from another checkout
#   deploy/install.sh --destdir DIR          # everything under DIR instead of / (see below)
#   deploy/install.sh --prefix DIR           # the program elsewhere than /opt/glacierd
#
# What it does:
#   1. checks for the tools glacierd needs: pg_dump, pg_restore and psql on PATH (any
#      version, from any package), and python3 >= 3.11 with venv and ensurepip. On a
#      Debian-like system it apt-get installs postgresql-client / python3-venv for the
#      ones missing, otherwise it stops and names them.
#   2. creates the system user and group "glacierd" (home /var/lib/glacierd, no login shell)
#      and the group "glacierd-operators" (glacierd is a member): its members may read the
#      configuration and the API token, so they run the CLI without sudo
#   3. copies the source to /opt/glacierd (root-owned): only the files git tracks (git
#      ls-files), never a checkout's .venv, build output, caches or demo-work; an unpacked
#      release without .git is copied without those. An upgrade replaces the tree and keeps
#      /opt/glacierd/.venv.
#   4. creates /opt/glacierd/.venv and pip-installs glacierd into it, building from a
#      temporary copy: no build/ or *.egg-info is left in /opt/glacierd or in the checkout
#   5. installs /etc/glacierd/glacierd.toml (root:glacierd-operators 0640) from
#      deploy/glacierd.example.toml, /etc/glacierd/environment (root:root 0600) and
#      /etc/glacierd/api-token (root:glacierd-operators 0640: the control API's token, which
#      the daemon and the CLI read through [api] token_file; a new random one, or the
#      GLACIERD_API_TOKEN an older install put in the environment file) — each only if
#      absent. /etc/glacierd is root:glacierd-operators 0750.
#   6. installs the systemd unit to /etc/systemd/system/glacierd.service (replaced on every
#      run: put local changes in a drop-in, see deploy/glacierd.service.d/) and reloads
#      systemd; an already running glacierd is restarted onto the new code. Without systemd
#      as PID 1 (a container, a chroot) the systemctl commands are printed instead of run.
#   7. installs /etc/logrotate.d/glacierd (for [logging] file in /var/log/glacierd), if absent
# It does not enable or start the service: edit the configuration first.
#
# --destdir DIR puts every file under DIR (DIR/opt/glacierd, DIR/etc/glacierd, …), as
# `make install DESTDIR=` does, for tests and image builds: it needs no root, creates no
# user, installs no package, chowns nothing and leaves systemd alone. The installed unit
# names the final paths (--prefix); the virtualenv works where it was made, DIR/PREFIX.
# GLACIERD_PYTHON=/path/to/python3 chooses the interpreter (default /usr/bin/python3).
set -euo pipefail
# Whatever the caller's umask: the program and its virtualenv must be readable by glacierd.
umask 022

say() { printf 'install.sh: %s\n' "$*"; }
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

PREFIX=/opt/glacierd
DESTDIR=""
source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --source | --prefix | --destdir)
            if [ "$#" -lt 2 ] || [ -z "$2" ]; then
                die "$1 needs a directory"
            fi
            case "$1" in
                --source) source_dir="$(cd "$2" 2>/dev/null && pwd -P)" || die "--source $2 is not a directory" ;;
                --prefix) PREFIX="$2" ;;
                --destdir) DESTDIR="$2" ;;
            esac
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument '$1'; see --help" ;;
    esac
done
case "$PREFIX" in
    /*) PREFIX="${PREFIX%/}" ;;
    *) die "--prefix must be an absolute path; got '$PREFIX'" ;;
esac
if [ -n "$DESTDIR" ]; then
    mkdir -p -- "$DESTDIR"
    DESTDIR="$(cd "$DESTDIR" && pwd -P)"
fi

readonly PREFIX DESTDIR
readonly ROOT="$DESTDIR$PREFIX"          # where the program goes on this machine
readonly VENV="$ROOT/.venv"
readonly CONF_DIR="$DESTDIR/etc/glacierd"
readonly CONF_FILE="$CONF_DIR/glacierd.toml"
readonly ENV_FILE="$CONF_DIR/environment"
readonly STATE_DIR=/var/lib/glacierd        # the user's home: a final path
readonly UNIT_FILE="$DESTDIR/etc/systemd/system/glacierd.service"
readonly LOGROTATE_FILE="$DESTDIR/etc/logrotate.d/glacierd"
readonly SERVICE_USER=glacierd
# Who may read the configuration and the API token, i.e. drive glacierd with its CLI.
readonly OPERATORS=glacierd-operators
readonly TOKEN_FILE="$CONF_DIR/api-token"
# Debian's own Python, whatever python3 a root shell's PATH finds first.
readonly PYTHON="${GLACIERD_PYTHON:-/usr/bin/python3}"

staging_mode() { [ -n "$DESTDIR" ]; }
if ! staging_mode && [ "$(id -u)" -ne 0 ]; then
    die "run me as root (sudo $0), or with --destdir DIR to stage the files without installing"
fi
if [ ! -f "$source_dir/pyproject.toml" ] || [ ! -d "$source_dir/glacierd" ]; then
    die "$source_dir is not a glacierd checkout (no pyproject.toml and glacierd/); pass --source DIR"
fi

# systemd is PID 1 exactly when this directory exists (sd_booted(3)).
systemd_running() { [ -d /run/systemd/system ]; }

# Owner and group for `install`: the service's, except when staging (nobody to chown to).
owned() { # owned USER GROUP → the install(1) options
    staging_mode || printf -- '-o\n%s\n-g\n%s\n' "$1" "$2"
}

# --- 1. tools ---------------------------------------------------------------------------------
python_ok() {
    [ -x "$PYTHON" ] \
        && "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        && "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null
}
missing_tools=()
for tool in pg_dump pg_restore psql; do
    command -v "$tool" >/dev/null || missing_tools+=("$tool")
done
python_ok || missing_tools+=("$PYTHON (3.11 or newer, with venv and ensurepip)")
if [ "${#missing_tools[@]}" -gt 0 ]; then
    if staging_mode || ! command -v apt-get >/dev/null; then
        die "missing: ${missing_tools[*]}; install them (the PostgreSQL client tools of your server's major version or newer, and Python's venv module), then run me again"
    fi
    packages=()
    for tool in pg_dump pg_restore psql; do
        command -v "$tool" >/dev/null || { packages+=(postgresql-client) && break; }
    done
    python_ok || packages+=(python3 python3-venv)
    say "missing: ${missing_tools[*]}; installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
    for tool in pg_dump pg_restore psql; do
        command -v "$tool" >/dev/null || die "$tool is still missing after installing ${packages[*]}"
    done
    python_ok || die "$PYTHON is still not Python 3.11+ with venv; install one and set GLACIERD_PYTHON"
fi
say "found pg_dump, pg_restore, psql ($(pg_dump --version)) and $("$PYTHON" --version)"

# --- 2. user ----------------------------------------------------------------------------------
if staging_mode; then
    say "--destdir: not creating the user $SERVICE_USER"
else
    if ! getent group "$SERVICE_USER" >/dev/null; then
        say "creating group $SERVICE_USER"
        groupadd --system "$SERVICE_USER"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        say "creating system user $SERVICE_USER"
        useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "glacierd backup daemon" "$SERVICE_USER"
    fi
    if ! getent group "$OPERATORS" >/dev/null; then
        say "creating group $OPERATORS (its members may use the glacierd CLI without sudo)"
        groupadd --system "$OPERATORS"
    fi
    # The daemon reads the configuration and the token through this group too.
    if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$OPERATORS"; then
        usermod -a -G "$OPERATORS" "$SERVICE_USER"
    fi
fi
# The home and state directory (systemd's StateDirectory= keeps it so); made here as well
# so that CLI commands run as glacierd work before the service's first start.
mapfile -t state_owner < <(owned "$SERVICE_USER" "$SERVICE_USER")
install -d -m 0750 "${state_owner[@]}" "$DESTDIR$STATE_DIR"

# --- 3. source --------------------------------------------------------------------------------
# Prints the files to install, NUL-separated, relative to the source: what git tracks (as it
# is in the work tree; files deleted there are left out), or, without git, everything but
# VCS data, virtualenvs, caches and build output.
git_in() { git -c safe.directory="$source_dir" -C "$source_dir" "$@"; }
tracked_files() {
    local file
    git_in ls-files -z --cached | while IFS= read -r -d '' file; do
        if [ -f "$source_dir/$file" ] || [ -L "$source_dir/$file" ]; then
            printf '%s\0' "$file"
        fi
    done
}
copy_source() { # copy_source DIR
    if command -v git >/dev/null && git_in rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        say "copying the files git tracks in $source_dir to $PREFIX"
        if [ -n "$(git_in status --porcelain --untracked-files=no)" ]; then
            say "note: the checkout has uncommitted changes; they are installed too"
        fi
        tracked_files | tar -C "$source_dir" --null --no-recursion -T - -cf - \
            | tar -C "$1" --no-same-owner -xf -
    else
        say "$source_dir is not a git checkout: copying it without .venv, caches and build output"
        tar -C "$source_dir" \
            --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./deploy/demo-work \
            --exclude='__pycache__' --exclude='*.egg-info' --exclude='.pytest_cache' \
            --exclude='.ruff_cache' --exclude='.mypy_cache' \
            -cf - . | tar -C "$1" --no-same-owner -xf -
    fi
}

temporaries=()
cleanup() { [ "${#temporaries[@]}" -eq 0 ] || rm -rf -- "${temporaries[@]}"; }
trap cleanup EXIT

if [ "$source_dir" = "$(cd "$ROOT" 2>/dev/null && pwd -P || true)" ]; then
    say "installing from $ROOT itself; not copying"
    # Build output an older install.sh left behind.
    rm -rf -- "$ROOT/build" "$ROOT"/*.egg-info
else
    mkdir -p -- "$(dirname "$ROOT")"
    staging="$(mktemp -d "$ROOT.new.XXXXXX")"
    temporaries+=("$staging")
    copy_source "$staging"
    chmod 0755 "$staging"
    # Swap the new tree in, keeping the existing virtualenv (its scripts name $VENV).
    if [ -d "$VENV" ]; then
        mv -- "$VENV" "$staging/.venv"
    fi
    if [ -e "$ROOT" ]; then
        rm -rf -- "$ROOT"
    fi
    mv -- "$staging" "$ROOT"
fi
staging_mode || chown -R root:root "$ROOT"

# --- 4. virtualenv ----------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating $VENV"
    rm -rf -- "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
say "installing glacierd into $VENV"
# pip builds a source tree in place (build/, glacierd.egg-info): give it a copy to litter.
build_dir="$(mktemp -d)"
temporaries+=("$build_dir")
tar -C "$ROOT" --exclude=./.venv -cf - . | tar -C "$build_dir" -xf -
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --root-user-action=ignore --upgrade "$build_dir"
"$VENV/bin/glacierd" --version

# --- 5. configuration and secrets -------------------------------------------------------------
mapfile -t conf_owner < <(owned root "$OPERATORS")
install -d -m 0750 "${conf_owner[@]}" "$CONF_DIR"
if [ -e "$CONF_FILE" ]; then
    say "keeping $CONF_FILE (compare with $PREFIX/deploy/glacierd.example.toml)"
    # An older install made it root:glacierd: let the operators' group read it as well.
    if ! staging_mode && [ "$(stat -c %G "$CONF_FILE")" = "$SERVICE_USER" ]; then
        say "$CONF_FILE: group $OPERATORS (was $SERVICE_USER), so operators can run the CLI"
        chgrp "$OPERATORS" "$CONF_FILE"
    fi
else
    say "installing $CONF_FILE from the example: edit it before starting the service"
    install -m 0640 "${conf_owner[@]}" "$ROOT/deploy/glacierd.example.toml" "$CONF_FILE"
fi
if [ -e "$ENV_FILE" ]; then
    say "keeping $ENV_FILE"
else
    say "creating $ENV_FILE (root only, 0600)"
    (
        umask 077
        cat >"$ENV_FILE" <<EOF
# Secrets for glacierd, read by systemd (EnvironmentFile= in glacierd.service) as root.
# KEY=value lines, no "export", no shell syntax. Keep this file root:root mode 0600.

# The control API's bearer token is in /etc/glacierd/api-token ([api] token_file), which
# the operators' group can read too. (GLACIERD_API_TOKEN here would have to hold the same.)

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
fi
staging_mode || chown root:root "$ENV_FILE"
chmod 0600 "$ENV_FILE"
if [ -e "$TOKEN_FILE" ]; then
    say "keeping $TOKEN_FILE"
else
    # An older install kept the token in the environment file: the same token, so the
    # daemon's two sources agree once [api] token_file is set.
    token="$(sed -n 's/^GLACIERD_API_TOKEN=//p' "$ENV_FILE" | tail -n 1)"
    if [ -n "$token" ]; then
        say "creating $TOKEN_FILE with the API token from $ENV_FILE"
    else
        say "creating $TOKEN_FILE with a new API token"
        token="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')"
    fi
    (
        umask 077
        printf '%s\n' "$token" >"$TOKEN_FILE"
    )
    unset token
fi
staging_mode || chown "root:$OPERATORS" "$TOKEN_FILE"
chmod 0640 "$TOKEN_FILE"

# --- 6. systemd unit --------------------------------------------------------------------------
mapfile -t root_owner < <(owned root root)
install -d -m 0755 "$(dirname "$UNIT_FILE")"
# The unit names /opt/glacierd; another --prefix is written into the installed copy.
unit_tmp="$(mktemp)"
temporaries+=("$unit_tmp")
sed "s#/opt/glacierd/#$PREFIX/#g" "$ROOT/systemd/glacierd.service" >"$unit_tmp"
install -m 0644 "${root_owner[@]}" "$unit_tmp" "$UNIT_FILE"
say "installed $UNIT_FILE"

# --- 7. logrotate -----------------------------------------------------------------------------
install -d -m 0755 "$(dirname "$LOGROTATE_FILE")"
if [ -e "$LOGROTATE_FILE" ] && ! cmp -s "$LOGROTATE_FILE" "$ROOT/deploy/logrotate/glacierd"; then
    say "keeping $LOGROTATE_FILE (compare with $PREFIX/deploy/logrotate/glacierd)"
else
    install -m 0644 "${root_owner[@]}" "$ROOT/deploy/logrotate/glacierd" "$LOGROTATE_FILE"
    say "installed $LOGROTATE_FILE"
fi

if staging_mode; then
    say "--destdir: everything is under $DESTDIR; systemd was left alone"
    exit 0
fi
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
     Operators who may drive glacierd: usermod -aG $OPERATORS NAME (they run the CLI as
     themselves; the token is read from $TOKEN_FILE).
  2. Give the unit the application's group (to read its files) and the paths restores
     write to, in a drop-in:  systemctl edit glacierd
     (example: $PREFIX/deploy/glacierd.service.d/override.conf.example)
  3. Check:            sudo -u $SERVICE_USER $VENV/bin/glacierd --config $CONF_FILE check-config
  4. Start:            systemctl enable --now glacierd
                       journalctl -u glacierd -f
  Later, after editing $CONF_FILE:  systemctl reload glacierd
EOF
