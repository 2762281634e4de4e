#!/usr/bin/env bash
# Runs the whole test suite. Installs what it needs: redis-server, PostgreSQL and Chromium from
# Debian packages when missing, and a virtualenv with the project and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
need redis-server redis-server
need redis-cli redis-tools
. scripts/env.sh dev
exec python -m pytest "$@"
