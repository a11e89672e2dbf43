#!/usr/bin/env bash
# Benchmark: `nixoci check` of an image whose layer adds N files and then
# whites each of them out (what a fromImage base with deletions looks like),
# against `umoci unpack` of the same layout, which applies the same
# whiteouts, in the same run. Quadratic whiteout handling shows as time
# growing 4x when N doubles; both sizes are run.
#
# usage: bash benches/check-whiteouts.sh [N]   (default 150000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-150000}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
source benches/common.sh

# make_layout DIR COUNT: an OCI layout, tag 1, of one gzip layer holding
# bin/sh, COUNT files in d/, a whiteout for each, and a whiteout of bin.
make_layout() {
  python3 - "$1" "$2" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out, count = sys.argv[1], int(sys.argv[2])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    def add(name):
        info = tarfile.TarInfo(name)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(b""))
    add("bin/sh")
    for i in range(count):
        add(f"d/f{i:06}")
    for i in range(count):
        add(f"d/.wh.f{i:06}")
    add(".wh.bin")
plain = raw.getvalue()
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}
layer = put(gzip.compress(plain, 1, mtime=0))
config = put(json.dumps({"architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]}}).encode())
manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}]}).encode())
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        **manifest, "annotations": {"org.opencontainers.image.ref.name": "1"}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY
}

# check_image LAYOUT: nixoci check, which must fail (the whiteout of /bin
# removes the entrypoint): the work is done either way.
check_image() { "$nixoci" check "$1" > /dev/null 2>&1 || true; }
export -f check_image; export nixoci

printf '%-34s %9s %12s\n' "whiteouts" "seconds" "peak RSS MiB"
row() { printf '%-34s %9.2f %12.1f\n' "$1" "$2" "$(python3 -c "print($3/1024)")"; }
declare -A ours theirs
# The scripts given to `bash -c` expand their own arguments.
# shellcheck disable=SC2016
for count in $((n / 2)) "$n"; do
  make_layout "$work/layout-$count" "$count"
  read -r t rss _ < <(best_of 2 bash -c 'check_image "$0"' "$work/layout-$count"); row "nixoci check, $count" "$t" "$rss"; ours[$count]=$t
  read -r t rss _ < <(best_of 2 bash -c 'rm -rf "$1"; umoci unpack --rootless --image "$0:1" "$1" > /dev/null' "$work/layout-$count" "$work/bundle"); row "umoci unpack, $count" "$t" "$rss"; theirs[$count]=$t
done
half=$((n / 2))
python3 -c "
print(f'\nnixoci check: {${ours[$n]} / ${ours[$half]}:.2f}x the time for twice the whiteouts (linear: ~2x, quadratic: ~4x)')
print(f'nixoci check is {${theirs[$n]} / ${ours[$n]}:.2f}x the speed of umoci unpack on {$n} whiteouts')"
