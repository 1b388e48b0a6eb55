#!/bin/sh
# Installs what examples/train/train.py needs (Debian 12; run as root).
# bible-kjv-text holds the compressed KJV text; its dependency bible-kjv
# provides the `bible` reader that train.py uses to decompress it.
set -e
export DEBIAN_FRONTEND=noninteractive
PKGS="python3-torch python3-sentencepiece python3-numpy bible-kjv-text bible-kjv"
apt-get install -y $PKGS || { apt-get update && apt-get install -y $PKGS; }
/usr/bin/python3 -c 'import torch, sentencepiece, numpy; print("torch", torch.__version__)'
command -v bible >/dev/null
