#!/usr/bin/env bash
# Benchmark: nixoci build on a closure of at least 1 GiB, against the same
# work done by `tar | zstd -T0`, `tar | gzip` and Python tarfile (nixpkgs'
# layer writer, which reads everything twice; one pass is timed here), all
# in the same run on the same files, read from the page cache.
#
# usage: bash benches/build.sh [SIZE_MIB]   (default 1100)
# Prints MB/s (MB = 10^6 bytes of file content), peak RSS, and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1100}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# A synthetic store of real files (binaries, libraries, text) from this
# machine: 40 store paths, each referencing the previous one.
store=$work/store
mkdir -p "$store"
python3 - "$store" "$size_mib" <<'PY'
import hashlib, json, os, shutil, sys
store, budget = sys.argv[1], int(sys.argv[2]) << 20
files = []
for root in ("/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/bin", "/usr/lib"):
    for d, _, names in os.walk(root):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
seen, total, paths, chunk = set(), 0, [], []
groups = 40
per_group = budget // groups
for p in files:
    if total >= budget:
        break
    st = os.stat(p)
    if st.st_ino in seen or st.st_size == 0:
        continue
    seen.add(st.st_ino)
    chunk.append(p)
    total += st.st_size
    if total >= per_group * (len(paths) + 1):
        paths.append(chunk); chunk = []
if chunk:
    paths.append(chunk)
nodes, prev = [], None
for i, group in enumerate(paths):
    h = hashlib.sha256(str(i).encode()).hexdigest()
    alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
    name = "".join(alphabet[int(c, 16) * 2 % 32] for c in h[:32]) + f"-bench-{i}"
    out = os.path.join(store, name)
    for src in group:
        dst = os.path.join(out, src.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o555 if os.access(src, os.X_OK) else 0o444)
    nodes.append({"path": out, "references": [prev] if prev else [], "narSize": 0})
    prev = out
json.dump({"storeDir": store, "graph": nodes, "contents": [], "maxLayers": 100}, open(os.path.join(os.path.dirname(store), "spec.json"), "w"))
print(f"synthetic store: {len(nodes)} paths, {total / 1e6:.0f} MB of files", file=sys.stderr)
PY
# Record each path's NAR hash, as a Nix graph would, so the build also checks them.
python3 - "$work/spec.json" "$nixoci" <<'PY'
import json, subprocess, sys
spec = json.load(open(sys.argv[1]))
for node in spec["graph"]:
    node["narHash"] = subprocess.run([sys.argv[2], "hash", "path", node["path"]], check=True,
                                     capture_output=True, text=True).stdout.strip()
json.dump(spec, open(sys.argv[1], "w"))
PY
bytes=$(du -sb --apparent-size "$store" | cut -f1)
cat_store() { tar -C "$store" -cf - . ; }
cat_store > /dev/null # warm the page cache

# Runs a command, prints "seconds peak_rss_kib".
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
elapsed = time.perf_counter() - t
print(f"{elapsed:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
mbps() { python3 -c "print(f'{$bytes / $1 / 1e6:.1f}')"; }

printf '%-44s %9s %10s %12s\n' "pipeline" "seconds" "MB/s" "peak RSS MiB"
row() { printf '%-44s %9.2f %10s %12.1f\n' "$1" "$2" "$(mbps "$2")" "$(python3 -c "print($3/1024)")"; }

read -r t rss < <(measure bash -c "tar -C '$store' -cf - . | zstd -T0 -3 -q -c > /dev/null")
row "tar | zstd -T0 -3" "$t" "$rss"; zstd_base=$t
read -r t rss < <(measure "$nixoci" build --spec "$work/spec.json" --compression zstd -q -o "$work/out-zstd")
row "nixoci build --compression zstd" "$t" "$rss"; zstd_ours=$t; zstd_rss=$rss
read -r t rss < <(measure bash -c "tar -C '$store' -cf - . | gzip -6 -c > /dev/null")
row "tar | gzip -6" "$t" "$rss"; gzip_base=$t
read -r t rss < <(measure "$nixoci" build --spec "$work/spec.json" --compression gzip -q -o "$work/out-gzip")
row "nixoci build --compression gzip" "$t" "$rss"; gzip_ours=$t; gzip_rss=$rss
read -r t rss < <(measure bash -c "python3 tests/support/tarfile_store_layer.py 1 0 0 root root $store/* > /dev/null")
row "python tarfile, uncompressed (nixpkgs, 1 of 2 passes)" "$t" "$rss"; py=$t
read -r t rss < <(measure "$nixoci" build --spec "$work/spec.json" --compression none -q -o "$work/out-none")
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
