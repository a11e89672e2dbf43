#!/usr/bin/env bash
# Benchmark: does `nixoci build --cache --push` (new big layers uploaded
# while they are compressed) beat `nixoci build --cache` then `nixoci push`?
# Cold builds (a fresh cache) of a closure where one path holds three
# quarters of the bytes, each push to a fresh loopback registry, the two
# ways alternating, for zstd and gzip, ROUNDS times.
#
# usage: bash benches/push-overlap.sh [SIZE_MIB] [ROUNDS]   (default 2400 2)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2400}
rounds=${2:-2}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
source benches/common.sh
make_bench_store "$size_mib" --skewed

port=5700
printf '%-6s %-26s %8s %8s\n' "" "pipeline" "wall s" "CPU s"
for _ in $(seq "$rounds"); do
  for compression in zstd gzip; do
    for mode in "build, then push" "build --push"; do
      port=$((port + 1))
      start_registry "r$port" "$port"
      rm -rf "$work/layout" "$work/cache"
      build=("$nixoci" build --spec "$work/spec.json" --compression "$compression" --cache "$work/cache" -q -o "$work/layout")
      reference=127.0.0.1:$port/bench/app:1
      if [ "$mode" = "build --push" ]; then
        /usr/bin/time -f "%e %U %S" -o "$work/time" "${build[@]}" --push "$reference" --insecure 2> /dev/null
      else
        push=("$nixoci" push --insecure -q "$work/layout" "$reference")
        /usr/bin/time -f "%e %U %S" -o "$work/time" \
          bash -c "$(printf '%q ' "${build[@]}") && $(printf '%q ' "${push[@]}") 2> /dev/null" > /dev/null
      fi
      read -r wall user sys < "$work/time"
      printf '%-6s %-26s %8.2f %8.2f\n' "$compression" "$mode" "$wall" "$(python3 -c "print($user + $sys)")"
    done
  done
done
