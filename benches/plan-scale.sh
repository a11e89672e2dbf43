#!/usr/bin/env bash
# Benchmark: layer plans of 100,000-path closures (`nixoci plan`), auto-layer
# and references-by-popularity, on three shapes: a chain, a DAG whose paths
# reference 3 random earlier ones, and a dense one (references mostly to
# near neighbours plus 5 popular libraries: every path has a huge ancestor
# set and path counts of thousands of bits). Times include reading the
# graph. Best of 3.
#
# Baseline, in the same run, when NIXPKGS_SRC names a directory holding
# nixpkgs' auto-layer.py (pkgs/build-support/docker) and the
# flatten_references_graph package (pkgs/by-name/fl/flattenReferencesGraph/src),
# with python-igraph and toolz installed (see tests/fixtures/plan-parity/generate.py):
# nixpkgs' own scripts on the same graphs, auto-layer.py at full size, and its
# popularity contest at BASELINE_PATHS paths (default 5000; it keeps a dict of
# every path's descendants, so 100,000 do not fit in memory).
#
# usage: [NIXPKGS_SRC=DIR] bash benches/plan-scale.sh [PATHS]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
paths=${1:-100000}
small=${BASELINE_PATHS:-5000}
cargo build --release --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d /var/tmp/nixoci-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
source benches/common.sh

generate() {  # generate SHAPE PATHS FILE
  python3 - "$@" <<'PY'
import json, random, sys
shape, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(1)
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
paths = ["/nix/store/%s-p%d-1.0" % ("".join(rng.choice(alphabet) for _ in range(32)), i) for i in range(n)]
nodes = []
for i in range(n):
    if shape == "chain":
        refs = [i - 1] if i else []
    elif shape == "random":
        refs = sorted({rng.randrange(i) for _ in range(min(i, 3))}) if i else []
    else:
        refs = {max(0, i - 1 - int(rng.expovariate(1 / 30))) for _ in range(rng.choice([0, 1, 2, 3, 4])) if i}
        refs |= {lib for lib in range(min(i, 5)) if rng.random() < 0.3}
        refs = sorted(refs)
    nodes.append({"path": paths[i], "narSize": rng.randrange(1, 10**7), "references": [paths[r] for r in refs]})
json.dump(nodes, open(out, "w"))
PY
}

printf '%-46s %9s %12s %12s\n' "plan" "seconds" "paths/s" "peak RSS MiB"
row() { printf '%-46s %9.2f %12.0f %12.1f\n' "$1" "$2" "$(python3 -c "print($3 / $2)")" "$(python3 -c "print($4/1024)")"; }
for shape in chain random dense; do
  generate "$shape" "$paths" "$work/$shape.json"
  for strategy in auto popularity; do
    read -r t rss _ < <(best_of 3 bash -c "exec '$nixoci' plan --graph '$work/$shape.json' --strategy $strategy > '$work/out.json'")
    row "nixoci $strategy, $shape, $paths paths" "$t" "$paths" "$rss"; ours=$t
    if [[ -n ${NIXPKGS_SRC:-} && $strategy == auto ]]; then
      : > "$work/ignore"
      read -r t rss _ < <(best_of 1 env PYTHONHASHSEED=0 python3 "$NIXPKGS_SRC/auto-layer.py" "$work/$shape.json" "$work/ignore" 99)
      row "  nixpkgs auto-layer.py, the same graph" "$t" "$paths" "$rss"
      echo "  ratio: nixoci $(python3 -c "print(f'{$t / $ours:.1f}')")x faster"
    fi
  done
  if [[ -n ${NIXPKGS_SRC:-} ]]; then
    generate "$shape" "$small" "$work/small.json"
    read -r t rss _ < <(best_of 3 bash -c "exec '$nixoci' plan --graph '$work/small.json' --strategy popularity > '$work/out.json'")
    row "nixoci popularity, $shape, $small paths" "$t" "$small" "$rss"; ours=$t
    read -r t rss _ < <(best_of 1 python3 -c "
import json, sys
sys.setrecursionlimit(10**6)
sys.path.insert(0, sys.argv[1])
from flatten_references_graph.flatten_references_graph import flatten_references_graph
flatten_references_graph(json.load(open(sys.argv[2])), [['popularity_contest'], ['limit_layers', 99]])" "$NIXPKGS_SRC" "$work/small.json")
    row "  nixpkgs popularity_contest, the same graph" "$t" "$small" "$rss"
    echo "  ratio: nixoci $(python3 -c "print(f'{$t / $ours:.1f}')")x faster"
  fi
done
