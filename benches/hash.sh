#!/usr/bin/env bash
# Benchmark: NAR-hashing a tree of at least 1 GiB with `nixoci hash path`,
# against `nix hash path` (Nix 2.8) on the same tree in the same run.
#
# usage: bash benches/hash.sh [SIZE_MIB]   (default 1100)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1100}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
source benches/common.sh
make_bench_store "$size_mib"

printf '%-28s %9s %10s %12s\n' "hash path" "seconds" "MB/s" "peak RSS MiB"
row() { printf '%-28s %9.2f %10s %12.1f\n' "$1" "$2" "$(mbps "$2")" "$(python3 -c "print($3/1024)")"; }
[ "$("$nixoci" hash path "$store")" = "$(nix hash path "$store")" ] || { echo "hashes differ!" >&2; exit 1; }
for run in 1 2; do
  read -r t rss _ < <(measure "$nixoci" hash path "$store"); row "nixoci hash path ($run)" "$t" "$rss"; ours=$t
  read -r t rss _ < <(measure nix hash path "$store"); row "nix hash path ($run)" "$t" "$rss"; theirs=$t
done
python3 -c "print(f'\nnixoci hash path is {$theirs / $ours:.2f}x the speed of nix hash path   (target >= 1x)')"
