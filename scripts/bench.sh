#!/usr/bin/env bash
# Runs the benchmarks (python -m bench ARGS...). Installs what they need: redis-server, wrk (the
# real-server part), valgrind and ab (the opt-in instruction counts) from Debian packages when
# missing, and the project's virtualenv. E.g. scripts/bench.sh --only realserver
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
need redis-server redis-server
need wrk wrk
need valgrind valgrind
need ab apache2-utils
. scripts/env.sh dev
exec python -m bench "$@"
