#!/usr/bin/env bash
# Starts example_app on the embedded default (memory://): no Redis server needed.
# Open http://127.0.0.1:${PORT:-5000}/ (the dashboard is at /monitor/).
. "$(dirname "$0")/env.sh" all
export TICKSTOCK_MONITOR_REDIS_URL="${TICKSTOCK_MONITOR_REDIS_URL:-memory://demo}"
exec python -m example_app --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}"
