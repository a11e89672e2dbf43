"""Writes a synthetic Nix-like closure of real files from this machine
(binaries, libraries, text) for the benchmarks: 40 store paths, each
referencing the previous one, and a spec with the graph and NAR hashes.

usage: make_store.py STORE_DIR SIZE_MIB SPEC_OUT NIXOCI [--skewed]

--skewed puts three quarters of the bytes in the first path (a closure
dominated by one big package), the rest spread over the other 39.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

store, budget, spec_out, nixoci = sys.argv[1], int(sys.argv[2]) << 20, sys.argv[3], sys.argv[4]
files = []
for root in ("/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/bin", "/usr/lib"):
    for d, _, names in os.walk(root):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
groups, seen, total, paths, chunk = 40, set(), 0, [], []
skewed = "--skewed" in sys.argv[5:]


def threshold(done):
    """Bytes the first `done + 1` paths hold together."""
    if not skewed:
        return budget // groups * (done + 1)
    big = budget * 3 // 4
    return big + (budget - big) // (groups - 1) * done
for p in files:
    if total >= budget:
        break
    st = os.stat(p)
    if st.st_ino in seen or st.st_size == 0:
        continue
    seen.add(st.st_ino)
    chunk.append(p)
    total += st.st_size
    if total >= threshold(len(paths)):
        paths.append(chunk)
        chunk = []
if chunk:
    paths.append(chunk)
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
nodes, prev = [], None
for i, group in enumerate(paths):
    digest = hashlib.sha256(str(i).encode()).digest()
    out = os.path.join(store, "".join(alphabet[b % 32] for b in digest[:32]) + f"-bench-{i}")
    for src in group:
        dst = os.path.join(out, src.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o555 if os.access(src, os.X_OK) else 0o444)
    # Record the NAR hash, as a Nix graph would, so builds also check it.
    nar_hash = subprocess.run([nixoci, "hash", "path", out], check=True, capture_output=True, text=True).stdout.strip()
    nodes.append({"path": out, "references": [prev] if prev else [], "narHash": nar_hash})
    prev = out
json.dump({"storeDir": store, "graph": nodes, "maxLayers": 100, "tag": "1"}, open(spec_out, "w"))
print(f"synthetic store: {len(nodes)} paths, {total / 1e6:.0f} MB of files", file=sys.stderr)
