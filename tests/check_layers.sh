#!/bin/sh
# tests/check_layers.sh — the build's layers hold: a file compiled as part of
# a layer (with exactly that layer's include directories, as the build gives
# them) reaches the headers of its own and lower layers, and an upward
# include fails to compile ("No such file").
#
#   check_layers.sh CC WORKDIR LAYER:INCDIRS:OK_HEADER:BAD_HEADER ...
#
# INCDIRS is the target's include directories, ';'-separated. Exit 0 when
# every layer holds, 1 naming each one that does not.
set -u
cc=$1 work=$2
shift 2
mkdir -p "$work"
fail=0
for spec in "$@"; do
    layer=${spec%%:*} rest=${spec#*:}
    incs=${rest%%:*} rest=${rest#*:}
    ok=${rest%%:*} bad=${rest#*:}
    flags=""
    old_ifs=$IFS
    IFS=';'
    for d in $incs; do [ -n "$d" ] && flags="$flags -I$d"; done
    IFS=$old_ifs
    printf '#include "%s"\n' "$ok" > "$work/$layer-ok.c"
    printf '#include "%s"\n' "$bad" > "$work/$layer-bad.c"
    # shellcheck disable=SC2086
    if ! "$cc" -fsyntax-only -D_GNU_SOURCE $flags "$work/$layer-ok.c" 2> "$work/$layer-ok.err"; then
        echo "FAIL $layer: its own include \"$ok\" does not compile: $(head -1 "$work/$layer-ok.err")"
        fail=1
    fi
    # shellcheck disable=SC2086
    if "$cc" -fsyntax-only -D_GNU_SOURCE $flags "$work/$layer-bad.c" 2> "$work/$layer-bad.err"; then
        echo "FAIL $layer: the upward include \"$bad\" compiles: the layer is not enforced"
        fail=1
    elif ! grep -q "No such file" "$work/$layer-bad.err"; then
        echo "FAIL $layer: the upward include \"$bad\" fails for another reason: $(head -1 "$work/$layer-bad.err")"
        fail=1
    else
        echo "ok   $layer: \"$ok\" compiles, the upward \"$bad\" is not found"
    fi
done
[ $fail = 0 ] && echo "all layers hold" || echo "a layer does not hold"
exit $fail
