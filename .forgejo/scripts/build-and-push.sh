#!/usr/bin/env bash
# Builds containers/<name> with nixoci's Nix library, checks it, pushes it
# with `nixoci push` as v<version>-<sha7>-nix, and prints the digest.
#
# usage: build-and-push.sh [build|push|diff] CONTAINER COMMIT_SHA
#   build  evaluate, build and check only; no secret is needed or seen. The
#          outputs (result, tag, reference, nixoci) go to $GITHUB_OUTPUT.
#   push   push what `build` made: RESULT, TAG and NIXOCI come from the
#          build step's outputs. No Nix evaluation runs in this mode.
#   diff   compare what `build` made (RESULT, TAG, NIXOCI as for push) with
#          the last pushed image of CONTAINER: the tag in the registry whose
#          commit is the latest on origin/$BASE_BRANCH (read anonymously,
#          manifests and configs only). Writes the Markdown for a
#          pull-request comment to diff-CONTAINER.md (and its path to
#          $GITHUB_OUTPUT as `comment`). No secret, no Nix evaluation.
#   (none) build and push, in one process, for local runs.
# env:   REGISTRY        where to push, e.g. registry.ops.eblu.me/blumeops
#        REGISTRY_USER   user name for the API key, e.g. zot-ci
#        ZOT_CI_API_KEY  the API key (a repository secret; never printed).
#                        Only `nixoci push` gets it: it is taken out of the
#                        environment before anything else runs.
#        COSIGN_KEY      optional: a private key (PEM: PKCS#8 or cosign.key; a
#                        repository secret). When set, the pushed image is
#                        signed and its provenance attested (nixoci push
#                        --sign-key, nixoci attest --drv DRV); COSIGN_PASSWORD
#                        decrypts it. Both are taken out of the environment at
#                        once, like the API key, and only nixoci sees them.
#        DRV             (push) the image's derivation, from the build step
#        DEFAULT_BRANCH  when set, the commit must be an ancestor of
#                        origin/$DEFAULT_BRANCH (no other branch's script
#                        runs on the runner that holds the key)
#        NIXOCI          the nixoci binary (default: nixoci on PATH, else built
#                        from the pinned source, see below)
#        NIX_BUILD_FLAGS extra nix-build flags; PUSH_FLAGS extra push flags;
#        READ_FLAGS extra flags for reading the registry in `diff` mode
#        BASE_BRANCH     (diff) the branch the pull request goes into
#
# It needs only nix on the runner: no root flake, no channel. <nixpkgs> comes
# from flake.lock, NIX_PATH or the flake registry (nixpkgs-and-nixoci.sh
# says in which order). nixoci is built from its pinned source: this
# repository's nix/package.nix when the repository is nixoci itself, else
# the source that .forgejo/nixoci-source.nix evaluates to (a
# `builtins.fetchTarball { url; sha256; }` of a release).
set -euo pipefail
# The key stays in an unexported variable: no child but `nixoci push` sees it.
registry_key=${ZOT_CI_API_KEY:-}
signing_key=${COSIGN_KEY:-}
signing_password=${COSIGN_PASSWORD:-}
unset ZOT_CI_API_KEY COSIGN_KEY COSIGN_PASSWORD
mode=all
case "${1:-}" in
  build | push | diff) mode=$1; shift ;;
esac
usage="usage: build-and-push.sh [build|push|diff] CONTAINER COMMIT_SHA"
container=${1:?$usage}
sha=${2:?$usage}
# Both arrive from workflow inputs: accept only a directory name under
# containers/ and a commit SHA.
if ! [[ "$container" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || [ ! -d "containers/$container" ]; then
  echo "no container named '$container' in containers/" >&2
  exit 2
fi
if ! [[ "$sha" =~ ^[0-9a-f]{7,40}$ ]]; then
  echo "'$sha' is not a commit SHA (7 to 40 hex digits)" >&2
  exit 2
fi
if [ -n "${DEFAULT_BRANCH:-}" ] && ! git merge-base --is-ancestor "$sha" "origin/$DEFAULT_BRANCH" 2>/dev/null; then
  echo "commit $sha is not on origin/$DEFAULT_BRANCH: only commits of the default branch are built and pushed" >&2
  exit 2
fi
file=containers/$container/default.nix
if [ ! -f "$file" ]; then
  echo "no $file: $container is not a Nix container; skipping"
  exit 0
fi

push() {
  local sign_args=()
  key_file=""
  if [ -n "$signing_key" ]; then
    key_file=$(mktemp)
    trap 'rm -f "$key_file"' EXIT
    chmod 600 "$key_file"
    printf '%s\n' "$signing_key" > "$key_file"
    sign_args=(--sign-key "$key_file")
  fi
  # shellcheck disable=SC2086
  ZOT_CI_API_KEY=$registry_key COSIGN_PASSWORD=$signing_password "$nixoci" push "$result" "$reference" \
    --compression gzip --username "${REGISTRY_USER:?}" --creds-env ZOT_CI_API_KEY --json \
    "${sign_args[@]}" ${PUSH_FLAGS:-} > push.json
  digest=$(sed -n 's/^  "digest": "\(sha256:[0-9a-f]*\)".*/\1/p' push.json)
  echo "pushed $REGISTRY/$container@$digest ($tag)"
  if [ -n "$key_file" ]; then
    local attest_args=(--key "$key_file" --drv "$drv")
    if [ -f "mirrors/$container.toml" ]; then
      attest_args+=(--mirrors "mirrors/$container.toml")
    fi
    if [ -f flake.lock ]; then
      attest_args+=(--flake-lock flake.lock)
    fi
    # shellcheck disable=SC2086
    ZOT_CI_API_KEY=$registry_key COSIGN_PASSWORD=$signing_password "$nixoci" attest "$reference" \
      "${attest_args[@]}" --username "${REGISTRY_USER:?}" --creds-env ZOT_CI_API_KEY ${PUSH_FLAGS:-}
    echo "signed and attested $REGISTRY/$container@$digest"
  fi
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "digest=$digest" >> "$GITHUB_OUTPUT"
    echo "reference=$reference" >> "$GITHUB_OUTPUT"
  fi
}

# The Markdown diff of the built image against the last pushed one.
pr_diff() {
  local base_branch=${BASE_BRANCH:?diff needs BASE_BRANCH (the branch the pull request goes into)}
  if ! [[ "$base_branch" =~ ^[A-Za-z0-9._/-]+$ ]]; then
    echo "BASE_BRANCH '$base_branch' is not a branch name" >&2
    exit 2
  fi
  local comment=diff-$container.md tags base="" commit pushed
  # A repository that does not exist yet has no tags; any other failure stops.
  # shellcheck disable=SC2086
  if ! tags=$("$nixoci" tags "$REGISTRY/$container" ${READ_FLAGS:-} 2>tags.err); then
    if ! grep -q "does not exist" tags.err; then
      cat tags.err >&2
      exit 1
    fi
    tags=""
  fi
  rm -f tags.err
  # The last pushed image: the newest commit of the base branch with a tag.
  while read -r commit; do
    pushed=$(grep -E "^v[A-Za-z0-9._+-]+-${commit:0:7}-nix$" <<<"$tags" | head -n1 || true)
    if [ -n "$pushed" ]; then
      base=$pushed
      break
    fi
  done < <(git rev-list --first-parent --max-count=1000 "origin/$base_branch" 2>/dev/null)
  {
    echo "<!-- nixoci-diff:$container -->"
    echo "### \`$container\`: $tag"
    echo
    if [ -z "$base" ]; then
      echo "No image of $container on origin/$base_branch was pushed to $REGISTRY/$container yet: nothing to compare with."
    else
      echo "Compared with \`$REGISTRY/$container:$base\`, the last one pushed from $base_branch:"
      echo
      # shellcheck disable=SC2086
      "$nixoci" diff "$REGISTRY/$container:$base" "$result" --markdown ${READ_FLAGS:-}
    fi
  } > "$comment"
  echo "wrote $comment (base: ${base:-none})"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "comment=$comment" >> "$GITHUB_OUTPUT"
  fi
}

if [ "$mode" = push ] || [ "$mode" = diff ]; then
  result=${RESULT:?$mode needs RESULT (the result the build step printed)}
  tag=${TAG:?$mode needs TAG (the tag the build step printed)}
  nixoci=${NIXOCI:?$mode needs NIXOCI (the nixoci the build step used)}
  if ! [[ "$result" =~ ^/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+$ ]] || [ ! -e "$result" ]; then
    echo "RESULT '$result' is not a store path on this runner" >&2
    exit 2
  fi
  if ! [[ "$tag" =~ ^v[A-Za-z0-9._+-]+-${sha:0:7}-nix$ ]]; then
    echo "TAG '$tag' is not v<version>-${sha:0:7}-nix" >&2
    exit 2
  fi
  drv=${DRV:-}
  if [ -n "$signing_key" ] && ! [[ "$drv" =~ ^/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+\.drv$ ]]; then
    echo "DRV '$drv' is not a derivation: signing attests the provenance of the build step's .drv" >&2
    exit 2
  fi
  reference="$REGISTRY/$container:$tag"
  if [ "$mode" = diff ]; then
    pr_diff
  else
    push
  fi
  exit 0
fi
# <nixpkgs> and nixoci, as the runner has them (sets NIX_PATH and $nixoci).
# shellcheck source=.forgejo/scripts/nixpkgs-and-nixoci.sh
source "$(dirname "$0")/nixpkgs-and-nixoci.sh"
# The version: a `version = "…";` line, else the Dockerfile's
# `ARG CONTAINER_APP_VERSION=…`, else the expression's passthru.version.
version=$(grep -m1 -E '^[[:space:]]*version[[:space:]]*=[[:space:]]*"' "$file" | sed -E 's/^[^"]*"([^"]+)".*/\1/' || true)
dockerfile=containers/$container/Dockerfile
if [ -z "$version" ] && [ -f "$dockerfile" ]; then
  version=$(sed -n -E 's/^ARG[[:space:]]+CONTAINER_APP_VERSION=([^[:space:]]+).*/\1/p' "$dockerfile" | head -n1 | tr -d '"')
fi
if [ -z "$version" ]; then
  # shellcheck disable=SC2086
  version=$(nix-instantiate --eval ${NIX_BUILD_FLAGS:-} -A version "$file" 2>/dev/null | tr -d '"' || true)
fi
if ! [[ "$version" =~ ^[A-Za-z0-9._+-]+$ ]]; then
  echo "$file has no version: add \`version = \"…\";\`, a Dockerfile \`ARG CONTAINER_APP_VERSION=…\`, or passthru.version" >&2
  exit 1
fi
tag="v${version#v}-${sha:0:7}-nix"
reference="$REGISTRY/$container:$tag"
echo "building $container $tag"
# shellcheck disable=SC2086
result=$(nix-build "$file" --no-out-link ${NIX_BUILD_FLAGS:-})
drv=$(nix-store --query --deriver "$result")
"$nixoci" check "$result"
if [ "$mode" = build ]; then
  echo "built $result ($tag)"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    nixoci_path=$(command -v "$nixoci")
    {
      echo "result=$result"
      echo "drv=$drv"
      echo "tag=$tag"
      echo "nixoci=$nixoci_path"
    } >> "$GITHUB_OUTPUT"
  fi
  exit 0
fi
push
