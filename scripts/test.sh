#!/bin/sh
# The test command: makes sure MariaDB and the test servers' packages are present and running,
# creates the test user, then runs formatting, lints and every test.
#
#   scripts/test.sh            (as root on a fresh Debian machine; CI runs exactly this)
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_mariadb
# Servers the integration tests start themselves: a DNS server, an SMTP server, and the tools
# for network namespaces with packet loss, and a three-node Galera cluster (tests/galera).
ensure_packages dnsmasq-base python3-aiosmtpd nftables iproute2 systemd chromium chromium-driver \
    galera-4 rsync

log "creating the test user"
mariadb_root <<'SQL'
CREATE USER IF NOT EXISTS 'gbm_test'@'127.0.0.1' IDENTIFIED BY 'gbm_test_pw';
CREATE USER IF NOT EXISTS 'gbm_test'@'localhost' IDENTIFIED BY 'gbm_test_pw';
GRANT ALL ON `gbm\_t\_%`.* TO 'gbm_test'@'127.0.0.1';
GRANT ALL ON `gbm\_t\_%`.* TO 'gbm_test'@'localhost';
SQL
export GBM_TEST_MYSQL="mysql://gbm_test:gbm_test_pw@127.0.0.1:3306/"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets -- -D warnings
log "cargo test"
cargo test --all-targets --no-fail-fast
