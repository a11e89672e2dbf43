//! nixpkgs' `layeringPipeline` (flatten_references_graph): a list of
//! `[op, args…]` steps applied left to right to the closure graph, whose
//! flattened result is the store layers, bottom first.
//!
//! The graph is ordered as nixpkgs' igraph graph is: by `narSize`, ties in
//! the graph's own order. Subgraphs keep that order, and the layers list
//! their paths in it. The operations are exactly those of nixpkgs' `pipe.py`:
//! `popularity_contest`, `limit_layers`, `split_every`, `split_paths`,
//! `subcomponent_in`, `subcomponent_out`, `remove_paths`, `over`, `map`,
//! `pipe`, `flatten` and `reverse`. What nixpkgs' Python accepts and refuses
//! follows from the kinds of value it passes along (igraph graphs, lists,
//! one-pass iterators, dicts); `Value` keeps those kinds apart so that the
//! same pipelines are accepted and refused here (README: "Layer plans and
//! nixpkgs").

use std::cell::RefCell;
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

/// What a step works on, as nixpkgs' Python sees it. The kinds decide what
/// nixpkgs accepts: igraph adds a list of graphs to a graph (`limit_layers`
/// merging what `split_every` made) but not a one-pass iterator, and
/// iterating a dict gives its keys, which are never layers.
#[derive(Clone, Debug)]
enum Value {
    Graph(Graph),
    /// A Python list: what `split_every` returns.
    List(Vec<Value>),
    /// A one-pass iterator: what `popularity_contest`, `map`, `flatten`,
    /// `reverse` and `limit_layers` return.
    Iter(Vec<Value>),
    /// A dict, its keys in insertion order (`main`, `common`, `rest`).
    Dict(Vec<(String, Value)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Graph(_) => "a graph",
            Value::List(_) => "a list",
            Value::Iter(_) => "an iterator",
            Value::Dict(_) => "a dict",
        }
    }

    /// The items of a list or an iterator, which `op` goes through.
    fn items(self, op: &str) -> Result<Vec<Value>> {
        match self {
            Value::List(items) | Value::Iter(items) => Ok(items),
            Value::Graph(_) => bail!(
                "{op} needs a list, got a graph (nixpkgs fails: 'Graph' object is not iterable)"
            ),
            Value::Dict(_) => bail!(
                "{op} needs a list, got a dict (nixpkgs goes through its keys, which are not graphs); \
                 use `over KEY …` or `flatten` first"
            ),
        }
    }
}

/// The closure in nixpkgs' vertex order, and the context the steps need.
struct Pipeline<'a> {
    paths: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
    /// Warnings for what nixpkgs does but surely was not meant, once each.
    warnings: RefCell<BTreeSet<String>>,
}

/// Runs `pipeline` (the JSON list nixpkgs takes) on the closure and returns
/// the layers, bottom first, with empty ones dropped. It accepts and refuses
/// what nixpkgs' flatten_references_graph does (see the README for the few
/// deliberate differences), and warns where nixpkgs quietly does what the
/// pipeline surely did not mean.
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
    let p = Pipeline {
        paths,
        index,
        warnings: RefCell::default(),
    };
    let result = p.pipe(pipeline, Value::Graph(graph));
    for warning in p.warnings.take() {
        eprintln!("nixoci: warning: {warning}");
    }
    let mut graphs = Vec::new();
    match result? {
        Value::Graph(_) => bail!(
            "the layering pipeline ends on a graph, where nixpkgs needs a list of graphs \
             (it fails: 'Graph' object is not iterable); end it with a step that gives layers, \
             such as [\"popularity_contest\"] or [\"split_every\", N]"
        ),
        value => flatten(value, &mut graphs),
    }
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
        Value::List(items) | Value::Iter(items) => items.into_iter().for_each(|v| flatten(v, into)),
        Value::Dict(entries) => entries.into_iter().for_each(|(_, v)| flatten(v, into)),
    }
}

/// A step, checked the way nixpkgs' `preapply_func` checks it before the
/// pipeline runs: a known op with the arguments it takes.
struct Step<'a> {
    op: &'a str,
    args: &'a [Json],
    /// `over`'s and `map`'s step, checked with this one.
    inner: Option<Box<Step<'a>>>,
}

const OPS: &str = "popularity_contest, limit_layers, split_every, split_paths, subcomponent_in, \
                   subcomponent_out, remove_paths, over, map, pipe, flatten, reverse";

impl<'a> Step<'a> {
    fn parse(step: &'a Json) -> Result<Step<'a>> {
        let items = step
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow!("a step is a list [op, args…], got {step}"))?;
        let op = items[0]
            .as_str()
            .ok_or_else(|| anyhow!("a step's first item names its op, got {}", items[0]))?;
        let args = &items[1..];
        let arity = |takes: usize| -> Result<()> {
            if args.len() == takes {
                return Ok(());
            }
            bail!(
                "{op} takes {takes} argument(s), got {}{}",
                args.len(),
                if args.len() > takes {
                    " (nixpkgs applies it to the extra one at once, and fails)"
                } else {
                    ""
                }
            )
        };
        let inner = match op {
            "popularity_contest" | "flatten" | "reverse" => arity(0).map(|_| None)?,
            "limit_layers" | "split_every" | "split_paths" | "subcomponent_in"
            | "subcomponent_out" | "remove_paths" | "pipe" => arity(1).map(|_| None)?,
            // nixpkgs reads map's first argument only.
            "map" => Some(
                args.first()
                    .ok_or_else(|| anyhow!("map needs a step to apply to each item"))?,
            ),
            "over" => match args {
                [_, inner] => Some(inner),
                _ => bail!(
                    "over takes a key and a step, got {} argument(s)",
                    args.len()
                ),
            },
            "reorder" => bail!(
                "`reorder` is not an op of nixpkgs' layeringPipeline (nixoci once had it; nixpkgs \
                 fails with KeyError), so a pipeline using it would not build with dockerTools. \
                 Known ops: {OPS}"
            ),
            _ => bail!("unknown op `{op}` (nixpkgs fails with KeyError); known ops: {OPS}"),
        };
        Ok(Step {
            op,
            args,
            inner: inner.map(Step::parse).transpose()?.map(Box::new),
        })
    }

    /// The step `over` and `map` apply (parsed with them).
    fn inner(&self) -> &Step<'a> {
        self.inner
            .as_deref()
            .expect("Step::parse gives over and map their step")
    }
}

/// A positive count, as Python compares and slices with it (`true` is 1).
fn count(arg: &Json, op: &str) -> Result<i64> {
    match arg {
        Json::Bool(b) => Ok(i64::from(*b)),
        Json::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
        other => bail!("{op} needs a whole number, got {other}"),
    }
}

impl Pipeline<'_> {
    fn warn(&self, text: String) {
        self.warnings
            .borrow_mut()
            .insert(format!("layering pipeline: {text}"));
    }

    /// `pipe`: every step is checked first, as nixpkgs' `preapply_func`
    /// does, then applied left to right.
    fn pipe(&self, steps: &Json, mut value: Value) -> Result<Value> {
        let steps = steps.as_array().ok_or_else(|| {
            anyhow!("a layering pipeline is a list of [op, args…] steps, got {steps}")
        })?;
        let parsed: Vec<Step> = steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                Step::parse(step)
                    .map_err(|e| e.context(format!("layering pipeline step {}: {step}", i + 1)))
            })
            .collect::<Result<_>>()?;
        for (i, (step, json)) in parsed.iter().zip(steps).enumerate() {
            value = self
                .apply(step, value)
                .map_err(|e| e.context(format!("layering pipeline step {}: {json}", i + 1)))?;
        }
        Ok(value)
    }

    fn apply(&self, step: &Step, value: Value) -> Result<Value> {
        let op = step.op;
        match op {
            "pipe" => self.pipe(&step.args[0], value),
            "over" => {
                let key = &step.args[0];
                let Value::Dict(mut entries) = value else {
                    bail!(
                        "over needs a dict (from split_paths or a subcomponent step), got {}",
                        value.kind()
                    );
                };
                let Some(at) = entries.iter().position(|(k, _)| key.as_str() == Some(k)) else {
                    bail!(
                        "over: no `{}` here (keys: {}); split_paths leaves out empty parts \
                         (nixpkgs fails with KeyError)",
                        key.as_str().map_or_else(|| key.to_string(), String::from),
                        entries
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                };
                let inner = step.inner();
                let inner_value = std::mem::replace(&mut entries[at].1, Value::Iter(Vec::new()));
                entries[at].1 = self.apply(inner, inner_value)?;
                Ok(Value::Dict(entries))
            }
            "map" => {
                if step.args.len() > 1 {
                    self.warn(format!(
                        "map ignores its arguments after the first step, as nixpkgs does: {}",
                        Json::from(step.args[1..].to_vec())
                    ));
                }
                let inner = step.inner();
                Ok(Value::Iter(
                    value
                        .items(op)?
                        .into_iter()
                        .map(|v| self.apply(inner, v))
                        .collect::<Result<_>>()?,
                ))
            }
            "flatten" => {
                if let Value::Graph(_) = value {
                    bail!("flatten needs a list or a dict, got a graph (nixpkgs fails: 'Graph' object is not iterable)");
                }
                let mut graphs = Vec::new();
                flatten(value, &mut graphs);
                Ok(Value::Iter(graphs.into_iter().map(Value::Graph).collect()))
            }
            "reverse" => {
                let mut items = value.items(op)?;
                items.reverse();
                Ok(Value::Iter(items))
            }
            "limit_layers" => {
                let max = count(&step.args[0], op)?;
                if max < 1 {
                    bail!("limit_layers needs a count above 0 (nixpkgs asserts it), got {max}");
                }
                let mut items = value.items(op)?.into_iter();
                let mut kept: Vec<Value> = items
                    .by_ref()
                    .take(usize::try_from(max - 1).unwrap_or(usize::MAX))
                    .collect();
                let mut merged = Graph::default();
                for item in items {
                    merged = match item {
                        Value::Graph(g) => merged.union(&g),
                        Value::List(list) => list.into_iter().try_fold(merged, |m, g| match g {
                            Value::Graph(g) => Ok(m.union(&g)),
                            other => bail!(
                                "limit_layers can merge only graphs and lists of graphs, got a list holding {}",
                                other.kind()
                            ),
                        })?,
                        other => bail!(
                            "limit_layers can merge only graphs and lists of graphs (igraph's `+`), got {}; \
                             `flatten` first",
                            other.kind()
                        ),
                    };
                }
                kept.push(Value::Graph(merged));
                Ok(Value::Iter(kept))
            }
            "popularity_contest" => match value {
                Value::Graph(graph) => Ok(Value::Iter(
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
                // nixpkgs reads a list as exportReferencesGraph nodes: an empty one has none.
                Value::List(items) | Value::Iter(items) if items.is_empty() => {
                    Ok(Value::Iter(Vec::new()))
                }
                other => bail!("popularity_contest needs a graph, got {}", other.kind()),
            },
            "split_every" => {
                let n = count(&step.args[0], op)?;
                let Value::Graph(graph) = value else {
                    bail!("split_every needs a graph, got {}", value.kind());
                };
                if n < 1 {
                    bail!(
                        "split_every needs a count above 0, got {n} (nixpkgs fails on 0, and \
                         drops every path below 0)"
                    );
                }
                Ok(Value::List(
                    graph
                        .vertices
                        .chunks(usize::try_from(n).unwrap_or(usize::MAX))
                        .map(|chunk| Value::Graph(graph.induced(&chunk.iter().copied().collect())))
                        .collect(),
                ))
            }
            "remove_paths" => {
                // A single path is allowed here (nixpkgs checks for a string).
                let names: Vec<&Json> = match &step.args[0] {
                    one @ Json::String(_) => vec![one],
                    other => self.iterated(other, op)?,
                };
                if names.is_empty() {
                    return Ok(value);
                }
                let Value::Graph(graph) = value else {
                    bail!("remove_paths needs a graph, got {}", value.kind());
                };
                let drop = self.lookup(&names, &graph, op)?.into_iter().collect();
                Ok(Value::Graph(graph.without(&drop)))
            }
            "subcomponent_in" | "subcomponent_out" => {
                let names = self.iterated(&step.args[0], op)?;
                let Value::Graph(graph) = value else {
                    bail!("{op} needs a graph, got {}", value.kind());
                };
                let starts = self.lookup(&names, &graph, op)?;
                let main = graph.reachable(&starts, op == "subcomponent_out");
                Ok(Value::Dict(vec![
                    ("main".into(), Value::Graph(graph.induced(&main))),
                    ("rest".into(), Value::Graph(graph.without(&main))),
                ]))
            }
            "split_paths" => self.split_paths(&step.args[0], value),
            _ => unreachable!("Step::parse admits only the ops above"),
        }
    }

    /// What nixpkgs iterates when it expects a list of paths. A string is
    /// gone through character by character and a dict key by key: nixpkgs
    /// then finds no store path of that name, so nothing is selected. That
    /// is surely not what was meant, so it is said.
    fn iterated<'j>(&self, arg: &'j Json, op: &str) -> Result<Vec<&'j Json>> {
        match arg {
            Json::Array(items) => Ok(items.iter().collect()),
            // No store path is one character long, nor named like a spec's key.
            Json::String(_) => {
                self.warn(format!(
                    "{op} was given the string {arg} where nixpkgs expects a list of paths; \
                     nixpkgs takes each character as a path, finds none, and selects nothing \
                     (as nixoci does here). Write [{arg}] to select it"
                ));
                Ok(Vec::new())
            }
            Json::Object(map) => {
                self.warn(format!(
                    "{op} was given the dict {arg} where nixpkgs expects a list; nixpkgs takes \
                     its keys ({}) as paths, finds none, and selects nothing (as nixoci does here)",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                Ok(Vec::new())
            }
            other => {
                bail!("{op} needs a list of store paths, got {other} (nixpkgs cannot iterate it)")
            }
        }
    }

    /// The vertices of `graph` named by `names` (store paths it lacks are
    /// skipped, as nixpkgs skips them).
    fn lookup(&self, names: &[&Json], graph: &Graph, op: &str) -> Result<Vec<usize>> {
        let mut found = Vec::new();
        for name in names {
            let Json::String(name) = name else {
                bail!(
                    "{op}: a path is a string, got {name} (nixpkgs fails on a list, and takes a \
                     number as a vertex index)"
                );
            };
            found.extend(
                self.index
                    .get(name.as_str())
                    .copied()
                    .filter(|v| graph.vertices.contains(v)),
            );
        }
        Ok(found)
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
    fn split_paths(&self, specs: &Json, value: Value) -> Result<Value> {
        const OP: &str = "split_paths";
        let needs_graph = || anyhow!("split_paths needs a graph, got {}", value.kind());
        let graph = match &value {
            Value::Graph(graph) => Some(graph),
            _ => None,
        };
        // A string or a dict is gone through for look-ups, which need a graph.
        let looks_up = match specs {
            Json::String(s) => !s.is_empty(),
            Json::Object(map) => !map.is_empty(),
            _ => false,
        };
        if looks_up && graph.is_none() {
            return Err(needs_graph());
        }
        let mut split: Vec<usize> = Vec::new();
        for spec in self.iterated(specs, OP)? {
            match spec {
                Json::Object(map) => {
                    let Some(of) = map.get("children_of") else {
                        bail!("split_paths: a spec object takes `children_of`, got {spec} (nixpkgs fails on it too)");
                    };
                    let parents: Vec<&Json> = match of {
                        Json::Array(items) => items.iter().collect(),
                        one => vec![one],
                    };
                    // nixpkgs reads the graph's `successors` even for no parents.
                    let graph = graph.ok_or_else(needs_graph)?;
                    let parents: BTreeSet<usize> =
                        self.lookup(&parents, graph, OP)?.into_iter().collect();
                    split.extend(
                        graph
                            .edges
                            .iter()
                            .filter(|(a, _)| parents.contains(a))
                            .map(|&(_, b)| b),
                    );
                }
                Json::Array(_) => bail!(
                    "split_paths: a spec is a path or {{\"children_of\": …}}, got the list {spec} \
                     (nixpkgs fails: no such vertex)"
                ),
                name => split.extend(self.lookup(&[name], graph.ok_or_else(needs_graph)?, OP)?),
            }
        }
        if split.is_empty() {
            return Ok(Value::Dict(vec![("rest".into(), value)]));
        }
        let Value::Graph(graph) = value else {
            unreachable!("a split path was found in a graph");
        };
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

    // nixpkgs' pipe_test.py cases run through the CLI in tests/plan_parity.rs.

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
            (serde_json::json!([]), "ends on a graph"),
            (
                serde_json::json!([["remove_paths", [root3()]]]),
                "ends on a graph",
            ),
            (
                serde_json::json!([["flatten"]]),
                "flatten needs a list or a dict, got a graph",
            ),
            (
                serde_json::json!([["popularity_contest", 5]]),
                "takes 0 argument(s), got 1",
            ),
            (
                serde_json::json!([["limit_layers"]]),
                "takes 1 argument(s), got 0",
            ),
            (
                serde_json::json!([["over", "main"]]),
                "over takes a key and a step",
            ),
            (serde_json::json!([["map"]]), "map needs a step"),
            (
                serde_json::json!([["reorder", ["main"]]]),
                "not an op of nixpkgs",
            ),
            (
                serde_json::json!([["split_paths", [[root3()]]]]),
                "got the list",
            ),
            (
                serde_json::json!([["split_paths", [{"of": root3()}]]]),
                "takes `children_of`",
            ),
            (
                serde_json::json!([
                    ["split_paths", []],
                    ["over", "rest", ["split_every", 2]],
                    ["limit_layers", 1]
                ]),
                "got a dict (nixpkgs goes through its keys",
            ),
            (
                serde_json::json!([
                    ["popularity_contest"],
                    ["map", ["popularity_contest"]],
                    ["limit_layers", 2]
                ]),
                "can merge only graphs and lists of graphs (igraph's `+`), got an iterator",
            ),
            (serde_json::json!([["split_every", 0]]), "count above 0"),
            (
                serde_json::json!([["split_every", -1]]),
                "drops every path below 0",
            ),
            (serde_json::json!([["split_every", 1.5]]), "whole number"),
            (serde_json::json!([["remove_paths", [3]]]), "vertex index"),
        ] {
            let err = format!("{:#}", run(&g, &pipeline).unwrap_err());
            assert!(err.contains(wanted), "{pipeline}: {err}");
        }
        // The step is named, nested ones too.
        let err = format!(
            "{:#}",
            run(
                &g,
                &serde_json::json!([
                    ["split_paths", []],
                    ["over", "rest", ["pipe", [["flatten"]]]]
                ])
            )
            .unwrap_err()
        );
        assert!(
            err.contains("layering pipeline step 2: [\"over\"")
                && err.contains("layering pipeline step 1: [\"flatten\"]"),
            "{err}"
        );
    }

    #[test]
    fn what_nixpkgs_runs_on_mistaken_arguments_runs_here_too() {
        let g = pipe_test_graph();
        let b = format!("/nix/store/{:0>32}-B", 2);
        let all = vec!["Root1", "A", "B", "C", "D", "E", "F", "G", "Root2", "Root3"];
        // A path as a string: nixpkgs goes through its characters, finds no
        // path and selects nothing, so everything is `rest`.
        for op in ["subcomponent_in", "subcomponent_out", "split_paths"] {
            let plan = names(run(&g, &serde_json::json!([[op, b], ["flatten"]])).unwrap());
            assert_eq!(plan, vec![all.clone()], "{op}");
        }
        // remove_paths takes one path as a string on purpose.
        let plan = names(
            run(
                &g,
                &serde_json::json!([["remove_paths", b], ["split_every", 100]]),
            )
            .unwrap(),
        );
        assert!(
            !plan[0].contains(&"B".to_string()) && plan[0].len() == 9,
            "{plan:?}"
        );
        // map ignores what follows its step; true counts as 1.
        let plan = names(
            run(
                &g,
                &serde_json::json!([
                    ["split_every", 5],
                    ["map", ["split_every", 1], 7],
                    ["limit_layers", true]
                ]),
            )
            .unwrap(),
        );
        assert_eq!(plan.len(), 1);
        // limit_layers merges the lists split_every makes (igraph adds a list of graphs).
        let plan = names(
            run(
                &g,
                &serde_json::json!([
                    ["split_every", 4],
                    ["map", ["split_every", 2]],
                    ["limit_layers", 1]
                ]),
            )
            .unwrap(),
        );
        assert_eq!(plan, vec![all.clone()]);
        // split_paths with nothing to split leaves any value alone.
        let plan = names(
            run(
                &g,
                &serde_json::json!([["popularity_contest"], ["split_paths", []], ["flatten"]]),
            )
            .unwrap(),
        );
        assert_eq!(plan.len(), 10);
    }

    /// What nixpkgs does past a graph, checked with its own code: `remove_paths
    /// []` and `split_paths []` leave any value alone, while a split_paths
    /// spec that looks anything up (a path, a string's characters, even an
    /// empty `children_of`) needs a graph.
    #[test]
    fn steps_past_a_graph_run_or_fail_as_in_nixpkgs() {
        let g = pipe_test_graph();
        let b = format!("/nix/store/{:0>32}-B", 2);
        let runs = |pipeline: Json| names(run(&g, &pipeline).unwrap()).len();
        assert_eq!(
            runs(serde_json::json!([
                ["popularity_contest"],
                ["remove_paths", []]
            ])),
            10
        );
        assert_eq!(
            runs(serde_json::json!([
                ["popularity_contest"],
                ["split_paths", []],
                ["flatten"]
            ])),
            10
        );
        for spec in [
            serde_json::json!(b),
            serde_json::json!([b]),
            serde_json::json!([{"children_of": []}]),
            serde_json::json!({"children_of": []}),
        ] {
            let pipeline =
                serde_json::json!([["popularity_contest"], ["split_paths", spec], ["flatten"]]);
            let err = format!("{:#}", run(&g, &pipeline).unwrap_err());
            assert!(
                err.contains("split_paths needs a graph, got an iterator"),
                "{pipeline}: {err}"
            );
        }
    }

    #[test]
    fn an_empty_graph_runs_as_in_nixpkgs() {
        let empty = Closure::default();
        let b = format!("/nix/store/{:0>32}-B", 2);
        for pipeline in [
            serde_json::json!([["split_paths", []], ["flatten"]]),
            serde_json::json!([["split_paths", [b]], ["flatten"]]),
            serde_json::json!([["subcomponent_out", [b]], ["flatten"]]),
            serde_json::json!([["popularity_contest"]]),
        ] {
            assert_eq!(run(&empty, &pipeline).unwrap(), Plan::new(), "{pipeline}");
        }
        assert!(run(&empty, &serde_json::json!([])).is_err());
    }
}
