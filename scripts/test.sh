#!/usr/bin/env bash
# Runs the whole test suite. Installs what it needs: redis-server, PostgreSQL's server and Chromium
# from Debian packages when missing, and a virtualenv with the project and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
need redis-server redis-server
need redis-cli redis-tools
need chromium chromium  # the dashboard's browser tests (tests/test_dashboard.py)
need promtool --no-install-recommends prometheus  # checks docs/prometheus-alerts.yml (tests/test_metrics_docs.py)
# The durable error log's tests run on a throwaway PostgreSQL cluster of their own (initdb into a
# temporary directory, a free loopback port; tests/databases.py): only the server's binaries are
# needed. Nothing of the machine's PostgreSQL configuration is read or changed.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    install_packages postgresql
fi
. scripts/env.sh dev
exec python -m pytest "$@"
