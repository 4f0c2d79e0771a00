#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: PostgreSQL's server
# binaries (initdb, pg_ctl), which the store and multi-replica tests use to
# start their own throwaway cluster. Idempotent; does nothing when present.
set -euo pipefail

have_pg() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_pg; then
  echo "setup: installing PostgreSQL server binaries" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
  # initdb refuses to run as root; the test harness runs it as `postgres`.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
