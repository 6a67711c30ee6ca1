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

# galera_start: a three-node MariaDB Galera cluster on loopback for the demo, in
# $DIR/galera/n1..n3 (SQL ports 33061-33063; group communication 45671-45673; IST
# 45681-45683; SST 45691-45693), the first node bootstrapping it. Returns once all three are
# synced. Installs mariadb-server, galera-4 and rsync when missing.
galera_start() {
    ensure_packages mariadb-server mariadb-client galera-4 rsync
    command -v mariadbd >/dev/null 2>&1 || PATH="$PATH:/usr/sbin"
    G=$DIR/galera
    for i in 1 2 3; do
        d=$G/n$i
        mkdir -p "$d"
        cat >"$d/my.cnf" <<CNF
[mysqld]
user=mysql
datadir=$d/data
socket=$d/sock
port=3306$i
bind-address=127.0.0.1
pid-file=$d/pid
log-error=$d/err.log
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
skip-name-resolve
wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name=gobearmon_demo
wsrep_cluster_address=gcomm://127.0.0.1:45671,127.0.0.1:45672,127.0.0.1:45673
wsrep_node_address=127.0.0.1:4567$i
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:4567$i;ist.recv_addr=127.0.0.1:4568$i"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:4569$i
wsrep_node_name=n$i
CNF
        chown -R mysql:mysql "$d"
        mariadb-install-db --user=mysql --datadir="$d/data" --auth-root-authentication-method=normal \
            --skip-test-db >"$d/install.log" 2>&1 || die "mariadb-install-db failed (see $d/install.log)"
    done
    log "starting a Galera cluster of three (about 30 s)"
    mariadbd --defaults-file="$G/n1/my.cnf" --wsrep-new-cluster >/dev/null 2>&1 &
    galera_wait 1
    mariadb -uroot -h127.0.0.1 -P33061 -e "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES"
    for i in 2 3; do
        mariadbd --defaults-file="$G/n$i/my.cnf" >/dev/null 2>&1 &
        galera_wait "$i"
    done
}

# galera_wait N: until node N of galera_start says Synced (90 s at most).
galera_wait() {
    n=0
    until [ "$(mariadb -uroot -h127.0.0.1 -P"3306$1" -N -e "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | cut -f2)" = Synced ]; do
        n=$((n + 1))
        [ $n -gt 900 ] && die "Galera node $1 not synced after 90 s (see $G/n$1/err.log)"
        sleep 0.1
    done
}
