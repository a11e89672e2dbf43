#!/usr/bin/env bash
# Shared by the benchmarks. Source it after setting `nixoci` and `work`.
# shellcheck disable=SC2154  # nixoci and work are the sourcing script's

# make_bench_store SIZE_MIB [--skewed]: $work/store, $work/spec.json and
# $bytes (file content in bytes), with the files in the page cache.
make_bench_store() {
  store=$work/store
  mkdir -p "$store"
  python3 benches/make_store.py "$store" "$1" "$work/spec.json" "$nixoci" "${@:2}"
  bytes=$(du -sb --apparent-size "$store" | cut -f1)
  tar -C "$store" -cf - . > /dev/null
}

# add_top_path NAME: a small store path NAME on top of the closure in
# $work/spec.json, referencing the previous top (the everyday change).
add_top_path() {
  python3 - "$work/spec.json" "$store" "$nixoci" "$1" <<'PY'
import json, os, subprocess, sys
spec_file, store, nixoci, name = sys.argv[1:]
spec = json.load(open(spec_file))
top = os.path.join(store, "z" * 32 + "-app-" + name)
os.makedirs(os.path.join(top, "bin"))
with open(os.path.join(top, "bin", "app"), "w") as f:
    f.write(f"#!/bin/sh\necho {name}\n")
nar = subprocess.run([nixoci, "hash", "path", top], check=True, capture_output=True, text=True).stdout.strip()
spec["graph"].append({"path": top, "references": [spec["graph"][-1]["path"]], "narHash": nar})
json.dump(spec, open(spec_file, "w"))
PY
}

# measure CMD…: prints "seconds peak_rss_kib cpu_seconds" of the command
# (CPU: user + system, of it and its children).
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
elapsed = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{elapsed:.3f} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime:.2f}")
PY
}

# mbps SECONDS [BYTES]: MB/s (10^6 bytes).
mbps() { python3 -c "print(f'{${2:-$bytes} / $1 / 1e6:.1f}')"; }

# best_of N CMD…: "seconds peak_rss_kib cpu_seconds" of the fastest of N
# runs (the machines are shared; the fastest run is the least disturbed one).
best_of() {
  local n=$1; shift
  local best="" t rss cpu
  for _ in $(seq "$n"); do
    read -r t rss cpu < <(measure "$@")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $t < ${best%% *} else 1)"; then best="$t $rss $cpu"; fi
  done
  echo "$best"
}

# nixoci_at REV: builds nixoci as it was at REV (in a worktree under
# $work; its target directory is kept between runs) and prints its path.
nixoci_at() {
  local src=$work/src-$1 target=/var/tmp/nixoci-bench-target-$1
  git worktree add --quiet --detach "$src" "$1" >&2
  CARGO_TARGET_DIR=$target cargo build --release --quiet --manifest-path "$src/Cargo.toml" >&2
  git worktree remove --force "$src" >&2
  echo "$target/release/nixoci"
}

# start_registry NAME PORT: a CNCF registry on 127.0.0.1:PORT with its data
# under $work; its PID joins the caller's `pids` array (killed on exit).
start_registry() {
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s, secret: bench}\n' \
    "$work/$1-data" "$2" > "$work/$1.yml"
  docker-registry serve "$work/$1.yml" > "$work/$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$2/v2/" && return; sleep 0.05; done
  echo "registry $1 did not start" >&2; exit 1
}
