#!/bin/sh
# tests/gpu/stage_device_inputs.sh — run HERE (a development machine with apt and
# the shared folder), before handing tests/gpu/device_check.sh to a device
# machine. Only the checkout travels there, and that machine has no package
# registry, so this puts what the check needs into two git-ignored folders of
# the checkout, to be named in the device call's carry:
#
#   .device-debs/    the Debian packages of the build dependencies (about 16 MB;
#                    device_check.sh unpacks them under /tmp only if pkg-config
#                    does not find the libraries there)
#   .device-shared/  stories260k and the two TinyStories token files of
#                    ../shared/data/REFERENCE.md (about 2 MB), in the shared
#                    folder's own layout
#
# usage: tests/gpu/stage_device_inputs.sh [SHARED_DIR]   (default ../shared)
set -eu
cd "$(dirname "$0")/../.."
shared=${1:-../shared}
mkdir -p .device-debs .device-shared/models/stories260k .device-shared/data/tinystories
for p in /.device-debs/ /.device-shared/ /device-out/; do
    grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude
done
(cd .device-debs && apt-get download \
    liburing-dev liburing2 libxxhash-dev libxxhash0 libcjson-dev libcjson1 \
    libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 \
    liblapacke liblapacke-dev libgfortran5 pkgconf pkgconf-bin libpkgconf3 \
    libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2 \
    zlib1g-dev libsentencepiece-dev libsentencepiece0)
for f in config.json model.safetensors tokenizer.bin; do
    cp "$shared/models/stories260k/$f" .device-shared/models/stories260k/
done
for f in calib.tok512.npy eval.tok512.npy; do
    cp "$shared/data/tinystories/$f" .device-shared/data/tinystories/
done
cp "$shared/data/REFERENCE.md" .device-shared/data/
du -sh .device-debs .device-shared
echo 'carry: [".device-debs", ".device-shared"]'
