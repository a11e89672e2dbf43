//! `nixoci plan` against nixpkgs itself: random closures (up to 400 paths,
//! chains of up to 130 diamonds) and random layering pipelines, with the
//! layers or the refusal that nixpkgs' own flatten_references_graph and
//! auto-layer.py gave for each (`tests/fixtures/plan-parity/cases.json`,
//! made by `generate.py` beside it; its header says how).

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn cases() -> Value {
    read_json(&repo().join("tests/fixtures/plan-parity/cases.json"))
}

/// A case's store paths: the fixture keeps `[hash, name, narSize, refs]`.
fn store_paths(graph: &Value) -> Vec<String> {
    graph
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "/nix/store/{}-{}",
                n[0].as_str().unwrap(),
                n[1].as_str().unwrap()
            )
        })
        .collect()
}

/// The graph as exportReferencesGraph writes it (self-references included),
/// in the file `plan --graph` reads.
fn write_graph(graph: &Value, file: &Path) -> Vec<String> {
    let paths = store_paths(graph);
    let nodes: Vec<Value> = graph
        .as_array()
        .unwrap()
        .iter()
        .zip(&paths)
        .map(|(n, path)| {
            let mut references: Vec<&str> = n[3]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| paths[r.as_u64().unwrap() as usize].as_str())
                .collect();
            references.push(path);
            json!({"path": path, "narSize": n[2], "closureSize": n[2], "references": references})
        })
        .collect();
    fs::write(file, Value::Array(nodes).to_string()).unwrap();
    paths
}

fn expected_layers(case: &Value, paths: &[String]) -> Vec<Vec<String>> {
    case["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l.as_array()
                .unwrap()
                .iter()
                .map(|i| paths[i.as_u64().unwrap() as usize].clone())
                .collect()
        })
        .collect()
}

#[test]
fn pipelines_give_nixpkgs_layers_or_its_refusals() {
    let cases = cases();
    let dir = tempdir();
    let graph_file = dir.path().join("graph.json");
    let (mut agreed, mut refused, mut big) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for (n, case) in cases["pipelines"].as_array().unwrap().iter().enumerate() {
        let paths = write_graph(&case["graph"], &graph_file);
        let pipeline = case["pipeline"].to_string();
        let out = nixoci()
            .arg("plan")
            .arg("--graph")
            .arg(&graph_file)
            .args(["--pipeline", &pipeline])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(why) = case["error"].as_str() {
            if out.status.success() {
                mismatches.push(format!(
                    "case {n}: nixpkgs refuses {pipeline} ({why}), nixoci planned it"
                ));
            } else if !stderr.contains("layering pipeline step") && !stderr.contains("pipeline") {
                mismatches.push(format!("case {n}: the refusal names no step: {stderr}"));
            } else {
                refused += 1;
            }
            continue;
        }
        if !out.status.success() {
            mismatches.push(format!(
                "case {n}: nixpkgs plans {pipeline}, nixoci refuses: {stderr}"
            ));
            continue;
        }
        let got: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        if got != expected_layers(case, &paths) {
            mismatches.push(format!(
                "case {n}: {pipeline} on {} paths: nixoci's layers differ from nixpkgs'",
                paths.len()
            ));
        } else {
            agreed += 1;
            big += usize::from(paths.len() > 245);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases["pipelines"].as_array().unwrap().len(),
        mismatches.join("\n")
    );
    // The fixture must exercise both outcomes and big closures.
    assert!(
        agreed >= 250 && refused >= 150 && big >= 30,
        "{agreed} {refused} {big}"
    );
}

#[test]
fn auto_layer_gives_nixpkgs_partition_and_order() {
    let cases = cases();
    let dir = tempdir();
    let graph_file = dir.path().join("graph.json");
    for (n, case) in cases["auto_layer"].as_array().unwrap().iter().enumerate() {
        let paths = write_graph(&case["graph"], &graph_file);
        // The budget counts the customisation layer: nixpkgs' availableLayers + 1.
        let max_layers = (case["budget"].as_u64().unwrap() + 1).to_string();
        let got: Vec<Vec<String>> = serde_json::from_str(&stdout(
            nixoci().arg("plan").arg("--graph").arg(&graph_file).args([
                "--strategy",
                "auto",
                "--max-layers",
                &max_layers,
            ]),
        ))
        .unwrap();
        let want = expected_layers(case, &paths);
        assert_eq!(got.len(), want.len(), "case {n}: layer count");
        // Layers of equal closure size come in Python's hash order in
        // nixpkgs; nixoci orders those by their paths. Within such a run,
        // any order of the same layers agrees.
        let sizes: Vec<u64> = case["closure_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        let mut start = 0;
        while start < want.len() {
            let end = start
                + sizes[start..]
                    .iter()
                    .take_while(|&&s| s == sizes[start])
                    .count();
            let (mut g, mut w) = (got[start..end].to_vec(), want[start..end].to_vec());
            if end - start > 1 {
                assert!(
                    g.windows(2).all(|p| p[0] <= p[1]),
                    "case {n}: ties not ordered by their paths"
                );
            }
            g.sort();
            w.sort();
            assert_eq!(g, w, "case {n}: layers {start}..{end}");
            start = end;
        }
    }
}

/// A store path for a name of nixpkgs' unit tests; one hash for all, so that
/// ties go by name as they do there.
fn test_path(name: &str) -> String {
    format!("/nix/store/{}-{name}", "a".repeat(32))
}

/// The cases of nixpkgs' own `*_test.py` files for flatten_references_graph
/// (split_paths, subcomponent, popularity_contest, lib, pipe and
/// flatten_references_graph), through `nixoci plan --pipeline`. Their graphs
/// are compared as nixpkgs' `assertGraphEqual` compares them, by vertex set,
/// except where a test lists names in order.
#[test]
fn nixpkgs_unit_tests_pass_through_plan() {
    // split_paths_test and popularity_contest_test share this graph.
    let split_graph: &[(&str, &[&str])] = &[
        ("Root1", &["A"]),
        ("A", &["B", "D"]),
        ("D", &["E"]),
        ("B", &["D", "F"]),
        ("Root2", &["B"]),
        ("Root3", &["C"]),
        ("C", &[]),
        ("E", &[]),
        ("F", &[]),
        ("X", &[]),
    ];
    let subcomponent_graph: &[(&str, &[&str])] = &[
        ("Root1", &["A"]),
        ("A", &["B", "C"]),
        ("B", &["D", "E"]),
        ("Root2", &["B"]),
        ("Root3", &["C"]),
        ("C", &[]),
        ("D", &[]),
        ("E", &[]),
        ("X", &[]),
    ];
    let pipe_graph: &[(&str, &[&str])] = &[
        ("Root1", &["A"]),
        ("A", &["B", "C"]),
        ("B", &["D", "E", "G"]),
        ("E", &["F"]),
        ("Root2", &["B"]),
        ("Root3", &["C"]),
        ("C", &[]),
        ("D", &[]),
        ("F", &[]),
        ("G", &[]),
    ];
    let pipe_graph_2: &[(&str, &[&str])] =
        &[("Root1", &["A"]), ("A", &["B"]), ("B", &[]), ("Root2", &[])];
    // flatten_references_graph_test's graph, with its narSizes (A 2, B 4, C 6, D 8).
    let flatten_graph: &[(&str, &[&str])] =
        &[("A", &["C"]), ("B", &["C", "D"]), ("C", &[]), ("D", &[])];
    // lib_test's graph: narSizes D 0, B 4, E 5, A 10, C 6, F 2 (D gets 1
    // here: no NAR is empty, so nixoci reads 0 as unknown; the order stays).
    let lib_graph: &[(&str, &[&str])] = &[
        ("D", &[]),
        ("B", &[]),
        ("E", &[]),
        ("A", &["C", "B"]),
        ("C", &["E", "D"]),
        ("F", &[]),
    ];
    let sizes = |name: &str| -> u64 {
        match name {
            "A" => 2,
            "B" => 4,
            "C" => 6,
            "D" => 8,
            _ => 1,
        }
    };
    let lib_sizes = |name: &str| -> u64 {
        match name {
            "D" => 1,
            "B" => 4,
            "E" => 5,
            "A" => 10,
            "C" => 6,
            _ => 2,
        }
    };
    let same_size = |_: &str| 1;
    let p = test_path;
    let b = p("B");
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a [&'a str])],
        &'a dyn Fn(&str) -> u64,
        Value,
        &'a [&'a [&'a str]],
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "split_paths: no paths",
            split_graph,
            &same_size,
            json!([["split_paths", []]]),
            &[&["Root1", "A", "B", "C", "D", "E", "F", "Root2", "Root3", "X"]],
            false,
        ),
        (
            "split_paths: one",
            split_graph,
            &same_size,
            json!([["split_paths", [b]]]),
            &[
                &["B", "F"],
                &["D", "E"],
                &["Root1", "A", "Root3", "C", "Root2", "X"],
            ],
            false,
        ),
        (
            "split_paths: two",
            split_graph,
            &same_size,
            json!([["split_paths", [b, p("Root3")]]]),
            &[
                &["B", "F", "Root3", "C"],
                &["D", "E"],
                &["Root1", "A", "Root2", "X"],
            ],
            false,
        ),
        (
            "split_paths: nothing common",
            split_graph,
            &same_size,
            json!([["split_paths", [p("D")]]]),
            &[
                &["D", "E"],
                &["Root1", "A", "B", "F", "Root2", "Root3", "C", "X"],
            ],
            false,
        ),
        (
            "subcomponent_out: no paths",
            subcomponent_graph,
            &same_size,
            json!([["subcomponent_out", []]]),
            &[&["Root1", "A", "B", "C", "D", "E", "Root2", "Root3", "X"]],
            false,
        ),
        (
            "subcomponent_in: no paths",
            subcomponent_graph,
            &same_size,
            json!([["subcomponent_in", []]]),
            &[&["Root1", "A", "B", "C", "D", "E", "Root2", "Root3", "X"]],
            false,
        ),
        (
            "subcomponent_out: one",
            subcomponent_graph,
            &same_size,
            json!([["subcomponent_out", [b]]]),
            &[
                &["B", "D", "E"],
                &["Root1", "A", "C", "Root3", "Root2", "X"],
            ],
            false,
        ),
        (
            "subcomponent_out: two",
            subcomponent_graph,
            &same_size,
            json!([["subcomponent_out", [b, p("Root3")]]]),
            &[
                &["B", "D", "E", "Root3", "C"],
                &["Root1", "A", "Root2", "X"],
            ],
            false,
        ),
        (
            "subcomponent_in: one",
            subcomponent_graph,
            &same_size,
            json!([["subcomponent_in", [b]]]),
            &[
                &["Root1", "A", "B", "Root2"],
                &["Root3", "C", "D", "E", "X"],
            ],
            false,
        ),
        (
            "subcomponent_in: two",
            subcomponent_graph,
            &same_size,
            json!([["subcomponent_in", [b, p("Root3")]]]),
            &[
                &["Root1", "A", "B", "Root2", "Root3"],
                &["C", "D", "E", "X"],
            ],
            false,
        ),
        (
            "popularity_contest",
            split_graph,
            &same_size,
            json!([["popularity_contest"]]),
            &[
                &["E"],
                &["D"],
                &["F"],
                &["B"],
                &["A"],
                &["C"],
                &["Root1"],
                &["Root2"],
                &["Root3"],
                &["X"],
            ],
            true,
        ),
        (
            "lib: the graph in narSize order",
            lib_graph,
            &lib_sizes,
            json!([["split_every", 1]]),
            &[&["D"], &["F"], &["B"], &["E"], &["C"], &["A"]],
            true,
        ),
        (
            "lib: limit_layers with nothing to do",
            lib_graph,
            &lib_sizes,
            json!([["split_every", 6], ["limit_layers", 1]]),
            &[&["D", "F", "B", "E", "C", "A"]],
            true,
        ),
        (
            "flatten_references_graph: split_paths",
            flatten_graph,
            &sizes,
            json!([["split_paths", [b]]]),
            &[&["B", "D"], &["C"], &["A"]],
            true,
        ),
        (
            "flatten_references_graph: split, then subcomponent_in",
            flatten_graph,
            &sizes,
            json!([
                ["split_paths", [b]],
                ["over", "main", ["subcomponent_in", [b]]]
            ]),
            &[&["B"], &["D"], &["C"], &["A"]],
            true,
        ),
        (
            "pipe test_1",
            pipe_graph,
            &same_size,
            json!([
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
                ["map", ["remove_paths", p("Root3")]],
                ["limit_layers", 5]
            ]),
            &[
                &["B"],
                &["F"],
                &["D"],
                &["E"],
                &["Root1", "A", "C", "Root2", "G"],
            ],
            false,
        ),
        (
            "pipe test_2: popularity",
            pipe_graph_2,
            &same_size,
            json!([["popularity_contest"]]),
            &[&["B"], &["A"], &["Root1"], &["Root2"]],
            true,
        ),
        (
            "pipe test_2: limited",
            pipe_graph_2,
            &same_size,
            json!([["popularity_contest"], ["limit_layers", 3]]),
            &[&["B"], &["A"], &["Root1", "Root2"]],
            false,
        ),
        (
            "pipe test_2: reversed",
            pipe_graph_2,
            &same_size,
            json!([["popularity_contest"], ["reverse"], ["limit_layers", 3]]),
            &[&["Root2"], &["Root1"], &["A", "B"]],
            false,
        ),
    ];
    let dir = tempdir();
    let file = dir.path().join("graph.json");
    for (name, graph, size, pipeline, want, ordered) in cases {
        let nodes: Vec<Value> = graph
            .iter()
            .map(|(n, refs)| {
                json!({"path": p(n), "narSize": size(n),
                       "references": refs.iter().map(|r| p(r)).collect::<Vec<_>>()})
            })
            .collect();
        fs::write(&file, Value::Array(nodes).to_string()).unwrap();
        let got: Vec<Vec<String>> = serde_json::from_str(&stdout(
            nixoci()
                .arg("plan")
                .arg("--graph")
                .arg(&file)
                .args(["--pipeline", &pipeline.to_string()]),
        ))
        .unwrap();
        let normal = |layers: Vec<Vec<String>>| -> Vec<Vec<String>> {
            layers
                .into_iter()
                .map(|mut l| {
                    if !ordered {
                        l.sort();
                    }
                    l
                })
                .collect()
        };
        let want: Vec<Vec<String>> = want
            .iter()
            .map(|l| l.iter().map(|n| p(n)).collect())
            .collect();
        assert_eq!(normal(got), normal(want), "{name}");
    }
}

/// references-by-popularity (`--strategy popularity`, nixpkgs' layering
/// before auto-layer) on a chain of 130 diamonds: the scores pass 2^128, and
/// nixpkgs' exact integers decide the order, not the names.
#[test]
fn popularity_strategy_orders_a_chain_of_130_diamonds_as_nixpkgs() {
    let cases = cases();
    let case = cases["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pipeline"] == json!([["popularity_contest"], ["limit_layers", 99]]))
        .expect("the fixture has the diamond chain");
    let dir = tempdir();
    let file = dir.path().join("graph.json");
    let paths = write_graph(&case["graph"], &file);
    assert!(
        paths.iter().any(|p| p.ends_with("-join-129")),
        "130 diamonds"
    );
    let got: Vec<Vec<String>> = serde_json::from_str(&stdout(
        nixoci().arg("plan").arg("--graph").arg(&file).args([
            "--strategy",
            "popularity",
            "--max-layers",
            "100",
        ]),
    ))
    .unwrap();
    let want = expected_layers(case, &paths);
    assert_eq!(got.len(), 99);
    assert_eq!(got, want);
}

/// Where nixpkgs quietly does what a pipeline surely did not mean (a path
/// given as a string is gone through character by character), nixoci gives
/// nixpkgs' layers and says so, naming the step.
#[test]
fn a_string_for_a_list_gives_nixpkgs_layers_and_a_warning() {
    let dir = tempdir();
    let file = dir.path().join("graph.json");
    let graph = json!([
        ["0".repeat(32), "app-1.0", 10, [1]],
        ["1".repeat(32), "zlib-1.3", 5, []]
    ]);
    let paths = write_graph(&graph, &file);
    for op in ["subcomponent_out", "subcomponent_in", "split_paths"] {
        let pipeline = json!([[op, paths[1]], ["flatten"]]).to_string();
        let out = run(nixoci()
            .arg("plan")
            .arg("--graph")
            .arg(&file)
            .args(["--pipeline", &pipeline]));
        let layers: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        // Nothing selected: one layer of everything, in nixpkgs' narSize order.
        assert_eq!(
            layers,
            vec![vec![paths[1].clone(), paths[0].clone()]],
            "{op}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("warning")
                && stderr.contains(&format!("{op} was given the string \"{}\"", paths[1])),
            "{op}: {stderr}"
        );
    }
    // The list form selects the path, and warns of nothing.
    let pipeline = json!([["subcomponent_out", [paths[1]]], ["flatten"]]).to_string();
    let out = run(nixoci()
        .arg("plan")
        .arg("--graph")
        .arg(&file)
        .args(["--pipeline", &pipeline]));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(layers, vec![vec![paths[1].clone()], vec![paths[0].clone()]]);
}
