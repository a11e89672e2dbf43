//! Layering: partitions a closure into store-path layers the way nixpkgs does,
//! with the popularity contest (references-by-popularity) or auto-layer.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};

use crate::closure::Closure;

/// How store paths are grouped into layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// nixpkgs' references-by-popularity: the N−1 most popular paths get a layer
    /// each and the rest share the last one.
    Popularity,
    /// nixpkgs' current default (auto-layer): big paths get their own layers and
    /// absorb the dependencies only they use.
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
/// them: roots are the paths nothing else references; popularity is computed
/// by its memoised recursion; ties go by `package_name`.
pub fn popularity_order(closure: &Closure) -> Vec<String> {
    let nodes = closure.nodes();
    let refs = closure.reference_indices();
    let mut referenced = vec![false; nodes.len()];
    for r in refs.iter().flatten() {
        referenced[*r] = true;
    }
    let roots: Vec<usize> = (0..nodes.len()).filter(|&i| !referenced[i]).collect();

    // contest(children) = Σ_c ({c: 1} + {q: v + 1 for (q, v) in contest(children(c))}),
    // memoised per node exactly like the Python cache.
    let mut memo: HashMap<usize, HashMap<usize, u64>> = HashMap::new();
    let popularity = contest(&roots, &refs, &mut memo);

    let mut ordered: Vec<(u64, String, usize)> = popularity
        .iter()
        .map(|(&i, &p)| (p, package_name(&nodes[i].path), i))
        .collect();
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut result: Vec<String> = ordered
        .into_iter()
        .map(|(_, _, i)| nodes[i].path.clone())
        .collect();
    // Paths no root reaches (only possible in a cyclic graph) come last.
    let mut missing: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !popularity.contains_key(i))
        .map(|(_, n)| n.path.clone())
        .collect();
    missing.sort();
    result.extend(missing);
    result
}

fn contest(
    children: &[usize],
    refs: &[Vec<usize>],
    memo: &mut HashMap<usize, HashMap<usize, u64>>,
) -> HashMap<usize, u64> {
    let mut popularity: HashMap<usize, u64> = HashMap::new();
    for &child in children {
        *popularity.entry(child).or_default() += 1;
        if !memo.contains_key(&child) {
            // Mark as in progress so that a cycle ends instead of recursing forever.
            memo.insert(child, HashMap::new());
            let sub = contest(&refs[child], refs, memo);
            memo.insert(child, sub);
        }
        for (&q, &v) in &memo[&child] {
            *popularity.entry(q).or_default() += v + 1;
        }
    }
    popularity
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
            let mut paths: Vec<String> = members.iter().map(|&i| nodes[i].path.clone()).collect();
            paths.sort_by(|a, b| path_key(a).cmp(&path_key(b)));
            (closure_size, paths)
        })
        .collect();
    layers.sort();
    layers.into_iter().map(|(_, paths)| paths).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::PathInfo;

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
