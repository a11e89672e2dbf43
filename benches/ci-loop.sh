#!/usr/bin/env bash
# Benchmark: the CI loop our users repeat all day. Build an image of a
# synthetic closure and push it to a loopback registry, cold, then again
# after one small store path is added on top. In the same run, on the same
# files, each pipeline with its own registry:
#   baseline  our users' pipeline: a docker-archive streamed the way nixpkgs'
#             stream_layered_image.py does it (benches/nixpkgs_streamer.py:
#             Python tarfile, each layer written twice) + `skopeo copy
#             docker-archive: docker://` (gzip, with skopeo's blob-info cache);
#   fast baseline  the same, but with the docker-archive written by nixoci
#             (a flattered baseline: nixoci writes it several times faster);
#   nixoci    `nixoci build --cache --push` (gzip): new big layers are
#             uploaded while they are compressed; and, cold only, the same
#             as two commands, `nixoci build --cache` + `nixoci push`;
#   nix       `nix-build` of the Nix library's buildLayeredImage, with the
#             biggest path in a layer derivation of its own (buildLayer),
#             + `nixoci push` (benches/explicit-layers.nix; the packages
#             themselves are built before the clock starts, as a binary
#             cache would have them);
#   and, cold only, `nixoci build --cache --push` with zstd layers.
# Prints wall and CPU seconds per step, and the ratios.
#
# usage: bash benches/ci-loop.sh [SIZE_MIB]   (default 2400)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2400}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
chmod 755 "$work"   # Nix's build users copy the bench store from here
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; cleanup_nix; chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# What the Nix pipeline added to /nix/store goes again.
cleanup_nix() { [ -f "$work/nix-paths" ] && sort -u "$work/nix-paths" | xargs -r nix-store --delete > /dev/null 2>&1; true; }
source benches/common.sh
make_bench_store "$size_mib" --skewed
export XDG_CACHE_HOME=$work/xdg   # nothing from earlier runs helps either side

start_registry base 5393
start_registry fast 5397
start_registry ours 5394
start_registry zstd 5395
start_registry steps 5398
start_registry nix 5396

# The Nix pipeline's packages (copies of the bench store), built now.
nix_build() { # CHANGE ATTR
  nix-build --no-out-link benches/explicit-layers.nix -A "$2" \
    --arg nixociBin "$nixoci" --argstr specFile "$work/spec.json" --argstr change "$1" 2>/dev/null
}
nix_build "" packages > "$work/nix-paths"

# timed LABEL CMD…: runs CMD, prints wall and CPU (user+sys) seconds.
timed() {
  local label=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" > /dev/null
  read -r wall user sys < "$work/time"
  cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")
  printf '%-52s %8.2f %8.2f\n' "$label" "$wall" "$cpu"
  echo "$wall $cpu" > "$work/last"
}

# The streamer's plan and config come from nixoci's docker-archive of the
# same spec, written before the clock starts.
reference_archive() {
  rm -f "$work/reference.tar"
  "$nixoci" build --spec "$work/spec.json" --format docker-archive -q -o "$work/reference.tar"
}
baseline() { # TAG
  rm -f "$work/image.tar"
  python3 benches/nixpkgs_streamer.py "$work/reference.tar" "$work/image.tar"
  skopeo copy -q --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://127.0.0.1:5393/bench/app:$1"
}
fast_baseline() { # TAG
  rm -f "$work/fast.tar"
  "$nixoci" build --spec "$work/spec.json" --format docker-archive -q -o "$work/fast.tar"
  skopeo copy -q --dest-tls-verify=false "docker-archive:$work/fast.tar" "docker://127.0.0.1:5397/bench/app:$1"
}
ours() { # TAG
  "$nixoci" build --spec "$work/spec.json" --compression gzip --cache "$work/cache" -q -o "$work/layout" \
    --push "127.0.0.1:5394/bench/app:$1" --insecure
}
ours_two_steps() { # TAG
  "$nixoci" build --spec "$work/spec.json" --compression gzip --cache "$work/cache-steps" -q -o "$work/layout-steps"
  "$nixoci" push --insecure -q "$work/layout-steps" "127.0.0.1:5398/bench/app:$1"
}
ours_zstd() { # TAG
  "$nixoci" build --spec "$work/spec.json" --compression zstd --cache "$work/cache-zstd" -q -o "$work/layout-zstd" \
    --push "127.0.0.1:5395/bench/app:$1" --insecure
}
nix_pipeline() { # CHANGE TAG
  local image
  image=$(nix_build "$1" image)
  nix-store -qR "$image" >> "$work/nix-paths"
  "$nixoci" push --insecure -q "$image" "127.0.0.1:5396/bench/app:$2"
}
export -f baseline fast_baseline ours ours_two_steps ours_zstd nix_build nix_pipeline; export nixoci work

printf '%-52s %8s %8s\n' "step" "wall s" "CPU s"
reference_archive
timed "cold: nixpkgs' streamer + skopeo copy" bash -c 'baseline cold'; read -r base_cold base_cold_cpu < "$work/last"
timed "cold: nixoci docker-archive + skopeo copy" bash -c 'fast_baseline cold'; read -r fast_cold _ < "$work/last"
timed "cold: nixoci build --cache --push" bash -c 'ours cold'; read -r ours_cold ours_cold_cpu < "$work/last"
timed "cold: nixoci build --cache, then nixoci push" bash -c 'ours_two_steps cold'; read -r steps_cold _ < "$work/last"
timed "cold: nixoci build --cache --push (zstd)" bash -c 'ours_zstd cold'; read -r zstd_cold _ < "$work/last"
timed "cold: nix-build (explicit layer) + nixoci push" bash -c 'nix_pipeline "" cold'; read -r nix_cold _ < "$work/last"

# One small path added on top of the closure (the everyday change).
add_top_path change
reference_archive
timed "one path added: nixpkgs' streamer + skopeo copy" bash -c 'baseline changed'; read -r base_warm base_warm_cpu < "$work/last"
timed "one path added: nixoci docker-archive + skopeo" bash -c 'fast_baseline changed'; read -r fast_warm _ < "$work/last"
timed "one path added: nixoci build --cache --push" bash -c 'ours changed'; read -r ours_warm ours_warm_cpu < "$work/last"
timed "one path added: nix-build (explicit layer) + push" bash -c 'nix_pipeline changed changed'; read -r nix_warm _ < "$work/last"

python3 - "$base_cold" "$ours_cold" "$base_warm" "$ours_warm" "$base_cold_cpu" "$ours_cold_cpu" "$base_warm_cpu" "$ours_warm_cpu" "$zstd_cold" "$nix_cold" "$nix_warm" "$fast_cold" "$fast_warm" "$steps_cold" <<'PY'
import sys
bc, oc, bw, ow, bcc, occ, bwc, owc, zc, nc, nw, fc, fw, sc = map(float, sys.argv[1:])
print()
print("against nixpkgs' streamer + skopeo (our users' pipeline):")
print(f"cold:           nixoci is {bc / oc:.1f}x faster (wall), {bcc / occ:.1f}x less CPU   (target >= 1.5x for gzip)")
print(f"cold, zstd:     nixoci is {bc / zc:.1f}x faster (wall)   (target >= 3.5x)")
print(f"cold, gzip, build then push as two commands: {bc / sc:.1f}x faster (wall)")
print(f"one path added: nixoci is {bw / ow:.1f}x faster (wall), {bwc / owc:.1f}x less CPU   (target >= 20x)")
print(f"nix-build with an explicit layer: cold {bc / nc:.1f}x, one path added {bw / nw:.1f}x faster (wall) than the baseline")
print("against the fast baseline (nixoci's docker-archive + skopeo):")
print(f"cold: gzip {fc / oc:.1f}x, zstd {fc / zc:.1f}x; one path added {fw / ow:.1f}x faster (wall)")
PY
