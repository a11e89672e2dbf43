#!/usr/bin/env bash
# Benchmark: what a layer-cache hit costs. Every hit is re-hashed in full
# against its digest (so that a poisoned cache gives a rebuild, never a
# hit); this measures that price on the everyday CI step, one small path
# added and `build --cache --push` (gzip) to a loopback registry, against
# a nixoci built from BASE_REV, before the re-hash (default e3edaa6), on
# the same files, each with its own cache and registry. The two run in
# turn, ROUNDS times, each round adding a new path, and the medians count.
#
# usage: bash benches/cache-hit.sh [SIZE_MIB] [ROUNDS] [BASE_REV]
#        (default 2400 5 e3edaa6)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2400}
rounds=${2:-5}
base_rev=${3:-e3edaa6}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
source benches/common.sh
base=$(nixoci_at "$base_rev")

make_bench_store "$size_mib" --skewed
start_registry base 5493
start_registry ours 5494

step() { # BINARY NAME PORT TAG
  "$1" build --spec "$work/spec.json" --compression gzip --cache "$work/cache-$2" -q -o "$work/layout-$2" \
    --push "127.0.0.1:$3/bench/app:$4" --insecure
}
seconds() { # CMD…: wall seconds of the command
  local t
  t=$(date +%s.%N); "$@" > /dev/null; python3 -c "import time; print(f'{time.time() - $t:.3f}')"
}

printf 'bench store: %s MiB in %s paths, %s rounds\n' "$size_mib" "$(python3 -c "import json; print(len(json.load(open('$work/spec.json'))['graph']))")" "$rounds"
printf 'cold: base %s s, nixoci %s s\n' "$(seconds step "$base" base 5493 cold)" "$(seconds step "$nixoci" ours 5494 cold)"
base_times=() ours_times=()
for round in $(seq "$rounds"); do
  add_top_path "round$round"
  # Alternate which one goes first, so that neither always meets a warmer machine.
  if (( round % 2 )); then
    base_times+=("$(seconds step "$base" base 5493 "r$round")"); ours_times+=("$(seconds step "$nixoci" ours 5494 "r$round")")
  else
    ours_times+=("$(seconds step "$nixoci" ours 5494 "r$round")"); base_times+=("$(seconds step "$base" base 5493 "r$round")")
  fi
  printf 'round %s: base %s s, nixoci %s s\n' "$round" "${base_times[-1]}" "${ours_times[-1]}"
done
python3 - "${base_times[*]}" "${ours_times[*]}" "$base_rev" <<'PY'
import statistics, sys
base = statistics.median(map(float, sys.argv[1].split()))
ours = statistics.median(map(float, sys.argv[2].split()))
print(f"one path added, median: {sys.argv[3]} {base:.3f} s, nixoci {ours:.3f} s: "
      f"the re-hash costs {ours - base:+.3f} s ({ours / base:.2f}x)   (target <= +0.3 s)")
PY
