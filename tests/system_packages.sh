#!/usr/bin/env bash
# Debian packages the tests drive as real tools, installed once by `make test` when one is missing:
# promtool (`prometheus`) checks the alert rules and the dashboard's queries (tests/deploy); `chromium` is
# the headless browser the console tests run in (tests/console, through Playwright); `postgresql` is the
# server the store tests start on a free port (tests/postgres.py). Those tests fail without them.
set -euo pipefail
if command -v promtool >/dev/null && command -v chromium >/dev/null \
    && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "make test needs promtool (prometheus), chromium and the PostgreSQL server binaries; install them" \
       "with your system's package manager (Debian: apt-get install prometheus chromium postgresql)" >&2
  exit 1
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo  # root in CI containers, sudo on a developer's machine
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium postgresql
