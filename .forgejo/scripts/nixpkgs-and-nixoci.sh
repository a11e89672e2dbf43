# Sourced by the CI scripts: finds <nixpkgs> and nixoci on a runner that has
# only nix. <nixpkgs> is, in this order: the one NIX_BUILD_FLAGS names with
# `-I nixpkgs=…`; the one the repository's flake.lock locks (fetched by its
# locked revision and NAR hash); NIX_PATH's; the flake registry's `nixpkgs`,
# which is not pinned (a warning says so). NIX_PATH is then set. nixoci is
# $NIXOCI, else nixoci on PATH, else built from its pinned source: this
# repository's nix/package.nix when the repository is nixoci itself, else
# the source that .forgejo/nixoci-source.nix evaluates to. Sets $nixoci.
# shellcheck shell=bash disable=SC2034
nixoci=${NIXOCI:-nixoci}
flakes=(--extra-experimental-features 'nix-command flakes')
# shellcheck disable=SC2086
if NIX_PATH='' nix-instantiate ${NIX_BUILD_FLAGS:-} --find-file nixpkgs >/dev/null 2>&1; then
  :
elif [ -f flake.lock ] && jq -e '.nodes.nixpkgs.locked' flake.lock >/dev/null 2>&1; then
  if ! nixpkgs=$(nix "${flakes[@]}" eval --impure --raw --expr \
      '(builtins.fetchTree (builtins.fromJSON (builtins.readFile ./flake.lock)).nodes.nixpkgs.locked).outPath'); then
    echo "cannot fetch the nixpkgs that flake.lock locks" >&2
    exit 1
  fi
  echo "nixpkgs: $nixpkgs, locked in flake.lock"
  export NIX_PATH="nixpkgs=$nixpkgs"
elif ! nix-instantiate --find-file nixpkgs >/dev/null 2>&1; then
  if ! nixpkgs=$(nix "${flakes[@]}" eval --impure --raw \
      --expr '(builtins.getFlake "nixpkgs").outPath'); then
    echo "no nixpkgs: lock one in flake.lock, set NIX_PATH=nixpkgs=…, or add nixpkgs to the runner's flake registry" >&2
    exit 1
  fi
  echo "warning: nixpkgs comes from the runner's flake registry and is not pinned; lock it in flake.lock" >&2
  export NIX_PATH="nixpkgs=$nixpkgs${NIX_PATH:+:$NIX_PATH}"
fi
if [ -z "${NIXOCI:-}" ] && ! command -v nixoci >/dev/null; then
  if [ -f nix/package.nix ]; then
    source_expr="$PWD"
  elif [ -f .forgejo/nixoci-source.nix ]; then
    source_expr="import $PWD/.forgejo/nixoci-source.nix"
  else
    echo "no nixoci: put it on PATH, set NIXOCI, or pin its source in .forgejo/nixoci-source.nix" >&2
    exit 1
  fi
  echo "building nixoci from its pinned source"
  # shellcheck disable=SC2086
  nixoci=$(nix-build --no-out-link ${NIX_BUILD_FLAGS:-} \
    -E "(import <nixpkgs> { }).callPackage (($source_expr) + \"/nix/package.nix\") { }")/bin/nixoci
fi
