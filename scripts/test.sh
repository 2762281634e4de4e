#!/usr/bin/env bash
# Runs the whole test suite. Installs what it needs: redis-server, PostgreSQL and Chromium from
# Debian packages when missing, and a virtualenv with the project and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
need redis-server redis-server
need redis-cli redis-tools
need chromium chromium  # the dashboard's browser tests (tests/test_dashboard.py)
need promtool --no-install-recommends prometheus  # checks docs/prometheus-alerts.yml (tests/test_metrics_docs.py)
# The durable error log's tests create and drop their own database on 127.0.0.1:5432 as user
# postgres without a password; start the Debian cluster when nothing listens there.
need psql postgresql
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    pg_version="$(ls /etc/postgresql | sort -V | tail -1)"
    hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
    grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" \
        || sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
    for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break
        sleep 0.2
    done
fi
. scripts/env.sh dev
exec python -m pytest "$@"
