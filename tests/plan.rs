//! `nixoci plan` reproduces nixpkgs' layering: the expected orders of
//! references-by-popularity's own unit tests and the worked example in its
//! documentation, the `maxLayers` limit, and auto-layer's partition.

mod common;

use std::fs;

use common::*;
use serde_json::{json, Value};

/// A store path named `name`; hashes are chosen so they never decide a tie.
fn sp(name: &str) -> String {
    format!("/nix/store/{}-{name}", "1".repeat(32))
}

fn plan(graph: Value, args: &[&str]) -> Vec<Vec<String>> {
    let dir = tempdir();
    let file = dir.path().join("graph.json");
    fs::write(&file, graph.to_string()).unwrap();
    let out = stdout(nixoci().arg("plan").arg("--graph").arg(&file).args(args));
    serde_json::from_str(&out).expect("plan prints JSON")
}

fn node(name: &str, refs: &[&str]) -> Value {
    let mut references: Vec<String> = refs.iter().map(|r| sp(r)).collect();
    references.push(sp(name)); // Nix lists self-references; they must not count.
    json!({"path": sp(name), "references": references, "narSize": 1})
}

fn names(plan: &[Vec<String>]) -> Vec<Vec<String>> {
    plan.iter()
        .map(|l| {
            l.iter()
                .map(|p| p.rsplit_once('-').unwrap().1.to_string())
                .collect()
        })
        .collect()
}

fn singles(list: &[&str]) -> Vec<Vec<String>> {
    list.iter().map(|n| vec![n.to_string()]).collect()
}

#[test]
fn worked_example_from_closure_graph_py() {
    // A - B - C - D - F, C - E - F, B - E, A - G: popularity F9 E5 D4 C3 B2 G2 A1.
    let graph = json!([
        node("A", &["B", "G"]),
        node("B", &["C", "E"]),
        node("C", &["D", "E"]),
        node("D", &["F"]),
        node("E", &["F"]),
        node("F", &[]),
        node("G", &[]),
    ]);
    assert_eq!(
        names(&plan(graph.clone(), &["--strategy", "popularity"])),
        singles(&["F", "E", "D", "C", "B", "G", "A"])
    );
    // maxLayers 3 leaves 2 store layers: the most popular path, then the rest in order.
    assert_eq!(
        names(&plan(
            graph,
            &["--strategy", "popularity", "--max-layers", "3"]
        )),
        vec![
            vec!["F".to_string()],
            ["E", "D", "C", "B", "G", "A"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        ]
    );
}

#[test]
fn popularity_contest_unit_test() {
    // TestGraphPopularityContest: foo 1, bar 2, baz 4, tux 6.
    let graph = json!([
        node("foo", &["bar", "baz"]),
        node("bar", &["baz"]),
        node("baz", &["tux"]),
        node("tux", &[]),
    ]);
    assert_eq!(
        names(&plan(graph, &["--strategy", "popularity"])),
        singles(&["tux", "baz", "bar", "foo"])
    );
}

#[test]
fn order_by_popularity_unit_test_ties_go_by_name() {
    // TestOrderByPopularity: {foo: 1, bar: 1, baz: 2, tux: 2} orders baz, tux, bar, foo.
    let graph = json!([
        node("foo", &["baz"]),
        node("bar", &["tux"]),
        node("baz", &[]),
        node("tux", &[])
    ]);
    assert_eq!(
        names(&plan(graph, &["--strategy", "popularity"])),
        singles(&["baz", "tux", "bar", "foo"])
    );
}

#[test]
fn find_roots_unit_test_graph() {
    // TestFindRoots' graph: foo and hello are roots; bar and tux are below foo.
    let graph = json!([
        node("foo", &["bar"]),
        node("bar", &["tux"]),
        node("hello", &[]),
        node("tux", &[])
    ]);
    // tux: 3, bar: 2, foo 1, hello 1 (ties by name).
    assert_eq!(
        names(&plan(graph, &["--strategy", "popularity"])),
        singles(&["tux", "bar", "foo", "hello"])
    );
}

#[test]
fn auto_layer_partition() {
    let sized = |name: &str, refs: &[&str], size: u64| {
        let mut n = node(name, refs);
        n["narSize"] = json!(size);
        n
    };
    let graph = json!([
        sized("app", &["lib", "libc"], 1000),
        sized("lib", &["libc"], 10),
        sized("tool", &["libc"], 100),
        sized("libc", &[], 500),
    ]);
    // Budget 3 (maxLayers 4): app, libc and tool become primaries; lib is used
    // only by app and joins it. Layers are ordered by closure size.
    assert_eq!(
        names(&plan(
            graph.clone(),
            &["--strategy", "auto", "--max-layers", "4"]
        )),
        vec![
            vec!["libc".to_string()],
            vec!["tool".to_string()],
            vec!["app".to_string(), "lib".to_string()]
        ]
    );
    assert_eq!(
        plan(graph.clone(), &["--strategy", "auto", "--max-layers", "2"]).len(),
        1
    );
    // auto-layer is the default, as in nixpkgs since 25.05.
    assert_eq!(
        plan(graph.clone(), &["--max-layers", "4"]),
        plan(graph.clone(), &["--strategy", "auto", "--max-layers", "4"])
    );
    assert_ne!(
        plan(graph.clone(), &["--max-layers", "4"]),
        plan(graph, &["--strategy", "popularity", "--max-layers", "4"])
    );
}

#[test]
fn plan_of_a_real_closure_covers_every_path_once() {
    let f = fixture();
    for strategy in ["popularity", "auto"] {
        let out = stdout(
            nixoci()
                .args([
                    "plan",
                    "--strategy",
                    strategy,
                    "--max-layers",
                    "3",
                    "--graph",
                ])
                .arg(&f.attrs_json),
        );
        let plan: Vec<Vec<String>> = serde_json::from_str(&out).unwrap();
        assert!(plan.len() <= 2, "{strategy}: {plan:?}");
        let mut all: Vec<String> = plan.concat();
        all.sort();
        let mut want = vec![f.app.clone(), f.lib.clone(), f.link.clone(), f.note.clone()];
        want.sort();
        assert_eq!(all, want, "{strategy}");
    }
    let err = fails(
        nixoci()
            .args(["plan", "--max-layers", "1", "--graph"])
            .arg(&f.attrs_json),
    );
    assert!(err.contains("leaves no layer for store paths"), "{err}");
}

/// The graph of nixpkgs' flatten_references_graph `pipe_test.py`.
fn pipe_test_graph() -> Value {
    json!([
        node("Root1", &["A"]),
        node("A", &["B", "C"]),
        node("B", &["D", "E", "G"]),
        node("C", &[]),
        node("D", &[]),
        node("E", &["F"]),
        node("F", &[]),
        node("G", &[]),
        node("Root2", &["B"]),
        node("Root3", &["C"]),
    ])
}

#[test]
fn layering_pipelines_give_nixpkgs_documented_partitions() {
    // pipe_test.py test_1: B split off, its dependencies by popularity, the
    // rest (less Root3) merged with G by limit_layers.
    let pipeline = json!([
        ["split_paths", [sp("B")]],
        [
            "over",
            "main",
            [
                "pipe",
                [
                    ["subcomponent_in", [sp("B")]],
                    ["over", "rest", ["popularity_contest"]]
                ]
            ]
        ],
        ["flatten"],
        ["map", ["remove_paths", sp("Root3")]],
        ["limit_layers", 5]
    ]);
    let layers = names(&plan(
        pipe_test_graph(),
        &["--pipeline", &pipeline.to_string()],
    ));
    assert_eq!(layers[..4], singles(&["B", "F", "D", "E"])[..]);
    let mut last = layers[4].clone();
    last.sort();
    assert_eq!(last, ["A", "C", "G", "Root1", "Root2"]);
    assert_eq!(layers.len(), 5);

    // test_2: popularity, then the least popular merged; reversed first.
    let graph = json!([
        node("Root1", &["A"]),
        node("A", &["B"]),
        node("B", &[]),
        node("Root2", &[])
    ]);
    let dir = tempdir();
    let file = dir.path().join("pipeline.json");
    fs::write(&file, r#"[["popularity_contest"], ["limit_layers", 3]]"#).unwrap();
    assert_eq!(
        names(&plan(
            graph.clone(),
            &["--pipeline", file.to_str().unwrap()]
        )),
        vec![
            vec!["B".to_string()],
            vec!["A".into()],
            vec!["Root1".into(), "Root2".into()]
        ]
    );
    assert_eq!(
        names(&plan(
            graph.clone(),
            &[
                "--pipeline",
                r#"[["popularity_contest"],["reverse"],["limit_layers",3]]"#
            ]
        )),
        vec![
            vec!["Root2".to_string()],
            vec!["Root1".into()],
            vec!["A".into(), "B".into()]
        ]
    );

    // A missing key and an unknown op are errors that name the step.
    let dir = tempdir();
    let file = dir.path().join("graph.json");
    fs::write(&file, graph.to_string()).unwrap();
    for (pipeline, wanted) in [
        (
            r#"[["split_paths",["/nix/store/x"]],["over","main",["flatten"]]]"#,
            "no `main`",
        ),
        (r#"[["popularity"]]"#, "unknown op `popularity`"),
        ("[[", "not valid JSON"),
    ] {
        let err = fails(
            nixoci()
                .arg("plan")
                .arg("--graph")
                .arg(&file)
                .args(["--pipeline", pipeline]),
        );
        assert!(err.contains(wanted), "{pipeline}: {err}");
    }
}
