#!/usr/bin/env bash
# The layering check passes on the tree, and refuses a copy of it where a lower layer
# includes a higher one (so the check itself can fail).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/check-layers.sh" "$root"
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$root/engine" "$root/log" "$root/snapshot" "$root/tools" "$copy/"
sed -i '0,/^#include "/s//#include "engine\/core\/clock.h"\n#include "/' "$copy/engine/fold/sweep.cc"
if out=$("$root/tools/check-layers.sh" "$copy"); then
  echo "FAIL: an include of engine/core from engine/fold passed the check"; exit 1
fi
grep -q 'fold may not include "engine/core/clock.h"' <<<"$out" || { echo "FAIL: $out"; exit 1; }
echo "OK: the tree passes; an up-include is refused: $out"
