#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds consumer.c against it
# the ways README.md tells users to: pkg-config (shared, and fully static
# with --static) and find_package (evmux::evmux, evmux::evmux_static). Each
# program must run against the installed library: ldd must resolve
# libevmux.so.0 under the prefix. Then a project that adds the source tree
# with add_subdirectory must find nothing of evmux's in its own bin/ or lib/.
# usage: install_test.sh CMAKE BUILD_DIR SOURCE_DIR CC VERSION LIBDIR
set -euo pipefail
cmake=$1 build=$2 src=$3 cc=$4 version=$5 libdir=$6
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evmux-install-test.XXXXXX")
prefix=$tmp/prefix
unset LD_LIBRARY_PATH

# cmake --install rewrites the build's install_manifest.txt, which
# `make uninstall` reads: keep the user's.
manifest=$build/install_manifest.txt
[ -f "$manifest" ] && cp "$manifest" "$tmp/manifest.saved"
ok=0
finish() {
    if [ -f "$tmp/manifest.saved" ]; then cp "$tmp/manifest.saved" "$manifest"; else rm -f "$manifest"; fi
    if [ $ok = 1 ]; then rm -rf "$tmp"; else echo "(files kept in $tmp)" >&2; fi
}
trap finish EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "-- $*"; }

# A consumer prints its version and runs a timer once; a dynamic one must
# load libevmux.so.0 from the prefix, a static one no libevmux at all.
check_program() { # program dynamic|static
    local out libs
    out=$("$1") || fail "$1 exited non-zero: $out"
    [[ $out == "evmux $version backends "*" timer fired 1" ]] || fail "$1 printed: $out"
    libs=$(ldd "$1" 2>&1 || true) # a static program makes ldd fail
    if [ "$2" = dynamic ]; then
        [[ $libs == *"libevmux.so.0 => $prefix/$libdir/libevmux.so.0 "* ]] ||
            fail "$1 does not load libevmux.so.0 from $prefix/$libdir: $libs"
    elif [[ $libs == *libevmux* ]]; then
        fail "$1 should not need libevmux.so: $libs"
    fi
    echo "   $1: $out"
}

step "install into $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" || fail "cmake --install: $(cat "$tmp/install.log")"
for f in include/evmux.h include/evmux_version.h "$libdir/libevmux.a" "$libdir/libevmux.so.$version" \
         "$libdir/pkgconfig/evmux.pc" "$libdir/cmake/evmux/evmuxConfig.cmake" \
         "$libdir/cmake/evmux/evmuxConfigVersion.cmake" "$libdir/cmake/evmux/evmuxTargets.cmake" \
         bin/evmux-echo-server bin/evmux-echo-client bin/evmux-bench; do
    [ -f "$prefix/$f" ] || fail "not installed: $f"
done
[ "$(readlink "$prefix/$libdir/libevmux.so")" = libevmux.so.0 ] || fail "libevmux.so should point to libevmux.so.0"
[ "$(readlink "$prefix/$libdir/libevmux.so.0")" = "libevmux.so.$version" ] ||
    fail "libevmux.so.0 should point to libevmux.so.$version"

if command -v pkg-config >/dev/null; then
    step "pkg-config consumers"
    export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
    [ "$(pkg-config --modversion evmux)" = "$version" ] || fail "pkg-config --modversion evmux: $(pkg-config --modversion evmux)"
    # shellcheck disable=SC2046 # pkg-config's flags are meant to split
    "$cc" "$here/consumer.c" -o "$tmp/pc-shared" $(pkg-config --cflags --libs evmux) \
        -Wl,-rpath,"$(pkg-config --variable=libdir evmux)" || fail "pkg-config shared build"
    # shellcheck disable=SC2046
    "$cc" -static "$here/consumer.c" -o "$tmp/pc-static" $(pkg-config --static --cflags --libs evmux) ||
        fail "pkg-config --static build"
    check_program "$tmp/pc-shared" dynamic
    check_program "$tmp/pc-static" static
    unset PKG_CONFIG_PATH
    pc_skipped=0
else
    echo "pkg-config is not installed: its consumers are skipped"
    pc_skipped=1
fi

# Requests for the minor releases on either side must be refused.
IFS=. read -r major minor _ <<<"$version"
reject="$major.$((minor + 1))"
[ "$minor" -gt 0 ] && reject="$reject;$major.$((minor - 1))"

step "find_package consumer (refuses $reject)"
"$cmake" -S "$here" -B "$tmp/package" -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DEVMUX_WANT="$major.$minor" -DEVMUX_REJECT="$reject" \
    >"$tmp/package.log" 2>&1 || fail "configure: $(cat "$tmp/package.log")"
grep -qx "evmux_DIR:PATH=$prefix/$libdir/cmake/evmux" "$tmp/package/CMakeCache.txt" ||
    fail "find_package found $(grep evmux_DIR "$tmp/package/CMakeCache.txt")"
"$cmake" --build "$tmp/package" -j2 >>"$tmp/package.log" 2>&1 || fail "build: $(cat "$tmp/package.log")"
check_program "$tmp/package/consumer-shared" dynamic
check_program "$tmp/package/consumer-static" static

step "add_subdirectory consumer"
"$cmake" -S "$here" -B "$tmp/subdir" -DCMAKE_C_COMPILER="$cc" -DEVMUX_CONSUMER=subdir \
    -DEVMUX_SOURCE_DIR="$src" >"$tmp/subdir.log" 2>&1 || fail "configure: $(cat "$tmp/subdir.log")"
"$cmake" --build "$tmp/subdir" -j2 >>"$tmp/subdir.log" 2>&1 || fail "build: $(cat "$tmp/subdir.log")"
for p in consumer-shared consumer-static; do
    out=$("$tmp/subdir/$p") && [[ $out == *"timer fired 1" ]] || fail "subdir $p printed: $out"
done
for d in bin lib; do
    [ ! -e "$tmp/subdir/$d" ] || fail "evmux wrote into the parent's $d/: $(ls "$tmp/subdir/$d")"
done
# It built its libraries in its own binary dir, and only them.
[ -f "$tmp/subdir/evmux/lib/libevmux.a" ] || fail "no libevmux.a in evmux's own lib/"
for d in bin tests examples; do
    [ ! -e "$tmp/subdir/evmux/$d" ] || fail "a subproject evmux should not build its $d/"
done
grep -qx "CMAKE_BUILD_TYPE:STRING=" "$tmp/subdir/CMakeCache.txt" ||
    fail "evmux set the parent's $(grep '^CMAKE_BUILD_TYPE' "$tmp/subdir/CMakeCache.txt")"

ok=1
[ $pc_skipped = 0 ] || exit 77
echo "install, pkg-config, find_package and add_subdirectory consumers: ok"
