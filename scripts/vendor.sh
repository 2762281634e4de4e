#!/usr/bin/env bash
# Refreshes the dashboard's vendored browser libraries in flask_tickstock_monitor/static/vendor/
# from npm: the dist files unchanged, each with its licence beside it. No CDN at run time.
# Pinned versions below; to upgrade, change a version, run this script, test the dashboard
# (tests/test_dashboard*.py) and commit the result.
set -euo pipefail
SOCKET_IO_CLIENT=4.8.4
UPLOT=1.6.32

cd "$(dirname "$0")/.."
dest=flask_tickstock_monitor/static/vendor
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch <package> <version> <dir>: unpacks the npm tarball into <dir>
    (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null)
    mkdir -p "$3"
    tar -xzf "$tmp/$(echo "$1" | tr -d @ | tr / -)-$2.tgz" -C "$3" --strip-components=1
}

fetch socket.io-client "$SOCKET_IO_CLIENT" "$tmp/sio"
fetch uplot "$UPLOT" "$tmp/uplot"

mkdir -p "$dest"
install -m 644 "$tmp/sio/dist/socket.io.min.js" "$dest/socket.io.min.js"
install -m 644 "$tmp/sio/LICENSE" "$dest/socket.io-client.LICENSE"
install -m 644 "$tmp/uplot/dist/uPlot.iife.min.js" "$dest/uPlot.iife.min.js"
install -m 644 "$tmp/uplot/dist/uPlot.min.css" "$dest/uPlot.min.css"
install -m 644 "$tmp/uplot/LICENSE" "$dest/uPlot.LICENSE"
cat > "$dest/VERSIONS" <<VERSIONS
# Written by scripts/vendor.sh: npm packages vendored here, unchanged.
socket.io-client $SOCKET_IO_CLIENT dist/socket.io.min.js (MIT, socket.io-client.LICENSE)
uplot $UPLOT dist/uPlot.iife.min.js dist/uPlot.min.css (MIT, uPlot.LICENSE)
VERSIONS
echo "vendored socket.io-client $SOCKET_IO_CLIENT and uplot $UPLOT into $dest"
