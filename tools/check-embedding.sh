#!/usr/bin/env bash
# Proves a host can build against bucketd in each supported way, by building and running
# examples/embed (which checks the transitions it reads):
#   1. find_package(bucketd): `cmake --install` of the build to a temp prefix, then the
#      example configured with -DCMAKE_PREFIX_PATH=<prefix>;
#   2. pkg-config: the example's one file compiled with `pkg-config --cflags bucketd` and
#      linked with `--libs`, and again with `--libs --static`;
#   3. add_subdirectory: the example with -DBUCKETD_SOURCE_DIR=<this repo>, which builds the
#      library again (only the library: no tests, tools, checks or -Werror in a host).
# Usage: tools/check-embedding.sh [build dir, default build]. Run by tools/run-tests.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
example=$root/examples/embed
jobs=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "check-embedding: FAIL: $*" >&2
  exit 1
}

# run <log name> <command...>: the command's output goes to a log, shown in full on failure.
run() {
  local log=$tmp/$1.log
  shift
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "$*"
  fi
}

# timed <label> <function>: runs a step and notes how long it took.
timings=""
timed() {
  local start=$SECONDS
  echo "check-embedding: $1"
  "$2"
  timings+="${timings:+, }$1 $((SECONDS - start)) s"
}

prefix=$tmp/prefix
find_package_step() {
  run install cmake --install "$build" --prefix "$prefix"
  run find-configure cmake -S "$example" -B "$tmp/find" -DCMAKE_PREFIX_PATH="$prefix"
  # The package must come from the temp prefix, not from one installed on the machine.
  grep -qx "bucketd_DIR:PATH=$prefix/.*" "$tmp/find/CMakeCache.txt" ||
    fail "find_package(bucketd) did not use $prefix: $(grep bucketd_DIR "$tmp/find/CMakeCache.txt")"
  run find-build cmake --build "$tmp/find" -j "$jobs"
  run find-run "$tmp/find/embed_example"
  # Every public header is installed, and each compiles alone from the prefix (it includes
  # nothing that stayed behind in the source tree).
  local header name
  for header in "$root"/engine/include/bucketd/*.h; do
    name=$(basename "$header")
    [ -f "$prefix/include/bucketd/$name" ] || fail "public header bucketd/$name is not installed"
    echo "#include <bucketd/$name>" >"$tmp/header.cc"
    run "header-$name" c++ -std=c++20 -fsyntax-only -I"$prefix/include" "$tmp/header.cc"
  done
}

pkg_config_step() {
  local pc
  pc=$(find "$prefix" -name bucketd.pc)
  [ -n "$pc" ] || fail "no bucketd.pc under $prefix"
  PKG_CONFIG_PATH=$(dirname "$pc")
  export PKG_CONFIG_PATH
  local cflags libs static_libs
  cflags=$(pkg-config --cflags bucketd) || fail "pkg-config --cflags bucketd"
  libs=$(pkg-config --libs bucketd) || fail "pkg-config --libs bucketd"
  static_libs=$(pkg-config --libs --static bucketd) || fail "pkg-config --libs --static bucketd"
  mkdir -p "$tmp/pc"
  # shellcheck disable=SC2086  # the flags are words
  run pc-compile c++ -std=c++20 -c "$example/main.cc" -o "$tmp/pc/main.o" $cflags
  # shellcheck disable=SC2086
  run pc-link c++ "$tmp/pc/main.o" -o "$tmp/pc/embed_example" $libs
  # shellcheck disable=SC2086
  run pc-link-static c++ "$tmp/pc/main.o" -o "$tmp/pc/embed_example_static" $static_libs
  run pc-run "$tmp/pc/embed_example"
  run pc-run-static "$tmp/pc/embed_example_static"
}

add_subdirectory_step() {
  local host=$tmp/subdir
  run subdir-configure cmake -S "$example" -B "$host" -DBUCKETD_SOURCE_DIR="$root" \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
  # Inside a host bucketd adds its library and nothing else.
  local extra
  extra=$(cmake --build "$host" --target help | awk '/^\.\.\. /{print $2}' | grep -vE '\.(o|i|s)$' |
    grep -vxE 'all|clean|depend|edit_cache|rebuild_cache|embed_example|bucketd|bucketd_(base|definition|state|fold|replay|core|log|snapshot)' || true)
  [ -z "$extra" ] || fail "add_subdirectory added targets beyond the library: $extra"
  ctest --test-dir "$host" -N | grep -qx 'Total Tests: 0' || fail "bucketd's tests joined the host's CTest"
  ! grep -q -- '-Werror' "$host/compile_commands.json" || fail "-Werror reached the host's build"
  run subdir-build cmake --build "$host" -j "$jobs"
  run subdir-run "$host/embed_example"
}

timed find_package find_package_step
timed pkg-config pkg_config_step
timed add_subdirectory add_subdirectory_step
echo "check-embedding: OK ($timings)"
