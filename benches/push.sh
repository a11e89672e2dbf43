#!/usr/bin/env bash
# Benchmark: nixoci push of an image of at least 1 GiB to a loopback CNCF
# registry, against `skopeo copy oci:… docker://…` of the same layout, in
# the same run: a cold push (each tool to its own empty registry), then a
# re-push under a new tag from a fresh process (no local state).
#
# usage: bash benches/push.sh [SIZE_MIB]   (default 2600: a gzip image over 1 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2600}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
source benches/common.sh
make_bench_store "$size_mib"
"$nixoci" build --spec "$work/spec.json" --compression gzip -q -o "$work/layout"
image_bytes=$(du -sb "$work/layout" | cut -f1)
echo "image: $(find "$work/layout/blobs/sha256" -type f | wc -l) blobs, $((image_bytes / 1000000)) MB compressed"

start_registry ours 5391
start_registry skopeo 5392
export XDG_RUNTIME_DIR=$work # keep skopeo's blob-info cache out of the way
rm -rf /var/lib/containers/cache/blob-info-cache-v1.boltdb

printf '%-46s %9s %10s %12s\n' "push" "seconds" "MB/s" "peak RSS MiB"
row() { printf '%-46s %9.2f %10s %12.1f\n' "$1" "$2" "$(mbps "$2" "$image_bytes")" "$(python3 -c "print($3/1024)")"; }
read -r t rss _ < <(measure "$nixoci" push --insecure -q "$work/layout" 127.0.0.1:5391/bench/img:1)
row "nixoci push (cold)" "$t" "$rss"; ours_cold=$t
read -r t rss _ < <(measure skopeo copy -q --dest-tls-verify=false "oci:$work/layout:1" docker://127.0.0.1:5392/bench/img:1)
row "skopeo copy oci: docker:// (cold)" "$t" "$rss"; skopeo_cold=$t
"$nixoci" push --insecure -q --json "$work/layout" 127.0.0.1:5391/bench/img:2 > "$work/repush.json"
read -r t rss _ < <(measure "$nixoci" push --insecure -q "$work/layout" 127.0.0.1:5391/bench/img:3)
row "nixoci push (re-push, new tag, fresh process)" "$t" "$rss"; ours_re=$t
read -r t rss _ < <(measure skopeo copy -q --dest-tls-verify=false "oci:$work/layout:1" docker://127.0.0.1:5392/bench/img:2)
row "skopeo copy (re-push, new tag)" "$t" "$rss"; skopeo_re=$t
python3 - "$ours_cold" "$skopeo_cold" "$ours_re" "$skopeo_re" "$work/repush.json" <<'PY'
import json, sys
oc, sc, ore, sre = map(float, sys.argv[1:5])
re = json.load(open(sys.argv[5]))
print()
print(f"cold push: nixoci is {sc / oc:.2f}x the speed of skopeo   (target >= 1x)")
print(f"re-push: nixoci {ore:.2f} s (target < 1 s), {re['bytes_uploaded']} blob bytes uploaded (target 0); skopeo {sre:.2f} s")
PY
