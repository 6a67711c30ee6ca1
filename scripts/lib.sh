# Shared shell helpers for scripts/test.sh and scripts/quickstart.sh. Sourced, not run.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages that are missing (apt-get update only when something is).
ensure_packages() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || die "packages missing:$missing (run as root, or install them)"
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || die "apt-get install$missing failed"
}

# Makes sure a MariaDB server answers on 127.0.0.1:3306: installs it when missing, starts it
# when stopped (no systemd needed).
ensure_mariadb() {
    if mariadb-admin ping >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        ensure_packages mariadb-server mariadb-client
    fi
    log "starting MariaDB"
    install -d -o mysql -g mysql /run/mysqld 2>/dev/null || mkdir -p /run/mysqld
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
        || die "could not start mariadbd"
    i=0
    until mariadb-admin ping >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 300 ] && die "MariaDB did not answer within 30 s"
        sleep 0.1
    done
}

# Runs SQL as the server's root (unix socket).
mariadb_root() {
    mariadb -uroot "$@"
}
