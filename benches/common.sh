#!/usr/bin/env bash
# Shared by the benchmarks. Source it after setting `nixoci` and `work`.

# make_bench_store SIZE_MIB: $work/store, $work/spec.json and $bytes (file
# content in bytes), with the files in the page cache.
make_bench_store() {
  store=$work/store
  mkdir -p "$store"
  python3 benches/make_store.py "$store" "$1" "$work/spec.json" "$nixoci"
  bytes=$(du -sb --apparent-size "$store" | cut -f1)
  tar -C "$store" -cf - . > /dev/null
}

# measure CMD…: prints "seconds peak_rss_kib" of the command.
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
elapsed = time.perf_counter() - t
print(f"{elapsed:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}

# mbps SECONDS [BYTES]: MB/s (10^6 bytes).
mbps() { python3 -c "print(f'{${2:-$bytes} / $1 / 1e6:.1f}')"; }
