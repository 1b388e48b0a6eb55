# tests/gpu/debs_env.sh — sourced by device_check.sh on a machine without the
# build dependencies (a device machine has no package registry): unpacks the
# Debian packages that tests/gpu/stage_device_inputs.sh downloaded into
# $SP_DEBS (default .device-debs) under a private prefix, never into /, and
# points pkg-config, the compiler, the linker and the loader at it.
#
#   . tests/gpu/debs_env.sh            sets SP_DEPS_PREFIX and the variables below
#
# What dpkg's maintainer scripts would have done is done by hand: the .pc files'
# paths are rewritten into the prefix, and the alternatives that Debian points
# at OpenBLAS (libblas.so.3, liblapack.so.3) become plain symlinks.
sp_debs_env() {
    debs=${SP_DEBS:-.device-debs}
    P=${SP_DEPS_PREFIX:-/tmp/slicepipe-deps}
    ls "$debs"/*.deb >/dev/null 2>&1 || { echo "debs_env: no .deb files in $debs" >&2; return 1; }
    mkdir -p "$P"
    for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$P" || dpkg -x "$f" "$P" || return 1; done
    L=$P/usr/lib/x86_64-linux-gnu
    for pair in "libblas.so.3:openblas-pthread/libblas.so.3" "libblas.so:openblas-pthread/libblas.so" \
                "liblapack.so.3:openblas-pthread/liblapack.so.3" "liblapack.so:openblas-pthread/liblapack.so" \
                "libopenblas.so.0:openblas-pthread/libopenblas.so.0" "libopenblas.so:openblas-pthread/libopenblas.so"; do
        name=${pair%%:*}; target=${pair#*:}
        [ -e "$L/$target" ] && ln -sfn "$target" "$L/$name"
    done
    for pair in "blas.pc:../openblas-pthread/pkgconfig/blas-openblas.pc" \
                "lapack.pc:../openblas-pthread/pkgconfig/lapack-openblas.pc" \
                "openblas.pc:../openblas-pthread/pkgconfig/openblas.pc"; do
        name=${pair%%:*}; target=${pair#*:}
        [ -e "$L/pkgconfig/$target" ] && ln -sfn "$target" "$L/pkgconfig/$name"
    done
    for pc in $(find "$P" -name '*.pc' -type f); do
        sed -i -e "s#=/usr/#=$P/usr/#g" -e "s#=/usr\$#=$P/usr#g" -e "s# -I/usr/# -I$P/usr/#g" -e "s# -L/usr/# -L$P/usr/#g" "$pc"
    done
    PCP=$L/pkgconfig:$L/openblas-pthread/pkgconfig:$P/usr/share/pkgconfig
    export PKG_CONFIG_PATH=$PCP${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export PATH=$PATH:$P/usr/bin
    if ! command -v pkg-config >/dev/null 2>&1 && [ -x "$P/usr/bin/pkgconf" ]; then
        ln -sfn pkgconf "$P/usr/bin/pkg-config"
    fi
    export CPATH=$P/usr/include:$P/usr/include/x86_64-linux-gnu${CPATH:+:$CPATH}
    export LIBRARY_PATH=$L:$L/openblas-pthread${LIBRARY_PATH:+:$LIBRARY_PATH}
    export CMAKE_LIBRARY_PATH=$L:$L/openblas-pthread${CMAKE_LIBRARY_PATH:+:$CMAKE_LIBRARY_PATH}
    export CMAKE_INCLUDE_PATH=$P/usr/include:$P/usr/include/x86_64-linux-gnu${CMAKE_INCLUDE_PATH:+:$CMAKE_INCLUDE_PATH}
    export LD_LIBRARY_PATH=$L:$L/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export SP_DEPS_PREFIX=$P
    return 0
}
