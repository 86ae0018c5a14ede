#!/usr/bin/env bash
# Installs every Debian package that building, testing and benchmarking bucketd needs.
# Idempotent and non-interactive: safe to run on a fresh Debian 12 machine or again later.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang-format
  librocksdb-dev libflatbuffers-dev flatbuffers-compiler
  libboost-dev libbenchmark-dev catch2
  libabsl-dev libsimdjson-dev libcpp-httplib-dev libcli11-dev libspdlog-dev libxxhash-dev
  nats-server libnats-dev
  # bucketd's sd_notify (Type=notify units, watchdog)
  libsystemd-dev
  # libcrypto: HMAC-SHA256 signatures of webhook deliveries
  libssl-dev
  # promtool, which tests/operations_test.cc runs on a real /metrics
  prometheus
  curl
  # tests/openapi_responses_test.py validates real responses against docs/openapi.json
  python3 python3-jsonschema
  # tools/run-fuzz.sh: clang, and libFuzzer with the sanitizer runtimes (compiler-rt), which
  # clang-14 only recommends
  clang libclang-rt-14-dev
  # tools/check-package.sh: dpkg-shlibdeps (the .deb's Depends) and systemd-analyze (verify)
  dpkg-dev systemd
)

# tools/check-typescript-client.sh: node and npm. Machines that carry a newer node (20, from
# another source) keep it; a bare Debian 12 gets its own nodejs and npm.
if ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
