#!/bin/sh
# Installs the Debian packages slicepipe needs to build and test, if missing.
# Usage: tools/install-deps.sh [--test]   (--test adds what the test suite uses)
set -eu
pkgs="cmake make gcc pkg-config liburing-dev libopenblas-dev liblapacke-dev libxxhash-dev libcjson-dev"
if [ "${1:-}" = "--test" ]; then
    # python3-numpy: the independent numpy references under tests/;
    # chromium: renders report.html headless in tests/test_report.sh.
    pkgs="$pkgs python3 python3-numpy chromium"
fi
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
