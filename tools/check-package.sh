#!/usr/bin/env bash
# Builds the Debian package from a build dir and checks what an operator installs:
#   1. `cpack -G DEB` in the build dir makes exactly one bucketd_<version>-1_<arch>.deb;
#   2. its control fields (name, version, architecture, maintainer scripts, conffile, the
#      runtime libraries dpkg-shlibdeps found) and its files: both binaries, the unit, the
#      env file, the docs, and nothing of the embedding library (headers, archive, CMake);
#   3. the env file lists every BUCKETD_* variable the packaged `bucketd --help` names;
#   4. `systemd-analyze verify` on the packaged unit, when systemd-analyze runs here (it
#      needs no running systemd; any message it prints fails the check, since it exits 0 on
#      unknown keys), with ExecStart pointed at the extracted binary;
#   5. the extracted `bucketd --version` and `bucketctl --version` run and print the build's
#      version, and the extracted shell scripts parse.
# Usage: tools/check-package.sh [build dir, default build]. Run by tools/run-tests.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "check-package: FAIL: $*" >&2
  exit 1
}

for tool in cpack dpkg-deb dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || fail "$tool is missing (tools/setup.sh installs dpkg-dev)"
done

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || fail "no project version in $build/CMakeCache.txt"
arch=$(dpkg --print-architecture)
deb=$build/bucketd_${version}-1_${arch}.deb

rm -f "$build"/bucketd_*.deb
if ! (cd "$build" && cpack -G DEB) >"$tmp/cpack.log" 2>&1; then
  cat "$tmp/cpack.log" >&2
  fail "cpack -G DEB"
fi
[ -f "$deb" ] || fail "cpack made no $deb: $(ls "$build"/*.deb 2>/dev/null)"
debs=("$build"/*.deb)
[ "${#debs[@]}" = 1 ] || fail "more than one package: ${debs[*]}"

# --- control fields ---
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = bucketd ] || fail "Package: $(field Package)"
[ "$(field Version)" = "${version}-1" ] || fail "Version: $(field Version)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
depends=$(field Depends)
# adduser for postinst; libc and the C++ runtime are in any shlibdeps list; simdjson and
# spdlog are linked shared, so their absence means dpkg-shlibdeps did not run.
tr ',' '\n' <<<"$depends" | sed 's/^ *//' >"$tmp/depends.txt"
for dep in adduser libc6 libstdc++6 libsimdjson libspdlog; do
  awk -v dep="$dep" 'index($0, dep) == 1 { found = 1 } END { exit !found }' "$tmp/depends.txt" ||
    fail "Depends lacks $dep: $depends"
done
# The control archive: the maintainer scripts, executable, and the conffile.
dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - >"$tmp/control.txt"
for script in postinst prerm postrm; do
  grep -Eq "^-rwxr-xr-x .* \./$script$" "$tmp/control.txt" || fail "no executable $script"
done
dpkg-deb -e "$deb" "$tmp/control"
[ "$(cat "$tmp/control/conffiles")" = /etc/default/bucketd ] ||
  fail "conffiles: $(cat "$tmp/control/conffiles")"
for script in postinst prerm postrm; do
  sh -n "$tmp/control/$script" || fail "$script does not parse"
done

# --- files ---
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's#^\./#/#' >"$tmp/files.txt"
for path in /usr/bin/bucketd /usr/bin/bucketctl /lib/systemd/system/bucketd.service \
  /etc/default/bucketd /usr/share/doc/bucketd/operations.md; do
  grep -qx "$path" "$tmp/files.txt" || fail "$path is not in the package"
done
# The embedding library is for building hosts (cmake --install), not for running bucketd.
if grep -E '^/usr/(include|lib/.*\.a$|lib/.*cmake|lib/.*pkgconfig)' "$tmp/files.txt"; then
  fail "the package ships the embedding library's development files (above)"
fi

dpkg-deb -x "$deb" "$tmp/root"
bucketd=$tmp/root/usr/bin/bucketd
expected="bucketd $version ("
for bin in "$bucketd" "$tmp/root/usr/bin/bucketctl"; do
  out=$("$bin" --version) || fail "$bin --version exited non-zero"
  [[ "$out" == "$expected"* ]] || fail "$bin --version printed '$out'"
done

# --- the env file documents every variable bucketd reads ---
"$bucketd" --help | grep -o 'Env:BUCKETD_[A-Z_]*' | sed 's/^Env://' | sort -u >"$tmp/env-read"
grep -o '^#\{0,1\}BUCKETD_[A-Z_]*=' "$tmp/root/etc/default/bucketd" | tr -d '#=' | sort -u \
  >"$tmp/env-listed"
missing=$(comm -23 "$tmp/env-read" "$tmp/env-listed")
[ -z "$missing" ] || fail "/etc/default/bucketd does not list: $missing"
extra=$(comm -13 "$tmp/env-read" "$tmp/env-listed")
[ -z "$extra" ] || echo "check-package: note: /etc/default/bucketd lists variables this bucketd does not read: $extra"

# --- the unit ---
unit=$tmp/root/lib/systemd/system/bucketd.service
grep -qx 'Type=notify' "$unit" || fail "the unit is not Type=notify"
grep -qx 'ExecStart=/usr/bin/bucketd' "$unit" || fail "the unit's ExecStart is not /usr/bin/bucketd"
unit_check="systemd-analyze verify: skipped"
if ! command -v systemd-analyze >/dev/null; then
  unit_check+=" (systemd-analyze is not installed)"
elif ! systemd-analyze --version >/dev/null 2>&1; then
  unit_check+=" (systemd-analyze does not run here)"
else
  # verify checks that ExecStart exists: point it at the extracted binary, nothing else.
  mkdir -p "$tmp/verify"
  sed "s#^ExecStart=/usr/bin/bucketd#ExecStart=$bucketd#" "$unit" >"$tmp/verify/bucketd.service"
  if ! systemd-analyze verify --man=no "$tmp/verify/bucketd.service" >"$tmp/verify.log" 2>&1 ||
    [ -s "$tmp/verify.log" ]; then
    cat "$tmp/verify.log" >&2
    fail "systemd-analyze verify bucketd.service"
  fi
  unit_check="systemd-analyze verify: OK"
fi

echo "check-package: OK ($(basename "$deb"), $(du -k "$deb" | cut -f1) KiB; $unit_check)"
