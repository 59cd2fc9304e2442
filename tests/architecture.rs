//! The layering the architecture note describes, checked on the sources: within each crate the
//! modules import each other without a cycle (the server's `config` a leaf), and across the
//! workspace dependencies point one way (the core knows no store or front door, stores know no
//! front door).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name -> the sibling modules its code (not its comments) names as `crate::module`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            sources.insert(name.to_owned(), std::fs::read_to_string(&path).unwrap());
        } else if path.join("mod.rs").is_file() {
            // A module in a directory: its files together.
            let mut text = String::new();
            // Its own `.rs` files; a data directory beside them (generated code) names no
            // sibling module.
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "rs") {
                    text.push_str(&std::fs::read_to_string(file).unwrap());
                    text.push('\n');
                }
            }
            sources.insert(name.to_owned(), text);
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, text) in &sources {
        let mut uses = BTreeSet::new();
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(list) => list
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or(""))
                        .collect(),
                    None => vec![
                        rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or(""),
                    ],
                };
                for n in names {
                    if modules.contains(n) && n != name {
                        uses.insert(n.to_owned());
                    }
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

/// A cycle in `graph`, if any, as the path that closes it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// The workspace's crates.
fn crates() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates")
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut checked = 0;
    for entry in std::fs::read_dir(crates()).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("module cycle in {}: {}", src.display(), cycle.join(" -> "));
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} crates");
    let server = module_graph(&crates().join("warden-server/src"));
    assert!(server.len() > 5, "{server:?}");
    assert_eq!(server["config"], BTreeSet::new(), "config must be a leaf");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}

/// The workspace crates each crate depends on (normal dependencies, not dev-dependencies).
fn crate_dependencies(crate_dir: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut deps = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && let Some(name) = line.split(['=', '.', ' ']).next()
            && (name == "warden" || name.starts_with("warden-"))
        {
            deps.insert(name.to_owned());
        }
    }
    deps
}

#[test]
fn crate_dependencies_point_one_way() {
    let crates = crates();
    let front_doors = [
        "warden-server",
        "warden-mcp",
        "warden-llm",
        "warden-envoy",
        "warden-cli",
        "warden-python",
    ];
    // The pure core and its leaves: no store, no front door.
    for core in [
        "warden-core",
        "warden-content",
        "warden-rego",
        "warden-proof",
    ] {
        let deps = crate_dependencies(&crates.join(core));
        for other in ["warden-store", "warden-audit"].iter().chain(&front_doors) {
            assert!(!deps.contains(*other), "{core} depends on {other}");
        }
    }
    // Stores beside the core: never on a front door.
    for store in ["warden-store", "warden-audit"] {
        let deps = crate_dependencies(&crates.join(store));
        for door in front_doors {
            assert!(!deps.contains(door), "{store} depends on {door}");
        }
    }
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A front door decides only through the pipeline: the evaluator is private to the core (its
/// visibility is `pub(crate)`, so calling it does not compile), and a session store's
/// read-decide-update, load and versioned commit take a `StoreAccess` that only the core can
/// make (the core's doc tests show that making one elsewhere does not compile). What keeps it
/// so: the test-only constructor's feature is enabled by dev-dependencies alone, and no front
/// door names the store calls (a second line, should someone widen the access).
#[test]
fn front_doors_decide_only_through_the_pipeline() {
    let forbidden = [
        ".transact(",
        "SessionWrite",
        "optimistic_transact",
        ".commit(&[",
        "StoreAccess",
        "store-tests",
    ];
    let mut files = Vec::new();
    for door in [
        "warden-server",
        "warden-mcp",
        "warden-llm",
        "warden-envoy",
        "warden-cli",
        "warden-python",
    ] {
        rust_files(&crates().join(door).join("src"), &mut files);
    }
    assert!(files.len() > 20, "{} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for pattern in forbidden {
                assert!(
                    !code.contains(pattern),
                    "{}:{}: a front door calls `{pattern}`; decide through the pipeline",
                    file.display(),
                    n + 1
                );
            }
        }
    }
    let eval = std::fs::read_to_string(crates().join("warden-core/src/eval.rs")).unwrap();
    assert!(
        eval.contains("pub(crate) fn evaluate("),
        "the evaluator is public again"
    );
    let state = std::fs::read_to_string(crates().join("warden-core/src/state/mod.rs")).unwrap();
    assert!(
        state.contains("pub struct StoreAccess(());")
            && state.contains("pub(crate) const fn new()"),
        "StoreAccess can be made outside the core again"
    );
    // `store-tests` appears in no manifest but under the stores' dev-dependencies.
    let mut manifests = vec![crates().join("../Cargo.toml")];
    for entry in std::fs::read_dir(crates()).unwrap() {
        manifests.push(entry.unwrap().path().join("Cargo.toml"));
    }
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).unwrap_or_default();
        let mut section = "";
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.trim();
            } else if line.contains("\"store-tests\"") {
                assert!(
                    section == "[dev-dependencies]"
                        && (manifest.ends_with("warden-core/Cargo.toml")
                            || manifest.ends_with("warden-store/Cargo.toml")),
                    "{}: `store-tests` enabled outside the stores' dev-dependencies",
                    manifest.display()
                );
            }
        }
    }
}
