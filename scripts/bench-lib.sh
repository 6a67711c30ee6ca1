# Shared helpers of the scripts/bench-* scripts. Sourced (after scripts/lib.sh), not run.
#
# A script calls bench_init NAME first: it makes a work directory ($BT), registers the cleanup
# trap, and makes sure MariaDB runs. Processes started by a script are registered with
# bench_track PID; on exit (normal, error, Ctrl-C) each one still running is killed, and every
# pid listed in a `pids` file under $BT (the Rust drivers write one) is killed too when its
# command line still names $BT (so a recycled pid is never touched). The databases made with
# bench_db are dropped. With KEEP=1, or when the script fails, $BT is kept for its logs.

BENCH_PIDS=()
BENCH_DBS=()
BENCH_OK=0

bench_init() {
    BENCH_NAME=$1
    command -v cargo >/dev/null 2>&1 || die "cargo is missing (install Rust: https://rustup.rs)"
    BT=$(mktemp -d "/tmp/gbm-bench-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ensure_mariadb
    command -v mariadb >/dev/null 2>&1 || die "the mariadb client is missing (apt-get install mariadb-client)"
    mkdir -p target/bench
}

bench_track() {
    BENCH_PIDS+=("$1")
}

bench_cleanup() {
    local rc=$?
    set +e
    for p in "${BENCH_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${BENCH_PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    local f p
    for f in "$BT"/pids "$BT"/*/pids; do
        [ -f "$f" ] || continue
        while read -r p; do
            if [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF "$BT"; then
                kill -9 "$p" 2>/dev/null
            fi
        done <"$f"
    done
    for db in "${BENCH_DBS[@]}"; do
        mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null
    done
    if [ "$rc" = 0 ] && [ "$BENCH_OK" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$BT"
    else
        echo "bench-$BENCH_NAME: logs and configs kept in $BT" >&2
    fi
    exit "$rc"
}

# bench_db NAME: a fresh database with install.sql applied; sets DB_URL (not in a subshell:
# the database must be registered for the cleanup).
bench_db() {
    local db=$1
    mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\`" \
        || die "cannot create database $db as root"
    mariadb -uroot "$db" <install.sql || die "install.sql failed on $db"
    BENCH_DBS+=("$db")
    DB_URL="mysql://root@127.0.0.1:3306/$db"
}

# bench_build ARGS...: a release build (cargo's own output on failure).
bench_build() {
    log "building (release): cargo build --release $*"
    cargo build --release --quiet "$@" || die "cargo build --release $* failed"
}

# bench_header TITLE COMMAND: the first lines of a result file.
bench_header() {
    echo "## $1"
    echo
    echo "Command: \`$2\`"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))," \
        "$(free -g | awk '/^Mem:/ {print $2}') GB RAM, Linux $(uname -r), MariaDB $(mariadb -uroot -N -e 'SELECT VERSION()')," \
        "gobearmon $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes'), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
}
