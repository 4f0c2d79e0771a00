#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain:
# - PostgreSQL's server binaries (initdb, pg_ctl), which the store and
#   multi-replica tests use to start their own throwaway cluster;
# - Chromium and chromium-driver, which the console's browser tests drive
#   headless (elements_testkit::browser).
# Idempotent; installs only what is missing, after one `apt-get update`.
set -euo pipefail

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
UPDATED=0
apt_install() {
  if [ "$UPDATED" -eq 0 ]; then
    $SUDO apt-get update -qq
    UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

have_pg() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

have_chromium() {
  command -v chromedriver >/dev/null 2>&1 \
    && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
}

if ! have_pg; then
  echo "setup: installing PostgreSQL server binaries" >&2
  apt_install postgresql
fi
if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
  # initdb refuses to run as root; the test harness runs it as `postgres`.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if ! have_chromium; then
  echo "setup: installing chromium and chromium-driver" >&2
  apt_install chromium chromium-driver
fi

# CI checks that no crate declares a dependency it does not use.
if ! command -v cargo-machete >/dev/null 2>&1; then
  echo "setup: installing cargo-machete" >&2
  cargo install --locked cargo-machete >/dev/null
fi

# The OpenAPI conformance test (tests/openapi.rs) runs schemathesis against
# a live server and openapi-spec-validator on the served document, from a
# Python virtual environment under target/ (gitignored, never system-wide).
# Pinned: schemathesis's major version decides its command line and checks.
PY_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/py"
PY_REQUIREMENTS=("schemathesis==4.32.5" "openapi-spec-validator==0.9.0")
if ! "$PY_VENV/bin/python" -c 'import schemathesis, openapi_spec_validator' >/dev/null 2>&1 \
  || ! "$PY_VENV/bin/pip" freeze 2>/dev/null | grep -qx "${PY_REQUIREMENTS[0]}"; then
  echo "setup: creating $PY_VENV with ${PY_REQUIREMENTS[*]}" >&2
  if ! python3 -m venv "$PY_VENV" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv "$PY_VENV"
  fi
  "$PY_VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
fi
