#!/usr/bin/env bash
# Fails when a file includes a project header of a layer it may not see (a layer above it,
# or a sibling). Usage: tools/check-layers.sh [repo root]. Run by CTest and by the build.
set -uo pipefail
cd "${1:-$(dirname "$0")/..}"

# The layer a path (of a file, or of an include as written) belongs to.
layer_of() {
  case "$1" in
    bucketd/engine.h | bucketd/sweep_thread.h | engine/include/bucketd/engine.h | \
      engine/include/bucketd/sweep_thread.h) echo api ;;
    bucketd/* | engine/include/bucketd/*) echo public ;;
    engine/base/*) echo base ;;
    engine/definition/*) echo definition ;;
    engine/state/*) echo state ;;
    engine/fold/*) echo fold ;;
    engine/replay/*) echo replay ;;
    engine/core/*) echo core ;;
    engine/cluster/*) echo cluster ;;
    log/*) echo log ;;
    snapshot/*) echo snapshot ;;
    tools/build_info.h) echo build_info ;;  # generated at configure time: version, commit
    tools/bucketd/*) echo server ;;
    tools/bucketctl/*) echo bucketctl ;;
    tools/loadgen/*) echo loadgen ;;
    *) echo unknown ;;
  esac
}

# What each layer may include (besides itself). Order, bottom to top:
# public < base < definition < state < {log, snapshot, fold} < replay < core < cluster < tools.
declare -A allowed=(
  [public]="public"
  [api]="public"
  [base]="public"
  [definition]="public base"
  [state]="public base definition"
  [log]="public base"
  [snapshot]="public base definition state"
  [fold]="public base definition state"
  [replay]="public base definition state fold"
  [core]="public api base definition state log snapshot fold replay"
  [cluster]="public api base definition state log snapshot fold replay core"
  [build_info]=""
  [server]="public api base:engine/base/json_writer.h base:engine/base/json_values.h base:engine/base/check.h base:engine/base/http_url.h core:engine/core/fold_reader.h cluster build_info"
  [bucketctl]="public api base:engine/base/record.h log snapshot build_info"
  [loadgen]=""
)

status=0
while IFS= read -r file; do
  from=$(layer_of "$file")
  if [[ "$from" == unknown ]]; then
    echo "$file: not in a layer folder (see layer_of)"; status=1; continue
  fi
  while IFS=: read -r line inc; do
    if [[ "$inc" == ../* || "$inc" == */../* ]]; then
      echo "$file:$line: relative include \"$inc\" (write the path from the repo root)"; status=1; continue
    fi
    [[ "$inc" != */* ]] && continue  # same folder
    to=$(layer_of "$inc")
    [[ "$to" == "$from" ]] && continue
    ok=0
    for a in ${allowed[$from]}; do
      if [[ "$a" == "$to" || "$a" == "$to:$inc" ]]; then ok=1; break; fi
    done
    if [[ $ok == 0 ]]; then  # unknown (tests/, bench/, a typo) is never allowed
      echo "$file:$line: $from may not include \"$inc\" ($to)"; status=1
    fi
  done < <(grep -nE '^\s*#\s*include\s*"' "$file" | sed -E 's/^([0-9]+):\s*#\s*include\s*"([^"]+)".*/\1:\2/')
done < <(find engine log snapshot tools -name '*.h' -o -name '*.cc' | sort)
exit $status
