#!/usr/bin/env bash
# The real build of containers/<name> against the nixpkgs in use: what the
# offline tests cannot prove. It
#  1. builds the image with --keep-going; a fixed output whose pin is wrong
#     is named, with the hash Nix got (then: nixoci pins update);
#  2. builds every fixed output of the image's graph again with --check, so
#     that an output already in the store under the pinned hash cannot hide
#     that its source or toolchain now gives another;
#  3. proves the graph's provenance with `nixoci verify --drv` (every fixed
#     output mirrored or a pinned network build, every path the evaluation
#     copied into the store a file of this repository or of nixpkgs);
#  4. unless REAL_BUILD_RUN=0: starts the image with podman next to a
#     throwaway PostgreSQL, waits for /-/health/live/ and counts the
#     blueprints the log says were discovered.
#
# usage: real-build.sh CONTAINER
# needs: nix, jq; podman and curl for step 4
# env:   NIX_BUILD_FLAGS extra nix flags; NIXOCI the nixoci binary;
#        REAL_BUILD_RUN=0 to skip step 4; POSTGRES_IMAGE (default
#        docker.io/library/postgres:16-alpine); HEALTH_TIMEOUT seconds (300)
set -euo pipefail
container=${1:?usage: real-build.sh CONTAINER}
if ! [[ "$container" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || [ ! -f "containers/$container/default.nix" ]; then
  echo "no container named '$container' in containers/" >&2
  exit 2
fi
manifest=mirrors/$container.toml
[ -f "$manifest" ] || { echo "no $manifest: nothing pins $container's sources" >&2; exit 2; }
# shellcheck source=.forgejo/scripts/nixpkgs-and-nixoci.sh
source "$(dirname "$0")/nixpkgs-and-nixoci.sh"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The fixed outputs whose hash Nix found wrong, by name: "NAME: pinned X, got Y".
name_mismatches() {
  awk '
    /hash mismatch in fixed-output derivation/ {
      match($0, /\/nix\/store\/[a-z0-9]+-[^'"'"']*\.drv/)
      drv = substr($0, RSTART + 44, RLENGTH - 48)
    }
    /specified:/ { specified = $2 }
    /got:/ { printf "fixed output %s: pinned %s, got %s\n", drv, specified, $2 }
  ' "$1"
}

echo "== 1. building containers/$container"
# shellcheck disable=SC2086
drv=$(nix-instantiate ${NIX_BUILD_FLAGS:-} "containers/$container")
# shellcheck disable=SC2086
if ! result=$(nix-build --no-out-link --keep-going ${NIX_BUILD_FLAGS:-} "$drv" 2> "$log"); then
  tail -n 40 "$log" >&2
  name_mismatches "$log" >&2
  echo "the build failed; for wrong pins run: nixoci pins update $manifest" >&2
  exit 1
fi

echo "== 2. every fixed output again, with --check"
# The fixed outputs of the graph, from the same walk as step 3.
mapfile -t fods < <("$nixoci" verify --drv "$drv" "$manifest" --allow-upstream --json 2> /dev/null | jq -r '.fetches[].drv')
failed=0
for fod in "${fods[@]}"; do
  # shellcheck disable=SC2086
  if ! nix-build --no-out-link --check ${NIX_BUILD_FLAGS:-} "$fod" > /dev/null 2> "$log"; then
    tail -n 20 "$log" >&2
    name_mismatches "$log" >&2
    echo "fixed output ${fod#/nix/store/????????????????????????????????-} does not rebuild to its pin" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
echo "${#fods[@]} fixed outputs rebuilt to their pins"

echo "== 3. provenance"
# Paths the evaluation copied into the store must be files of this
# repository or of the nixpkgs it evaluated with.
# shellcheck disable=SC2086
nixpkgs_tree=$(nix-instantiate ${NIX_BUILD_FLAGS:-} --find-file nixpkgs)
"$nixoci" verify --drv "$drv" "$manifest" --repo . --source-tree "$nixpkgs_tree"

if [ "${REAL_BUILD_RUN:-1}" = 0 ]; then
  echo "== 4. skipped (REAL_BUILD_RUN=0)"
  exit 0
fi
echo "== 4. running $result next to PostgreSQL"
name=nixoci-real-build-$$
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
cleanup() { podman pod rm -f "$name" > /dev/null 2>&1 || true; rm -f "$log"; }
trap cleanup EXIT
podman pod create --name "$name" -p 127.0.0.1::9000 > /dev/null
podman run -d --pod "$name" --name "$name-db" -e POSTGRES_PASSWORD="$password" \
  -e POSTGRES_USER=authentik -e POSTGRES_DB=authentik "${POSTGRES_IMAGE:-docker.io/library/postgres:16-alpine}" > /dev/null
image=$(podman pull -q "oci:$result")
podman run -d --pod "$name" --name "$name-app" \
  -e AUTHENTIK_POSTGRESQL__HOST=127.0.0.1 -e AUTHENTIK_POSTGRESQL__USER=authentik \
  -e AUTHENTIK_POSTGRESQL__NAME=authentik -e AUTHENTIK_POSTGRESQL__PASSWORD="$password" \
  -e AUTHENTIK_SECRET_KEY="$password$password" "$image" server > /dev/null
port=$(podman port "$name-app" 9000/tcp | sed 's/.*://')
deadline=$((SECONDS + ${HEALTH_TIMEOUT:-300}))
until curl -fsS "http://127.0.0.1:$port/-/health/live/" > /dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    podman logs "$name-app" 2>&1 | tail -n 60 >&2
    echo "authentik did not become live in ${HEALTH_TIMEOUT:-300} s" >&2
    exit 1
  fi
  sleep 5
done
blueprints=$(podman logs "$name-app" 2>&1 | grep -ci 'blueprint' || true)
echo "live; $blueprints log line(s) about blueprints"
[ "$blueprints" -gt 0 ] || { echo "no blueprint was discovered" >&2; exit 1; }
