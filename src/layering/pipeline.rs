//! nixpkgs' `layeringPipeline` (flatten_references_graph): a list of
//! `[op, args…]` steps applied left to right to the closure graph, whose
//! flattened result is the store layers, bottom first.
//!
//! The graph is ordered as nixpkgs' igraph graph is: by `narSize`, ties in
//! the graph's own order. Subgraphs keep that order, and the layers list
//! their paths in it. Every operation of nixpkgs' `pipe.py` is here:
//! `popularity_contest`, `limit_layers`, `split_every`, `split_paths`,
//! `subcomponent_in`, `subcomponent_out`, `remove_paths`, `over`, `map`,
//! `pipe`, `flatten`, `reverse` and `reorder`.

use std::collections::{BTreeSet, HashMap};

use anyhow::{anyhow, bail, Result};
use serde_json::Value as Json;

use super::{popularity_ranking, Plan};
use crate::closure::Closure;

/// A subgraph: vertices (indices into the closure's size order) in that
/// order, and the edges left between them.
#[derive(Clone, Debug, Default)]
struct Graph {
    vertices: Vec<usize>,
    edges: BTreeSet<(usize, usize)>,
}

impl Graph {
    /// The subgraph on the vertices in `keep`, in this graph's order.
    fn induced(&self, keep: &BTreeSet<usize>) -> Graph {
        Graph {
            vertices: self
                .vertices
                .iter()
                .copied()
                .filter(|v| keep.contains(v))
                .collect(),
            edges: self
                .edges
                .iter()
                .copied()
                .filter(|(a, b)| keep.contains(a) && keep.contains(b))
                .collect(),
        }
    }

    fn without(&self, drop: &BTreeSet<usize>) -> Graph {
        let keep = self
            .vertices
            .iter()
            .copied()
            .filter(|v| !drop.contains(v))
            .collect();
        self.induced(&keep)
    }

    /// Every vertex reachable from `starts` along edges (`forward`) or
    /// against them, the starts included.
    fn reachable(&self, starts: &[usize], forward: bool) -> BTreeSet<usize> {
        let mut next: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(a, b) in &self.edges {
            let (from, to) = if forward { (a, b) } else { (b, a) };
            next.entry(from).or_default().push(to);
        }
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut todo: Vec<usize> = starts.to_vec();
        while let Some(v) = todo.pop() {
            if seen.insert(v) {
                todo.extend(next.get(&v).into_iter().flatten());
            }
        }
        seen
    }

    /// igraph's disjoint union, as `limit_layers` merges graphs.
    fn union(mut self, other: &Graph) -> Graph {
        self.vertices.extend(&other.vertices);
        self.edges.extend(&other.edges);
        self
    }
}

/// What a step works on: a graph, a list, or a dict whose keys keep their order.
#[derive(Clone, Debug)]
enum Value {
    Graph(Graph),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Graph(_) => "a graph",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
        }
    }
}

/// The closure in nixpkgs' vertex order, and the context the steps need.
struct Pipeline<'a> {
    paths: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
}

/// Runs `pipeline` (the JSON list nixpkgs takes) on the closure and returns
/// the layers, bottom first, with empty ones dropped.
pub fn run(closure: &Closure, pipeline: &Json) -> Result<Plan> {
    let mut order: Vec<usize> = (0..closure.nodes().len()).collect();
    order.sort_by_key(|&i| closure.nodes()[i].nar_size);
    let paths: Vec<&str> = order
        .iter()
        .map(|&i| closure.nodes()[i].path.as_str())
        .collect();
    let index: HashMap<&str, usize> = paths.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut edges = BTreeSet::new();
    for (v, path) in paths.iter().enumerate() {
        if let Some(node) = closure.get(path) {
            for r in &node.references {
                if let Some(&to) = index.get(r.as_str()) {
                    edges.insert((v, to));
                }
            }
        }
    }
    let graph = Graph {
        vertices: (0..paths.len()).collect(),
        edges,
    };
    let p = Pipeline { paths, index };
    let steps = pipeline
        .as_array()
        .ok_or_else(|| anyhow!("a layering pipeline is a list of [op, args…] steps"))?;
    let result = p.pipe(steps, Value::Graph(graph))?;
    let mut graphs = Vec::new();
    flatten(result, &mut graphs);
    Ok(graphs
        .into_iter()
        .filter(|g| !g.vertices.is_empty())
        .map(|g| g.vertices.iter().map(|&v| p.paths[v].to_string()).collect())
        .collect())
}

/// Every graph inside a value, dict values in key order.
fn flatten(value: Value, into: &mut Vec<Graph>) {
    match value {
        Value::Graph(g) => into.push(g),
        Value::List(items) => items.into_iter().for_each(|v| flatten(v, into)),
        Value::Dict(entries) => entries.into_iter().for_each(|(_, v)| flatten(v, into)),
    }
}

fn text_list(arg: &Json, op: &str) -> Result<Vec<String>> {
    match arg {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(String::from)
                    .ok_or_else(|| anyhow!("{op}: expected store paths, got {i}"))
            })
            .collect(),
        other => bail!("{op}: expected a store path or a list of them, got {other}"),
    }
}

fn count(arg: Option<&Json>, op: &str) -> Result<usize> {
    arg.and_then(Json::as_u64)
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| anyhow!("{op} needs a count above 0"))
}

impl Pipeline<'_> {
    fn pipe(&self, steps: &[Json], mut value: Value) -> Result<Value> {
        for (i, step) in steps.iter().enumerate() {
            value = self
                .step(step, value)
                .map_err(|e| e.context(format!("layering pipeline step {}: {step}", i + 1)))?;
        }
        Ok(value)
    }

    fn step(&self, step: &Json, value: Value) -> Result<Value> {
        let items = step
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow!("a step is a list [op, args…]"))?;
        let op = items[0]
            .as_str()
            .ok_or_else(|| anyhow!("a step's first item names its op"))?;
        let args = &items[1..];
        let arg = |n: usize| -> Result<&Json> {
            args.get(n)
                .ok_or_else(|| anyhow!("{op} needs {} argument(s)", n + 1))
        };
        match op {
            "pipe" => {
                let inner = arg(0)?
                    .as_array()
                    .ok_or_else(|| anyhow!("pipe takes a list of steps"))?;
                self.pipe(inner, value)
            }
            "over" => {
                let key = arg(0)?
                    .as_str()
                    .ok_or_else(|| anyhow!("over takes a key name first"))?;
                let inner = arg(1)?;
                let Value::Dict(mut entries) = value else {
                    bail!("over needs a dict, got {}", value.kind());
                };
                let Some(at) = entries.iter().position(|(k, _)| k == key) else {
                    bail!(
                        "over: no `{key}` here (keys: {}); split_paths leaves out empty parts",
                        entries
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                };
                let inner_value = std::mem::replace(&mut entries[at].1, Value::List(Vec::new()));
                entries[at].1 = self.step(inner, inner_value)?;
                Ok(Value::Dict(entries))
            }
            "map" => {
                let inner = arg(0)?;
                let Value::List(items) = value else {
                    bail!("map needs a list, got {}", value.kind());
                };
                Ok(Value::List(
                    items
                        .into_iter()
                        .map(|v| self.step(inner, v))
                        .collect::<Result<_>>()?,
                ))
            }
            "flatten" => {
                let mut graphs = Vec::new();
                flatten(value, &mut graphs);
                Ok(Value::List(graphs.into_iter().map(Value::Graph).collect()))
            }
            "reverse" => match value {
                Value::List(mut items) => {
                    items.reverse();
                    Ok(Value::List(items))
                }
                other => bail!("reverse needs a list, got {}", other.kind()),
            },
            "reorder" => {
                let keys = text_list(arg(0)?, op)?;
                let Value::Dict(mut entries) = value else {
                    bail!("reorder needs a dict, got {}", value.kind());
                };
                let mut ordered = Vec::new();
                for key in &keys {
                    if let Some(at) = entries.iter().position(|(k, _)| k == key) {
                        ordered.push(entries.remove(at));
                    }
                }
                // Keys not named keep their order after the named ones: no path is lost.
                ordered.extend(entries);
                Ok(Value::Dict(ordered))
            }
            "limit_layers" => {
                let max = count(args.first(), op)?;
                let Value::List(items) = value else {
                    bail!("limit_layers needs a list, got {}", value.kind());
                };
                let mut items = items.into_iter();
                let mut kept: Vec<Value> = items.by_ref().take(max - 1).collect();
                let mut merged: Option<Graph> = None;
                for item in items {
                    let mut graphs = Vec::new();
                    flatten(item, &mut graphs);
                    for g in graphs {
                        merged = Some(match merged {
                            Some(m) => m.union(&g),
                            None => g,
                        });
                    }
                }
                kept.extend(merged.map(Value::Graph));
                Ok(Value::List(kept))
            }
            _ => {
                let Value::Graph(graph) = value else {
                    bail!("{op} needs a graph, got {}", value.kind());
                };
                self.graph_step(op, args, graph)
            }
        }
    }

    fn graph_step(&self, op: &str, args: &[Json], graph: Graph) -> Result<Value> {
        let arg = |n: usize| -> Result<&Json> {
            args.get(n)
                .ok_or_else(|| anyhow!("{op} needs {} argument(s)", n + 1))
        };
        let known = |names: Vec<String>| -> Vec<usize> {
            names
                .iter()
                .filter_map(|n| self.index.get(n.as_str()).copied())
                .filter(|v| graph.vertices.contains(v))
                .collect()
        };
        match op {
            "popularity_contest" => Ok(Value::List(
                self.popularity(&graph)
                    .into_iter()
                    .map(|v| {
                        Value::Graph(Graph {
                            vertices: vec![v],
                            edges: BTreeSet::new(),
                        })
                    })
                    .collect(),
            )),
            "split_every" => {
                let n = count(args.first(), op)?;
                Ok(Value::List(
                    graph
                        .vertices
                        .chunks(n)
                        .map(|chunk| Value::Graph(graph.induced(&chunk.iter().copied().collect())))
                        .collect(),
                ))
            }
            "remove_paths" => {
                let drop = known(text_list(arg(0)?, op)?).into_iter().collect();
                Ok(Value::Graph(graph.without(&drop)))
            }
            "subcomponent_in" | "subcomponent_out" => {
                let starts = known(text_list(arg(0)?, op)?);
                let main = graph.reachable(&starts, op == "subcomponent_out");
                Ok(Value::Dict(vec![
                    ("main".into(), Value::Graph(graph.induced(&main))),
                    ("rest".into(), Value::Graph(graph.without(&main))),
                ]))
            }
            "split_paths" => self.split_paths(arg(0)?, graph),
            _ => bail!(
                "unknown op `{op}` (known: popularity_contest, limit_layers, split_every, split_paths, \
                 subcomponent_in, subcomponent_out, remove_paths, over, map, pipe, flatten, reverse, reorder)"
            ),
        }
    }

    /// The popularity contest on this graph alone (its own roots and edges).
    fn popularity(&self, graph: &Graph) -> Vec<usize> {
        let local: HashMap<usize, usize> = graph
            .vertices
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i))
            .collect();
        let mut refs = vec![Vec::new(); graph.vertices.len()];
        for &(a, b) in &graph.edges {
            refs[local[&a]].push(local[&b]);
        }
        let paths: Vec<&str> = graph.vertices.iter().map(|&v| self.paths[v]).collect();
        popularity_ranking(&paths, &refs)
            .into_iter()
            .map(|i| graph.vertices[i])
            .collect()
    }

    /// `split_paths`: the named paths (or the children of `{children_of}`)
    /// with what only they reach (`main`), what the rest reaches too
    /// (`common`), and everything else (`rest`); empty parts left out.
    /// Edges into the named paths are cut in all three, as nixpkgs does.
    fn split_paths(&self, specs: &Json, graph: Graph) -> Result<Value> {
        let specs = specs
            .as_array()
            .ok_or_else(|| anyhow!("split_paths takes a list of paths or {{children_of}} specs"))?;
        let mut split: Vec<usize> = Vec::new();
        for spec in specs {
            let names = match spec {
                Json::Object(map) => match map.get("children_of") {
                    Some(of) if map.len() == 1 => {
                        let parents = text_list(of, "split_paths children_of")?;
                        let parents: BTreeSet<usize> = parents
                            .iter()
                            .filter_map(|n| self.index.get(n.as_str()).copied())
                            .collect();
                        split.extend(
                            graph
                                .edges
                                .iter()
                                .filter(|(a, _)| parents.contains(a))
                                .map(|&(_, b)| b),
                        );
                        continue;
                    }
                    _ => bail!("split_paths: a spec object takes only `children_of`, got {spec}"),
                },
                other => text_list(other, "split_paths")?,
            };
            split.extend(
                names
                    .iter()
                    .filter_map(|n| self.index.get(n.as_str()).copied())
                    .filter(|v| graph.vertices.contains(v)),
            );
        }
        if split.is_empty() {
            return Ok(Value::Dict(vec![("rest".into(), Value::Graph(graph))]));
        }
        let has_referrer: BTreeSet<usize> = graph.edges.iter().map(|&(_, b)| b).collect();
        let roots: Vec<usize> = graph
            .vertices
            .iter()
            .copied()
            .filter(|v| !has_referrer.contains(v))
            .collect();
        if let [root] = roots.as_slice() {
            if split.contains(root) {
                return Ok(Value::Dict(vec![("main".into(), Value::Graph(graph))]));
            }
        }
        let split_off = graph.reachable(&split, true);
        let mut cut = graph.clone();
        cut.edges.retain(|(_, b)| !split.contains(b));
        // nixpkgs joins several roots under a fake one; a split root is then cut off too.
        let starts: Vec<usize> = roots.into_iter().filter(|v| !split.contains(v)).collect();
        let rest_with_common = cut.reachable(&starts, true);
        let common: BTreeSet<usize> = split_off.intersection(&rest_with_common).copied().collect();
        let main: BTreeSet<usize> = split_off.difference(&common).copied().collect();
        let rest: BTreeSet<usize> = rest_with_common.difference(&common).copied().collect();
        Ok(Value::Dict(
            [("main", main), ("common", common), ("rest", rest)]
                .into_iter()
                .filter(|(_, set)| !set.is_empty())
                .map(|(k, set)| (k.to_string(), Value::Graph(cut.induced(&set))))
                .collect(),
        ))
    }
}

/// The pipeline a spec or the CLI gives: the list itself, or the name of a
/// JSON file holding it (nixpkgs accepts a path or a derivation too).
pub fn load(value: &Json, base: Option<&std::path::Path>) -> Result<Json> {
    match value {
        Json::Array(_) => Ok(value.clone()),
        Json::String(text) if text.trim_start().starts_with('[') => serde_json::from_str(text)
            .map_err(|e| anyhow!("the layering pipeline is not valid JSON: {e}")),
        Json::String(file) => {
            let path = std::path::Path::new(file);
            let path = match base {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow!("cannot read the layering pipeline {}: {e}", path.display())
            })?;
            let parsed: Json = serde_json::from_str(&text)
                .map_err(|e| anyhow!("{}: not a JSON layering pipeline ({e})", path.display()))?;
            if !parsed.is_array() {
                bail!(
                    "{}: a layering pipeline is a JSON list of steps",
                    path.display()
                );
            }
            Ok(parsed)
        }
        other => bail!("a layering pipeline is a list of steps or a JSON file, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::{Closure, PathInfo};

    /// A store path per letter name, in the given order, all the same size.
    fn graph(names: &[&str], edges: &[(&str, &str)]) -> Closure {
        let path = |n: &str| {
            let i = names.iter().position(|x| *x == n).unwrap();
            format!("/nix/store/{:0>32}-{n}", i)
        };
        let nodes = names
            .iter()
            .map(|n| PathInfo {
                path: path(n),
                nar_hash: None,
                nar_size: 1,
                references: edges
                    .iter()
                    .filter(|(a, _)| a == n)
                    .map(|(_, b)| path(b))
                    .collect(),
            })
            .collect();
        Closure::from_nodes(nodes, "/nix/store", "test").unwrap()
    }

    fn names(plan: Plan) -> Vec<Vec<String>> {
        plan.into_iter()
            .map(|l| l.into_iter().map(|p| p[44..].to_string()).collect())
            .collect()
    }

    fn pipe_test_graph() -> Closure {
        graph(
            &["Root1", "A", "B", "C", "D", "E", "F", "G", "Root2", "Root3"],
            &[
                ("Root1", "A"),
                ("A", "B"),
                ("A", "C"),
                ("B", "D"),
                ("B", "E"),
                ("E", "F"),
                ("B", "G"),
                ("Root2", "B"),
                ("Root3", "C"),
            ],
        )
    }

    fn root3() -> String {
        format!("/nix/store/{:0>32}-Root3", 9)
    }

    #[test]
    fn nixpkgs_pipe_test_1() {
        let b = format!("/nix/store/{:0>32}-B", 2);
        let pipeline = serde_json::json!([
            ["split_paths", [b]],
            [
                "over",
                "main",
                [
                    "pipe",
                    [
                        ["subcomponent_in", [b]],
                        ["over", "rest", ["popularity_contest"]]
                    ]
                ]
            ],
            ["flatten"],
            ["map", ["remove_paths", root3()]],
            ["limit_layers", 5]
        ]);
        let plan = names(run(&pipe_test_graph(), &pipeline).unwrap());
        assert_eq!(
            plan,
            vec![
                vec!["B"],
                vec!["F"],
                vec!["D"],
                vec!["E"],
                vec!["G", "Root1", "A", "C", "Root2"]
            ]
        );
    }

    #[test]
    fn nixpkgs_pipe_test_2() {
        let g = graph(&["Root1", "A", "B", "Root2"], &[("Root1", "A"), ("A", "B")]);
        let run_names = |p: Json| names(run(&g, &p).unwrap());
        assert_eq!(
            run_names(serde_json::json!([["popularity_contest"]])),
            vec![vec!["B"], vec!["A"], vec!["Root1"], vec!["Root2"]]
        );
        assert_eq!(
            run_names(serde_json::json!([
                ["popularity_contest"],
                ["limit_layers", 3]
            ])),
            vec![vec!["B"], vec!["A"], vec!["Root1", "Root2"]]
        );
        assert_eq!(
            run_names(serde_json::json!([
                ["popularity_contest"],
                ["reverse"],
                ["limit_layers", 3]
            ])),
            vec![vec!["Root2"], vec!["Root1"], vec!["A", "B"]]
        );
    }

    #[test]
    fn subcomponents_and_split_paths_match_nixpkgs_tests() {
        let g = graph(
            &["Root1", "A", "B", "C", "D", "E", "Root2", "Root3", "X"],
            &[
                ("Root1", "A"),
                ("A", "B"),
                ("A", "C"),
                ("B", "D"),
                ("B", "E"),
                ("Root2", "B"),
                ("Root3", "C"),
            ],
        );
        let p = |n: &str, i: usize| format!("/nix/store/{:0>32}-{n}", i);
        let (b, root3) = (p("B", 2), p("Root3", 7));
        let run_names = |p: Json| names(run(&g, &p).unwrap());
        assert_eq!(
            run_names(serde_json::json!([["subcomponent_out", [b, root3]]])),
            vec![
                vec!["B", "C", "D", "E", "Root3"],
                vec!["Root1", "A", "Root2", "X"]
            ]
        );
        assert_eq!(
            run_names(serde_json::json!([["subcomponent_in", [b]]])),
            vec![
                vec!["Root1", "A", "B", "Root2"],
                vec!["C", "D", "E", "Root3", "X"]
            ]
        );
        // split_paths B: B and D, E only it reaches; nothing common; the rest.
        assert_eq!(
            run_names(serde_json::json!([["split_paths", [b]]])),
            vec![
                vec!["B", "D", "E"],
                vec!["Root1", "A", "C", "Root2", "Root3", "X"]
            ]
        );
        // A missing key is an error, as nixpkgs' KeyError.
        let err = run(
            &g,
            &serde_json::json!([["split_paths", [b]], ["over", "common", ["flatten"]]]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("no `common`"), "{err:#}");
    }

    #[test]
    fn bad_pipelines_are_refused_with_the_step() {
        let g = pipe_test_graph();
        for (pipeline, wanted) in [
            (serde_json::json!([["nope"]]), "unknown op `nope`"),
            (serde_json::json!([["limit_layers", 0]]), "count above 0"),
            (
                serde_json::json!([["popularity_contest"], ["popularity_contest"]]),
                "needs a graph",
            ),
            (serde_json::json!({"a": 1}), "list of [op, args"),
        ] {
            let err = format!("{:#}", run(&g, &pipeline).unwrap_err());
            assert!(err.contains(wanted), "{pipeline}: {err}");
        }
    }
}
