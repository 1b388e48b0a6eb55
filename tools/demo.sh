#!/bin/sh
# The README's demo: slice the example model and show what happened.
# Usage: tools/demo.sh SLICEPIPE MANIFEST
set -eu
bin=$1
manifest=$2
if [ ! -f "$manifest" ]; then
    echo "demo: $manifest is missing (the example model ships under examples/)" >&2
    exit 66
fi
"$bin" run "$manifest"
