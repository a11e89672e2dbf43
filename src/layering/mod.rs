//! Layering: partitions a closure into store-path layers the way nixpkgs does,
//! with the popularity contest (references-by-popularity) or auto-layer.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};
use num_bigint::BigUint;
use rayon::prelude::*;

use crate::closure::Closure;

pub mod pipeline;

/// How store paths are grouped into layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// nixpkgs' references-by-popularity (its default before 25.05): the N−1
    /// most popular paths get a layer each and the rest share the last one.
    Popularity,
    /// nixpkgs' default since 25.05 (auto-layer), and nixoci's: big paths get
    /// their own layers and absorb the dependencies only they use.
    Auto,
}

/// Store-path layers, bottom first; each layer lists paths in write order.
pub type Plan = Vec<Vec<String>>;

/// How many layers are left for store paths when the image may have
/// `max_layers` in all, one of them the customisation layer, plus
/// `base_layers` from a base image (nixpkgs' `maxLayers` accounting).
pub fn store_layer_budget(max_layers: usize, base_layers: usize) -> Result<usize> {
    let used = 1 + base_layers;
    if max_layers <= used {
        bail!(
            "--max-layers {max_layers} leaves no layer for store paths: the customisation layer{} already use{} {used}",
            if base_layers > 0 { format!(" and {base_layers} base-image layer(s)") } else { String::new() },
            if used == 1 { "s" } else { "" }
        );
    }
    Ok(max_layers - used)
}

pub fn plan(closure: &Closure, strategy: Strategy, budget: usize) -> Plan {
    if closure.nodes().is_empty() {
        return Vec::new();
    }
    match strategy {
        Strategy::Popularity => limit_layers(popularity_order(closure), budget),
        Strategy::Auto => auto_layer(closure, budget),
    }
}

/// `package_name` of closure-graph.py: the hash part moved to the end, so ties
/// sort by name, then version, then hash.
fn package_name(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('-').collect();
    let first = parts.remove(0);
    parts.push(first);
    parts.join("-")
}

/// Every path of the closure, most popular first, as closure-graph.py orders
/// them: roots are the paths nothing else references; ties go by
/// `package_name`.
///
/// closure-graph.py computes popularity with a memoised recursion,
/// contest(children) = Σ_c ({c: 1} + {q: v + 1 for (q, v) in contest(children(c))}),
/// which needs memory quadratic in a chain's length and recursion as deep.
/// Unrolled, a path q scores the sum of M(a) over q and its ancestors a,
/// where M(a) counts the paths from the roots to a (one pass in topological
/// order gives M). `ancestor_sums` says how the sums are taken.
///
/// The scores are exact, as Python's integers are: path counts double with
/// every diamond in a chain, so a closure of a few hundred paths can pass any
/// fixed width, and a saturated score would break ties by name instead.
pub fn popularity_order(closure: &Closure) -> Vec<String> {
    let paths: Vec<&str> = closure.nodes().iter().map(|n| n.path.as_str()).collect();
    popularity_ranking(&paths, &closure.reference_indices())
        .into_iter()
        .map(|i| paths[i].to_string())
        .collect()
}

/// [`popularity_order`] of a graph given as paths and, per path, the
/// indices of the paths it references: the indices, most popular first.
fn popularity_ranking(paths: &[&str], refs: &[Vec<usize>]) -> Vec<usize> {
    let n = paths.len();
    let mut referrers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, targets) in refs.iter().enumerate() {
        for &to in targets {
            referrers[to].push(from);
        }
    }
    // Kahn's order from the roots down; paths on a cycle (which Nix's
    // reference graphs cannot have) are never reached and come last.
    let mut waiting: Vec<usize> = referrers.iter().map(Vec::len).collect();
    let mut order: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let x = order[next];
        next += 1;
        for &child in &refs[x] {
            waiting[child] -= 1;
            if waiting[child] == 0 {
                order.push(child);
            }
        }
    }
    let mut paths_to = vec![BigUint::ZERO; n];
    for &x in &order {
        paths_to[x] = match referrers[x].as_slice() {
            [] => BigUint::from(1u8),
            parents => parents.iter().map(|&p| &paths_to[p]).sum(),
        };
    }
    let scores = ancestor_sums(&order, &referrers, &paths_to);

    let mut ordered: Vec<(BigUint, String, usize)> = order
        .iter()
        .zip(scores)
        .map(|(&i, score)| (score, package_name(paths[i]), i))
        .collect();
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut result: Vec<usize> = ordered.into_iter().map(|(_, _, i)| i).collect();
    let mut reached = vec![false; n];
    order.iter().for_each(|&i| reached[i] = true);
    let mut missing: Vec<usize> = (0..n).filter(|&i| !reached[i]).collect();
    missing.sort_by_key(|&i| paths[i]);
    result.extend(missing);
    result
}

/// For each path of `order` (topological, roots first), the sum of `value`
/// over the path and all its ancestors, in `order`'s order.
///
/// Ancestor sets overlap, so no single pass adds them up, and walking each
/// path's ancestors is quadratic in random access. Instead the ancestors are
/// taken 64 at a time: a bit per path of the block, OR-ed down the graph in
/// topological order, says which of them reach each path below, and
/// per-byte tables of the block's subset sums turn a mask into its sum with
/// at most eight additions. That is n²/64 word operations at worst, in
/// order, spread over every core (blocks are independent), and exact: the
/// sums are big integers, added as 128-bit words while they fit, so the
/// result does not depend on the thread count.
fn ancestor_sums(order: &[usize], referrers: &[Vec<usize>], value: &[BigUint]) -> Vec<BigUint> {
    let n = order.len();
    let mut position = vec![usize::MAX; value.len()];
    for (at, &x) in order.iter().enumerate() {
        position[x] = at;
    }
    // Referrers by position, so that the inner loop reads masks in order.
    let parents: Vec<Vec<usize>> = order
        .iter()
        .map(|&x| referrers[x].iter().map(|&p| position[p]).collect())
        .collect();
    let counts: Vec<Count> = order.iter().map(|&x| Count::of(&value[x])).collect();
    // Blocks are independent: each thread takes every `threads`-th one (the
    // early blocks, above more of the graph, cost most) into sums of its
    // own, and the exact sums are added up after, in any order.
    let blocks: Vec<usize> = (0..n).step_by(64).collect();
    let threads = rayon::current_num_threads().clamp(1, blocks.len().max(1));
    let partial: Vec<Vec<ExactSum>> = (0..threads)
        .into_par_iter()
        .map(|thread| {
            let mut sums: Vec<ExactSum> = (0..n).map(|_| ExactSum::default()).collect();
            let mut masks = vec![0u64; n];
            for &start in blocks.iter().skip(thread).step_by(threads) {
                let tables = byte_tables(&counts[start..n.min(start + 64)]);
                for at in start..n {
                    let mut mask = if at - start < 64 {
                        1u64 << (at - start)
                    } else {
                        0
                    };
                    for &p in &parents[at] {
                        // Paths above the block cannot descend from it.
                        if p >= start {
                            mask |= masks[p];
                        }
                    }
                    masks[at] = mask;
                    for (byte, table) in mask.to_le_bytes().iter().zip(&tables) {
                        if *byte != 0 {
                            sums[at].add(&table[usize::from(*byte)]);
                        }
                    }
                }
            }
            sums
        })
        .collect();
    let mut totals: Vec<BigUint> = vec![BigUint::ZERO; n];
    for sums in partial {
        for (total, sum) in totals.iter_mut().zip(sums) {
            *total += sum.total();
        }
    }
    totals
}

/// For each byte of a block of up to 64 counts, the sum of every subset of
/// its 8 counts, indexed by the subset's bits.
fn byte_tables(block: &[Count]) -> Vec<Vec<Count>> {
    block
        .chunks(8)
        .map(|byte| {
            let mut table = vec![Count::Small(0); 256];
            for subset in 1..256usize {
                let lowest = subset.trailing_zeros() as usize;
                table[subset] = match byte.get(lowest) {
                    Some(count) => table[subset & (subset - 1)].plus(count),
                    None => table[subset & (subset - 1)].clone(),
                };
            }
            table
        })
        .collect()
}

/// A count, kept as a machine word while it fits one.
#[derive(Clone, Debug)]
enum Count {
    Small(u128),
    Big(BigUint),
}

impl Count {
    fn of(value: &BigUint) -> Count {
        u128::try_from(value).map_or_else(|_| Count::Big(value.clone()), Count::Small)
    }

    fn plus(&self, other: &Count) -> Count {
        match (self, other) {
            (Count::Small(a), Count::Small(b)) => match a.checked_add(*b) {
                Some(sum) => Count::Small(sum),
                None => Count::Big(BigUint::from(*a) + *b),
            },
            (Count::Small(a), Count::Big(b)) | (Count::Big(b), Count::Small(a)) => {
                Count::Big(b + *a)
            }
            (Count::Big(a), Count::Big(b)) => Count::Big(a + b),
        }
    }
}

/// A sum of many counts: machine words are added with their carries
/// counted, big integers as big integers.
#[derive(Default)]
struct ExactSum {
    low: u128,
    carries: u64,
    big: BigUint,
}

impl ExactSum {
    fn add(&mut self, count: &Count) {
        match count {
            Count::Small(v) => {
                let (low, carried) = self.low.overflowing_add(*v);
                self.low = low;
                self.carries += u64::from(carried);
            }
            Count::Big(v) => self.big += v,
        }
    }

    fn total(self) -> BigUint {
        (BigUint::from(self.carries) << 128u32) + self.low + self.big
    }
}

/// The first `budget − 1` paths get a layer each; the rest share the last.
fn limit_layers(order: Vec<String>, budget: usize) -> Plan {
    let budget = budget.max(1);
    if order.len() <= budget {
        return order.into_iter().map(|p| vec![p]).collect();
    }
    let mut layers: Plan = order[..budget - 1]
        .iter()
        .map(|p| vec![p.clone()])
        .collect();
    layers.push(order[budget - 1..].to_vec());
    layers
}

/// auto-layer.py's key for paths inside a layer: the name after the hash
/// first, then the path up to the hash.
fn path_key(path: &str) -> (&str, &str) {
    match path.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => (path, ""),
    }
}

/// nixpkgs' auto-layer: repeatedly make the largest remaining path primary,
/// give it a layer, and move each of its dependencies into the layer named by
/// the set of primaries that need it; stop before the layer count exceeds the
/// budget. Layers are ordered by closure size (ties by their paths, where
/// nixpkgs falls back to Python's hash order).
pub fn auto_layer(closure: &Closure, budget: usize) -> Plan {
    let nodes = closure.nodes();
    let n = nodes.len();
    let deps_direct = closure.reference_indices();
    let mut users_direct = vec![Vec::new(); n];
    for (user, refs) in deps_direct.iter().enumerate() {
        for &r in refs {
            users_direct[r].push(user);
        }
    }
    let mut walk = Walk::new(n);
    let (mut in_deps, mut is_user) = (Marks::new(n), Marks::new(n));

    // Stable sort by size; `pop` takes the largest, later input first on ties.
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&i| nodes[i].nar_size);

    // Each path's layer id (the primaries it belongs to), and how many paths
    // hold each id, so that a step costs what it changes, not the closure.
    let mut split: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut members: HashMap<BTreeSet<usize>, usize> = HashMap::from([(BTreeSet::new(), n)]);
    while let Some(primary) = by_size.pop() {
        let deps = walk.from(&[primary], &deps_direct, false);
        in_deps.mark_only(deps.clone());
        is_user.mark_only(walk.from(&[primary], &users_direct, false));
        let mut undo: Vec<(usize, BTreeSet<usize>)> = Vec::new();
        let mut assign = |i: usize, id: BTreeSet<usize>, split: &mut Vec<BTreeSet<usize>>| {
            let old = std::mem::replace(&mut split[i], id.clone());
            if let Some(count) = members.get_mut(&old) {
                *count -= 1;
                if *count == 0 {
                    members.remove(&old);
                }
            }
            *members.entry(id).or_default() += 1;
            undo.push((i, old));
        };
        assign(primary, BTreeSet::from([primary]), &mut split);
        for &d in &deps {
            let mut id = split[d].clone();
            id.retain(|&p| !is_user.has(p));
            if id.iter().all(|&p| !in_deps.has(p)) {
                id.insert(primary);
            }
            if id != split[d] {
                assign(d, id, &mut split);
            }
        }
        if members.len() > budget {
            // Keep the split from before this primary (the counts are not
            // needed any more).
            for (i, old) in undo.into_iter().rev() {
                split[i] = old;
            }
            break;
        }
    }

    let mut layers: HashMap<&BTreeSet<usize>, Vec<usize>> = HashMap::new();
    for (i, id) in split.iter().enumerate() {
        layers.entry(id).or_default().push(i);
    }
    let mut layers: Vec<(u64, Vec<String>)> = layers
        .into_values()
        .map(|members| {
            // One walk for the whole layer: the closure of all its paths.
            let closure_size = walk
                .from(&members, &deps_direct, true)
                .iter()
                .map(|&i| nodes[i].nar_size)
                .sum();
            let mut paths: Vec<String> = members.iter().map(|&i| nodes[i].path.clone()).collect();
            paths.sort_by(|a, b| path_key(a).cmp(&path_key(b)));
            (closure_size, paths)
        })
        .collect();
    layers.sort();
    layers.into_iter().map(|(_, paths)| paths).collect()
}

/// Graph walks that reuse one buffer: each costs what it visits.
struct Walk {
    seen: Vec<bool>,
}

impl Walk {
    fn new(n: usize) -> Walk {
        Walk {
            seen: vec![false; n],
        }
    }

    /// Every path reachable from `starts` along `edges`; the starts
    /// themselves only when `with_starts`.
    fn from(&mut self, starts: &[usize], edges: &[Vec<usize>], with_starts: bool) -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        let mut todo: Vec<usize> = Vec::new();
        let seen = &mut self.seen;
        let mut visit = |x: usize, found: &mut Vec<usize>, todo: &mut Vec<usize>| {
            if !std::mem::replace(&mut seen[x], true) {
                found.push(x);
                todo.push(x);
            }
        };
        for &s in starts {
            if with_starts {
                visit(s, &mut found, &mut todo);
            } else {
                for &y in &edges[s] {
                    visit(y, &mut found, &mut todo);
                }
            }
        }
        while let Some(x) = todo.pop() {
            for &y in &edges[x] {
                visit(y, &mut found, &mut todo);
            }
        }
        for &x in &found {
            self.seen[x] = false;
        }
        if !with_starts {
            // A start reached again (only a cycle, which Nix graphs cannot
            // have, could) is not its own dependency.
            found.retain(|x| !starts.contains(x));
        }
        found
    }
}

/// A membership table over the closure's paths, reset in what it set.
struct Marks {
    on: Vec<bool>,
    set: Vec<usize>,
}

impl Marks {
    fn new(n: usize) -> Marks {
        Marks {
            on: vec![false; n],
            set: Vec::new(),
        }
    }

    fn mark_only(&mut self, items: Vec<usize>) {
        for &x in &self.set {
            self.on[x] = false;
        }
        for &x in &items {
            self.on[x] = true;
        }
        self.set = items;
    }

    fn has(&self, x: usize) -> bool {
        self.on[x]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::PathInfo;

    /// auto-layer.py's loop as written (the whole split copied and counted
    /// per primary), for comparison.
    fn auto_layer_as_written(closure: &Closure, budget: usize) -> Plan {
        let nodes = closure.nodes();
        let n = nodes.len();
        let deps_direct = closure.reference_indices();
        let mut users_direct = vec![Vec::new(); n];
        for (user, refs) in deps_direct.iter().enumerate() {
            for &r in refs {
                users_direct[r].push(user);
            }
        }
        let transitive = |start: usize, edges: &[Vec<usize>]| -> BTreeSet<usize> {
            let mut seen = BTreeSet::new();
            let mut todo = edges[start].clone();
            while let Some(x) = todo.pop() {
                if x != start && seen.insert(x) {
                    todo.extend(&edges[x]);
                }
            }
            seen
        };

        // Stable sort by size; `pop` takes the largest, later input first on ties.
        let mut by_size: Vec<usize> = (0..n).collect();
        by_size.sort_by_key(|&i| nodes[i].nar_size);

        let mut split: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        while let Some(primary) = by_size.pop() {
            let mut next = split.clone();
            next[primary] = BTreeSet::from([primary]);
            let deps = transitive(primary, &deps_direct);
            let users = transitive(primary, &users_direct);
            for &d in &deps {
                next[d].retain(|p| !users.contains(p));
                if next[d].is_disjoint(&deps) {
                    next[d].insert(primary);
                }
            }
            let count = next.iter().collect::<BTreeSet<_>>().len();
            if count > budget {
                break;
            }
            split = next;
        }

        let mut layers: HashMap<&BTreeSet<usize>, Vec<usize>> = HashMap::new();
        for (i, id) in split.iter().enumerate() {
            layers.entry(id).or_default().push(i);
        }
        let mut layers: Vec<(u64, Vec<String>)> = layers
            .into_values()
            .map(|members| {
                let mut closure_members: BTreeSet<usize> = members.iter().copied().collect();
                for &m in &members {
                    closure_members.extend(transitive(m, &deps_direct));
                }
                let closure_size = closure_members.iter().map(|&i| nodes[i].nar_size).sum();
                let mut paths: Vec<String> =
                    members.iter().map(|&i| nodes[i].path.clone()).collect();
                paths.sort_by(|a, b| path_key(a).cmp(&path_key(b)));
                (closure_size, paths)
            })
            .collect();
        layers.sort();
        layers.into_iter().map(|(_, paths)| paths).collect()
    }

    fn sp(index: usize, name: &str) -> String {
        format!("/nix/store/{index:0>32}-{name}")
    }

    fn graph(edges: &[(&str, &[&str], u64)]) -> (Closure, HashMap<String, String>) {
        let names: HashMap<String, String> = edges
            .iter()
            .enumerate()
            .map(|(i, (n, _, _))| (n.to_string(), sp(i, n)))
            .collect();
        let nodes = edges
            .iter()
            .map(|(n, refs, size)| PathInfo {
                path: names[*n].clone(),
                nar_hash: None,
                nar_size: *size,
                references: refs.iter().map(|r| names[*r].clone()).collect(),
            })
            .collect();
        (
            Closure::from_nodes(nodes, "/nix/store", "test").unwrap(),
            names,
        )
    }

    /// closure-graph.py's recursion, as written, for comparison.
    fn contest(
        children: &[usize],
        refs: &[Vec<usize>],
        memo: &mut HashMap<usize, HashMap<usize, u128>>,
    ) -> HashMap<usize, u128> {
        let mut popularity: HashMap<usize, u128> = HashMap::new();
        for &child in children {
            *popularity.entry(child).or_default() += 1;
            if !memo.contains_key(&child) {
                let sub = contest(&refs[child], refs, memo);
                memo.insert(child, sub);
            }
            for (&q, &v) in &memo[&child] {
                *popularity.entry(q).or_default() += v + 1;
            }
        }
        popularity
    }

    /// A small deterministic generator (an LCG), so random graphs repeat.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize % bound.max(1)
        }

        /// A DAG of 1 to `max_n` paths (edges only from lower to higher
        /// indices, up to 3 per path), sizes from 1 to `sizes`.
        fn closure(&mut self, max_n: usize, sizes: usize) -> Closure {
            let n = 1 + self.below(max_n);
            let nodes: Vec<PathInfo> = (0..n)
                .map(|i| {
                    let mut refs: Vec<usize> = (0..self.below(4))
                        .map(|_| i + 1 + self.below(n - i))
                        .filter(|&j| j < n)
                        .collect();
                    refs.sort();
                    refs.dedup();
                    PathInfo {
                        path: sp(i, &format!("p{i}")),
                        nar_hash: None,
                        nar_size: 1 + self.below(sizes) as u64,
                        references: refs.iter().map(|&j| sp(j, &format!("p{j}"))).collect(),
                    }
                })
                .collect();
            Closure::from_nodes(nodes, "/nix/store", "test").unwrap()
        }
    }

    #[test]
    fn linear_popularity_equals_the_recursive_contest() {
        let mut random = Random(12345);
        for _ in 0..200 {
            let closure = random.closure(30, 1);
            let n = closure.nodes().len();
            let index = closure.reference_indices();
            let mut referenced = vec![false; n];
            index.iter().flatten().for_each(|&r| referenced[r] = true);
            let roots: Vec<usize> = (0..n).filter(|&i| !referenced[i]).collect();
            let expected = contest(&roots, &index, &mut HashMap::new());
            let mut want: Vec<(u128, String, String)> = expected
                .iter()
                .map(|(&i, &p)| {
                    let path = closure.nodes()[i].path.clone();
                    (p, package_name(&path), path)
                })
                .collect();
            want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let want: Vec<String> = want.into_iter().map(|w| w.2).collect();
            assert_eq!(popularity_order(&closure), want, "{index:?}");
        }
    }

    /// The masked block sums against a walk of each path's ancestors, on
    /// random DAGs of several 64-path blocks and on counts that pass 128 bits.
    #[test]
    fn ancestor_sums_equal_a_walk_of_the_ancestors() {
        let walked = |order: &[usize], referrers: &[Vec<usize>], value: &[BigUint]| {
            order
                .iter()
                .map(|&x| {
                    let mut seen = BTreeSet::new();
                    let mut todo = vec![x];
                    while let Some(a) = todo.pop() {
                        if seen.insert(a) {
                            todo.extend(&referrers[a]);
                        }
                    }
                    seen.iter().map(|&a| &value[a]).sum::<BigUint>()
                })
                .collect::<Vec<BigUint>>()
        };
        let mut random = Random(4242);
        for round in 0..40 {
            let n = 1 + random.below(300);
            // Path i is referenced only by paths after it: 0..n is topological.
            let referrers: Vec<Vec<usize>> = (0..n)
                .map(|i| {
                    let above = n - 1 - i;
                    (0..random.below(4).min(above))
                        .map(|_| i + 1 + random.below(above))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                })
                .collect();
            let order: Vec<usize> = (0..n).rev().collect();
            // Small values, values near 2^128 (their sums carry) and big ones.
            let value: Vec<BigUint> = (0..n)
                .map(|i| match (round + i) % 3 {
                    0 => BigUint::from(random.below(1000) as u64),
                    1 => BigUint::from(u128::MAX - random.below(1000) as u128),
                    _ => BigUint::from(3u8).pow(100 + random.below(50) as u32),
                })
                .collect();
            assert_eq!(
                ancestor_sums(&order, &referrers, &value),
                walked(&order, &referrers, &value),
                "round {round}, {n} paths"
            );
        }
    }

    #[test]
    fn auto_layer_equals_the_loop_as_written() {
        let mut random = Random(777);
        for round in 0..300 {
            // Few distinct sizes every other round, so that ties are common.
            let closure = random.closure(40, if round % 2 == 0 { 5 } else { 1000 });
            for budget in [1, 2, 3, 5, 10, 100] {
                assert_eq!(
                    auto_layer(&closure, budget),
                    auto_layer_as_written(&closure, budget),
                    "round {round}, budget {budget}"
                );
            }
        }
    }

    #[test]
    fn a_long_chain_plans_quickly() {
        let n = 100_000;
        let nodes: Vec<PathInfo> = (0..n)
            .map(|i| PathInfo {
                path: sp(i, "chain"),
                nar_hash: None,
                nar_size: 1,
                references: if i + 1 < n {
                    vec![sp(i + 1, "chain")]
                } else {
                    vec![]
                },
            })
            .collect();
        let closure = Closure::from_nodes(nodes, "/nix/store", "test").unwrap();
        let order = popularity_order(&closure);
        // The bottom of the chain is the most popular.
        assert_eq!(order[0], sp(n - 1, "chain"));
        assert_eq!(order.len(), n);
        // auto-layer: one primary per layer from the bottom up, the rest of
        // the chain in the last layer. (This took 391 s when each step copied
        // the whole split and each layer walked every member's closure.)
        let plan = auto_layer(&closure, 99);
        assert_eq!(plan.len(), 99);
        assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), n);
    }

    #[test]
    fn budget_counts_customisation_and_base_layers() {
        assert_eq!(store_layer_budget(100, 0).unwrap(), 99);
        assert_eq!(store_layer_budget(4, 2).unwrap(), 1);
        assert!(store_layer_budget(1, 0).is_err());
    }

    #[test]
    fn limit_merges_the_tail() {
        let order: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            limit_layers(order.clone(), 2),
            vec![vec!["a".to_string()], order[1..].to_vec()]
        );
        assert_eq!(limit_layers(order.clone(), 10).len(), 4);
    }

    #[test]
    fn auto_layer_gives_big_paths_their_own_layers() {
        // app (big) uses lib (only it); tool uses libc; app uses libc too.
        let (c, names) = graph(&[
            ("app", &["lib", "libc"], 1000),
            ("lib", &["libc"], 10),
            ("tool", &["libc"], 100),
            ("libc", &[], 500),
        ]);
        // With room for everything, every path becomes primary: one layer each.
        assert_eq!(auto_layer(&c, 99).len(), 4);
        // Budget 3: app, libc and tool are primaries; lib (app's alone) joins app.
        // Layers go by closure size: libc 500, tool+libc 600, app+lib+libc 1510.
        let plan = auto_layer(&c, 3);
        assert_eq!(
            plan,
            vec![
                vec![names["libc"].clone()],
                vec![names["tool"].clone()],
                vec![names["app"].clone(), names["lib"].clone()],
            ]
        );
        // With a budget of one layer everything shares it.
        assert_eq!(auto_layer(&c, 1).len(), 1);
    }
}
