//! The crate's layering, checked from its source: the `use crate::` edges between top-level
//! modules form no cycle, and the core (model, kernels, engine, formats, data, methods)
//! imports nothing from `present`, `tui` or the binary and names no terminal or
//! command-line crate. Comments are skipped (a doc link is not a dependency); the root's
//! re-exports (`crate::Model`) count as the module they come from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that compute: they must not know how results are shown or asked for.
const CORE: &[&str] = &["model", "kernels", "engine", "formats", "data", "methods"];
/// What the core must not import.
const OUTER: &[&str] = &["present", "tui"];
/// Crates the core must not name.
const UI_CRATES: &[&str] = &["ratatui", "crossterm", "clap"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without its comments (line comments only: the crate has no block
/// comments, and a `/*` would make this test fail loudly rather than pass wrongly).
fn code(text: &str) -> String {
    assert!(!text.contains("/*"), "block comments are not understood here");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Paths used after `crate::`: `crate::a::b` and each name in `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            found.extend(group[..end].split(',').map(|p| p.trim().to_string()));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            found.push(rest[..end].to_string());
        }
    }
    found
}

/// The top-level module each root re-export comes from (`Model` → `model`).
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code(lib).replace('\n', " ");
    for statement in code.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else { continue };
        let (module, names) = rest.split_once("::").unwrap();
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            map.insert(name.trim().to_string(), module.trim().to_string());
        }
    }
    map
}

/// Edges between top-level modules of the library.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexports = root_reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top =
            relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if ["lib", "main", "cli"].contains(&top.as_str()) {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        for path in crate_paths(&text) {
            let first = path.split("::").next().unwrap_or("").to_string();
            let target = reexports.get(&first).cloned().unwrap_or(first);
            if !target.is_empty() && target != "self" && target != top {
                edges.entry(top.clone()).or_default().insert(target);
            }
        }
        for krate in UI_CRATES {
            if CORE.contains(&top.as_str()) {
                assert!(
                    !text.contains(&format!("{krate}::")),
                    "{} (core) names {krate}",
                    relative.display()
                );
            }
        }
    }
    edges
}

/// A cycle through `from`, if there is one, as the modules on it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let edges = edges();
    assert!(edges.contains_key("tui"), "the scan found the modules: {edges:?}");
    if let Some(cycle) = cycle(&edges) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_core_does_not_import_presentation() {
    for (module, targets) in edges() {
        if CORE.contains(&module.as_str()) {
            for outer in OUTER {
                assert!(!targets.contains(*outer), "{module} (core) imports {outer}");
            }
        }
    }
}

#[test]
fn the_checker_sees_cycles_and_groups() {
    let paths = crate_paths("use crate::{a::B, c};\nfn f() { crate::d::e(); }");
    assert_eq!(paths, ["a::B", "c", "d"]);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&edges).map(|c| c.len()), Some(4));
    assert_eq!(code("let x = 1; // crate::tui"), "let x = 1; ");
}
