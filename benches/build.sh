#!/usr/bin/env bash
# Benchmark: nixoci build on a closure of at least 1 GiB, against the same
# work done by `tar | zstd -T0`, `tar | gzip` and Python tarfile (nixpkgs'
# layer writer, which reads everything twice; one pass is timed here), all
# in the same run on the same files, read from the page cache.
#
# usage: bash benches/build.sh [SIZE_MIB]   (default 1100)
# Prints MB/s (MB = 10^6 bytes of file content), peak RSS, and ratios; the
# fast pipelines are timed as the best of 3 runs, the slow gzip ones once.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1100}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
# Images go to memory, as the baselines' output goes to /dev/null: the disk's
# write-back speed is not what is measured.
out=$(mktemp -d /dev/shm/nixoci-bench.XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work" "$out"' EXIT

source benches/common.sh
make_bench_store "$size_mib"

printf '%-44s %9s %10s %12s\n' "pipeline" "seconds" "MB/s" "peak RSS MiB"
row() { printf '%-44s %9.2f %10s %12.1f\n' "$1" "$2" "$(mbps "$2")" "$(python3 -c "print($3/1024)")"; }

read -r t rss _ < <(best_of 3 bash -c "tar -C '$store' -cf - . | zstd -T0 -3 -q -c > /dev/null")
row "tar | zstd -T0 -3" "$t" "$rss"; zstd_base=$t
read -r t rss _ < <(best_of 3 bash -c "rm -rf '$out/zstd'; exec '$nixoci' build --spec '$work/spec.json' --compression zstd -q -o '$out/zstd'"); rm -rf "$out/zstd"
row "nixoci build --compression zstd" "$t" "$rss"; zstd_ours=$t; zstd_rss=$rss
read -r t rss _ < <(measure bash -c "tar -C '$store' -cf - . | gzip -6 -c > /dev/null")
row "tar | gzip -6" "$t" "$rss"; gzip_base=$t
read -r t rss _ < <(measure "$nixoci" build --spec "$work/spec.json" --compression gzip -q -o "$out/gzip"); rm -rf "$out/gzip"
row "nixoci build --compression gzip" "$t" "$rss"; gzip_ours=$t; gzip_rss=$rss
read -r t rss _ < <(best_of 3 bash -c "python3 tests/support/tarfile_store_layer.py 1 0 0 root root $store/* > /dev/null")
row "python tarfile, uncompressed (nixpkgs, 1 of 2 passes)" "$t" "$rss"; py=$t
read -r t rss _ < <(best_of 3 bash -c "rm -rf '$out/none'; exec '$nixoci' build --spec '$work/spec.json' --compression none -q -o '$out/none'"); rm -rf "$out/none"
row "nixoci build --compression none" "$t" "$rss"; none_ours=$t

python3 - "$zstd_base" "$zstd_ours" "$gzip_base" "$gzip_ours" "$py" "$none_ours" "$zstd_rss" "$gzip_rss" <<'PY'
import sys
zb, zo, gb, go, py, no, zr, gr = map(float, sys.argv[1:])
print()
print(f"zstd: nixoci is {zb / zo:.2f}x the speed of tar | zstd -T0   (target >= 0.8x)")
print(f"gzip: nixoci is {gb / go:.2f}x the speed of tar | gzip        (target >= 2x)")
print(f"none: nixoci is {py / no:.2f}x the speed of one Python tarfile pass (nixpkgs does two)")
print(f"peak RSS: zstd {zr / 1024:.1f} MiB, gzip {gr / 1024:.1f} MiB   (target < 100 MiB)")
PY
