#!/usr/bin/env bash
# Installs Riptide as a systemd service on this host (or into a staging root), or removes it.
#
#   sudo scripts/install.sh                       # install and enable riptide.service
#   sudo scripts/install.sh --now                 # … and start it
#   scripts/install.sh --root /tmp/stage          # into a staging root: nothing on the host changes
#   sudo scripts/install.sh --uninstall           # remove what install added; keep config, data, user
#   sudo scripts/install.sh --uninstall --purge   # also remove /etc/riptide, /var/lib/riptide, the user
#
# What it installs (paths under --root, default /):
#   PREFIX/bin/riptide                        the binary (--binary, default target/release/riptide)
#   /etc/systemd/system/riptide.service       the unit (scripts/riptide.service), enabled
#   /etc/systemd/system/riptide-tune.service  `riptide tune --apply` before the broker (--enable-tuner)
#   /etc/riptide/riptide.toml                 default config (scripts/riptide.toml), kept if present
#   /etc/riptide/tuning/                      the tuning profile (tuning/), kept if present
#   /usr/lib/sysusers.d/riptide.conf          the `riptide` system user (created now)
#   /var/lib/riptide/data                     the data directory, owned by riptide, mode 0750
#   PREFIX/share/doc/riptide/operations.md    operations guide
#
# Options: --root DIR, --prefix DIR (default /usr/local), --binary PATH, --no-enable,
#          --enable-tuner, --now, --uninstall, --purge.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=/
PREFIX=/usr/local
BINARY="$REPO/target/release/riptide"
ACTION=install
ENABLE=1
ENABLE_TUNER=0
START=0
PURGE=0
SERVICE_USER=riptide

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        --enable-tuner) ENABLE_TUNER=1; shift ;;
        --now) START=1; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT="$(cd "$ROOT" && pwd)"
REAL_HOST=0
[ "$ROOT" = / ] && REAL_HOST=1
if [ "$REAL_HOST" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "installing on this host needs root (or give --root DIR to stage into a directory)"
fi
# Path under the root.
r() { if [ "$REAL_HOST" = 1 ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }
# systemd is managing this host right now (not a container or a staging root).
systemd_running() { [ "$REAL_HOST" = 1 ] && [ -d /run/systemd/system ]; }

UNITS=(riptide.service riptide-tune.service)
UNIT_DIR=/etc/systemd/system
WANTS_DIR=$UNIT_DIR/multi-user.target.wants

enable_unit() {
    local unit=$1
    if systemd_running; then
        systemctl enable "$unit"
    elif command -v systemctl >/dev/null 2>&1 && systemctl --root="$ROOT" enable "$unit" >/dev/null 2>&1; then
        :
    else
        mkdir -p "$(r "$WANTS_DIR")"
        ln -sfn "$UNIT_DIR/$unit" "$(r "$WANTS_DIR/$unit")"
    fi
    say "enabled $unit"
}

disable_unit() {
    local unit=$1
    if systemd_running; then
        systemctl disable --now "$unit" 2>/dev/null || true
    elif command -v systemctl >/dev/null 2>&1; then
        systemctl --root="$ROOT" disable "$unit" >/dev/null 2>&1 || true
    fi
    rm -f "$(r "$WANTS_DIR/$unit")"
}

# uid:gid of the service user in the root's passwd, if it exists.
user_ids() {
    local passwd
    passwd="$(r /etc/passwd)"
    [ -f "$passwd" ] || return 1
    awk -F: -v u="$SERVICE_USER" '$1 == u { print $3 ":" $4; found = 1 } END { exit !found }' "$passwd"
}

create_user() {
    local conf=/usr/lib/sysusers.d/riptide.conf
    mkdir -p "$(r /usr/lib/sysusers.d)" "$(r /etc)"
    printf 'u %s - "Riptide broker" /var/lib/riptide /usr/sbin/nologin\n' "$SERVICE_USER" > "$(r "$conf")"
    if user_ids >/dev/null; then
        say "user $SERVICE_USER exists"
    elif command -v systemd-sysusers >/dev/null 2>&1; then
        if [ "$REAL_HOST" = 1 ]; then systemd-sysusers "$conf"; else systemd-sysusers --root="$ROOT" "$(r "$conf")"; fi
        say "created system user $SERVICE_USER"
    elif [ "$REAL_HOST" = 1 ]; then
        useradd --system --user-group --home-dir /var/lib/riptide --no-create-home \
            --shell /usr/sbin/nologin --comment "Riptide broker" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    else
        # Staging root without systemd-sysusers: add the entries directly.
        local uid=999
        while awk -F: -v id="$uid" '$3 == id { f = 1 } END { exit !f }' "$(r /etc/passwd)" "$(r /etc/group)" 2>/dev/null; do
            uid=$((uid - 1))
        done
        echo "$SERVICE_USER:x:$uid:$uid:Riptide broker:/var/lib/riptide:/usr/sbin/nologin" >> "$(r /etc/passwd)"
        echo "$SERVICE_USER:x:$uid:" >> "$(r /etc/group)"
        say "created system user $SERVICE_USER ($uid) in $ROOT/etc/passwd"
    fi
}

install_all() {
    [ -x "$BINARY" ] || die "no binary at $BINARY: run \`cargo build --release\` or give --binary PATH"
    install -D -m 0755 "$BINARY" "$(r "$PREFIX/bin/riptide")"
    say "installed $PREFIX/bin/riptide"
    for unit in "${UNITS[@]}"; do
        mkdir -p "$(r "$UNIT_DIR")"
        sed "s#/usr/local/bin/riptide#$PREFIX/bin/riptide#g; s#/usr/local/share/doc#$PREFIX/share/doc#g" \
            "$REPO/scripts/$unit" > "$(r "$UNIT_DIR/$unit").tmp"
        chmod 0644 "$(r "$UNIT_DIR/$unit").tmp"
        mv "$(r "$UNIT_DIR/$unit").tmp" "$(r "$UNIT_DIR/$unit")"
        say "installed $UNIT_DIR/$unit"
    done
    if [ -f "$REPO/docs/operations.md" ]; then
        install -D -m 0644 "$REPO/docs/operations.md" "$(r "$PREFIX/share/doc/riptide/operations.md")"
    fi

    create_user
    local ids=""
    ids="$(user_ids || true)"

    mkdir -p "$(r /etc/riptide)"
    if [ -e "$(r /etc/riptide/riptide.toml)" ]; then
        say "kept existing /etc/riptide/riptide.toml (the default is $REPO/scripts/riptide.toml)"
    else
        install -m 0640 "$REPO/scripts/riptide.toml" "$(r /etc/riptide/riptide.toml)"
        say "installed /etc/riptide/riptide.toml"
    fi
    if [ -e "$(r /etc/riptide/tuning/production.toml)" ]; then
        say "kept existing /etc/riptide/tuning"
    else
        mkdir -p "$(r /etc/riptide/tuning)"
        cp -R "$REPO/tuning/." "$(r /etc/riptide/tuning)/"
        say "installed /etc/riptide/tuning"
    fi
    echo "PREFIX=$PREFIX" > "$(r /etc/riptide/.install)"

    mkdir -p "$(r /var/lib/riptide/data)"
    chmod 0750 "$(r /var/lib/riptide)" "$(r /var/lib/riptide/data)"
    if [ -n "$ids" ] && [ "$(id -u)" = 0 ]; then
        chown "$ids" "$(r /var/lib/riptide)" "$(r /var/lib/riptide/data)"
        chgrp "${ids#*:}" "$(r /etc/riptide/riptide.toml)"
    fi
    say "data directory /var/lib/riptide/data"

    if systemd_running; then systemctl daemon-reload; fi
    if [ "$ENABLE" = 1 ]; then enable_unit riptide.service; fi
    if [ "$ENABLE_TUNER" = 1 ]; then enable_unit riptide-tune.service; fi
    if [ "$START" = 1 ]; then
        if systemd_running; then
            systemctl start riptide.service
            say "started riptide.service"
        else
            say "not starting: systemd does not manage $ROOT"
        fi
    fi
    say "done. Check the host with \`riptide tune\`, then \`systemctl start riptide\`."
}

uninstall_all() {
    if [ -f "$(r /etc/riptide/.install)" ]; then
        # shellcheck disable=SC1090
        PREFIX="$(sed -n 's/^PREFIX=//p' "$(r /etc/riptide/.install)")"
    fi
    for unit in "${UNITS[@]}"; do
        disable_unit "$unit"
        rm -f "$(r "$UNIT_DIR/$unit")"
    done
    if systemd_running; then systemctl daemon-reload; fi
    rm -f "$(r "$PREFIX/bin/riptide")"
    rm -rf "$(r "$PREFIX/share/doc/riptide")"
    say "removed the binary and the units"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$(r /etc/riptide)" "$(r /var/lib/riptide)"
        rm -f "$(r /usr/lib/sysusers.d/riptide.conf)"
        if user_ids >/dev/null; then
            if [ "$REAL_HOST" = 1 ]; then
                userdel "$SERVICE_USER" 2>/dev/null || true
                getent group "$SERVICE_USER" >/dev/null && groupdel "$SERVICE_USER" 2>/dev/null || true
            else
                for file in passwd group shadow gshadow; do
                    if [ -f "$(r /etc/$file)" ]; then
                        sed -i "/^$SERVICE_USER:/d" "$(r /etc/$file)"
                    fi
                done
            fi
        fi
        say "purged /etc/riptide, /var/lib/riptide and the $SERVICE_USER user"
    else
        say "kept /etc/riptide, /var/lib/riptide and the $SERVICE_USER user (--purge removes them)"
    fi
}

case "$ACTION" in
    install) install_all ;;
    uninstall) uninstall_all ;;
esac
