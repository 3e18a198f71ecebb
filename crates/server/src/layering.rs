//! The module layering check (ARCHITECTURE.md): no import loop between the modules of the
//! server or of the control plane. Every `crate::…` path in a module's source is an edge to
//! the module it names; the test fails on a cycle and names it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`routes::notebook`, `routes` for `routes/mod.rs`) → source text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut segments: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segments.last().is_some_and(|s| s == "mod") {
                segments.pop();
            }
            let name = segments.join("::");
            let name = if name == "lib" || name == "main" {
                String::new()
            } else {
                name
            };
            let text = std::fs::read_to_string(&path).expect("readable source");
            found.insert(name, text);
        }
    }
    found
}

/// Every `crate::a::b…` path in `text` (comments skipped), braces expanded one level deep.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    paths.push(segments(item.trim()));
                }
            } else {
                paths.push(segments(rest));
            }
        }
    }
    paths
}

fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in text.split("::") {
        let ident: String = part
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        let whole = ident.len() == part.len();
        out.push(ident);
        if !whole {
            break;
        }
    }
    out
}

/// The module → module edges of a crate: each path goes to the longest module it names.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in &modules {
        // The crate root only declares and re-exports.
        if name.is_empty() {
            continue;
        }
        let targets = graph.entry(name.clone()).or_default();
        for path in crate_paths(text) {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target
                && target != *name
                && !name.starts_with(&format!("{target}::"))
            {
                targets.insert(target);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_server_modules_import_each_other_without_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&src);
    assert!(graph.contains_key("routes::notebook"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import loop: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_control_plane_modules_import_each_other_without_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/src");
    let graph = edges(&src);
    assert!(graph.contains_key("orchestrator"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import loop: {}", cycle.join(" -> "));
    }
}

#[test]
fn a_loop_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(node, next)| {
        (
            node.to_owned(),
            next.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    assert_eq!(
        crate_paths("use crate::{error::ApiError, state};\nlet x = crate::routes::router(s);"),
        vec![
            vec!["error".to_owned(), "ApiError".to_owned()],
            vec!["state".to_owned()],
            vec!["routes".to_owned(), "router".to_owned()],
        ]
    );
}

#[test]
fn the_control_plane_depends_on_no_http_crate() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/Cargo.toml"),
    )
    .expect("readable manifest");
    let manifest: toml::Table = manifest.parse().expect("a TOML manifest");
    for section in ["dependencies", "dev-dependencies"] {
        for name in manifest
            .get(section)
            .and_then(|d| d.as_table())
            .into_iter()
            .flat_map(|d| d.keys())
        {
            assert!(
                !["axum", "tower", "tower-http", "hyper", "atelier-gateway"]
                    .contains(&name.as_str())
                    && !name.starts_with("hyper-"),
                "atelier-control depends on {name}"
            );
        }
    }
}
