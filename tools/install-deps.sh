#!/bin/sh
# Installs the Debian packages slicepipe needs to build and test, if missing.
# Usage: tools/install-deps.sh [--test]   (--test adds what the test suite uses)
set -eu
pkgs="cmake make gcc g++ pkg-config liburing-dev libopenblas-dev liblapacke-dev libxxhash-dev libcjson-dev"
# The CUDA backend (gpu/, SLICEPIPE_CUDA=AUTO) uses the CUDA Toolkit where it is already
# installed (/usr/local/cuda); it is never installed from here.
# tokenizers: PCRE2 regexes, utf8proc normalization, zlib (.gz text), libsentencepiece (tokenizer.model)
pkgs="$pkgs libpcre2-dev libutf8proc-dev zlib1g-dev libsentencepiece-dev"
# the onednn backend (linalg/onednn.c, SLICEPIPE_ONEDNN=AUTO): oneDNN 2.x (Debian 12: 2.6.3)
pkgs="$pkgs libdnnl-dev"
if [ "${1:-}" = "--test" ]; then
    # python3-numpy: the independent numpy references under tests/;
    # chromium: renders report.html headless in tests/test_report.sh;
    # python3-sentencepiece: the tokenizer.model reference. npm is not listed:
    # tests/tokenizer.cmake uses Node's npm when present (nodejs from other
    # sources ships its own) to install HF's tokenizers into the build folder.
    pkgs="$pkgs python3 python3-numpy chromium python3-sentencepiece"
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
