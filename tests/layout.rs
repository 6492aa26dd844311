//! The layout as ARCHITECTURE.md draws it, held against the code: each top-level module of `src/`
//! imports only the modules listed for it below (so the flow `discovery → cluster →
//! routing::compile → snapshot → readers` has no import cycle), and a new module must be placed
//! here before it can land. Test modules (`#[cfg(test)]`, inside a file or a file of their own)
//! may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → what it may import. `None`: the control plane and wiring, which may import anything.
fn allowed() -> BTreeMap<&'static str, Option<Vec<&'static str>>> {
    let layers: [(&str, Option<&[&str]>); 32] = [
        ("cluster", Some(&[])),
        // The coarse clock.
        ("clock", Some(&[])),
        // The idle-priority thread for the work a swap leaves behind.
        ("background", Some(&[])),
        // A vector shared in chunks, for the table's and the snapshot's per-service vectors.
        ("chunked", Some(&[])),
        ("access", Some(&[])),
        // Outside text shown on one line (logs, the CLI).
        ("text", Some(&[])),
        // Large answers (a scrape, the whole table) written and sent in chunks.
        ("bulk_text", Some(&[])),
        ("stall", Some(&[])),
        ("metrics", Some(&[])),
        ("runtime_thread", Some(&[])),
        ("sd_notify", Some(&[])),
        ("upgrade", Some(&[])),
        ("cli", Some(&["text"])),
        ("workers", Some(&["runtime_thread"])),
        ("control_plane", Some(&["runtime_thread"])),
        ("discovery", Some(&["cluster", "metrics", "text"])),
        ("routing", Some(&["cluster", "chunked", "text"])),
        ("zone", Some(&["cluster", "routing", "chunked"])),
        (
            "backends",
            Some(&["routing", "metrics", "chunked", "clock"]),
        ),
        (
            "snapshot",
            Some(&["routing", "zone", "backends", "chunked", "background"]),
        ),
        (
            "health_check",
            Some(&["backends", "cluster", "metrics", "routing", "chunked"]),
        ),
        (
            "dns",
            Some(&["snapshot", "zone", "routing", "metrics", "cluster"]),
        ),
        (
            "proxy",
            Some(&[
                "backends", "metrics", "routing", "snapshot", "upgrade", "workers", "cluster",
                "access", "clock",
            ]),
        ),
        ("demo", Some(&["snapshot"])),
        // A reader of the cluster model in Marathon's shapes; only the top level wires it.
        (
            "relay",
            Some(&["cluster", "discovery", "metrics", "access", "stall"]),
        ),
        // The file becomes every subsystem's settings here, so it sees their settings types.
        (
            "config",
            Some(&[
                "cluster",
                "discovery",
                "metrics",
                "proxy",
                "routing",
                "zone",
                "dns",
                "backends",
            ]),
        ),
        ("reconciler", None),
        ("reload", None),
        ("rollout", None),
        ("admin", None),
        ("lib", None),
        // `run`'s steps, one subsystem's start each (lib.rs calls them).
        ("wiring", None),
    ];
    layers
        .into_iter()
        .map(|(m, a)| (m, a.map(<[&str]>::to_vec)))
        .collect()
}

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a file's code (comments and test modules left out) names by
/// `crate::x` or `use crate::{x, …}`.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            found.extend(group.split(',').map(|m| ident(m.trim())));
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// The modules a file declares out of line (`mod x;`), each with its `#[path]` if it has one:
/// those declared under `#[cfg(test)]`, or all of them when the file is test code itself.
fn declared_modules(text: &str, all: bool) -> Vec<(Option<String>, String)> {
    let mut found = Vec::new();
    let (mut test, mut path) = (false, None);
    for line in text.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            test = true;
        } else if let Some(p) = line.strip_prefix("#[path = \"") {
            path = p.strip_suffix("\"]").map(str::to_string);
        } else if line.starts_with("#[") {
            // Another attribute of the same item.
        } else {
            let item = line.strip_prefix("pub(crate) ").unwrap_or(line);
            let item = item.strip_prefix("pub ").unwrap_or(item);
            if let Some(name) = item.strip_prefix("mod ").and_then(|m| m.strip_suffix(';'))
                && (test || all)
            {
                found.push((path.take(), name.to_string()));
            }
            (test, path) = (false, None);
        }
    }
    found
}

/// The files of `src/` that are test modules declared out of line (`#[cfg(test)] mod x;`),
/// and the modules they declare in turn: test code, which may reach anywhere, as a test module
/// written inside its file does.
fn test_files(src: &Path) -> BTreeSet<std::path::PathBuf> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut tests = BTreeSet::new();
    loop {
        let before = tests.len();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let dir = file.parent().unwrap();
            let stem = file.file_stem().unwrap().to_string_lossy();
            for (path, name) in declared_modules(&text, tests.contains(file)) {
                let target = match path {
                    Some(path) => dir.join(path),
                    None if matches!(&*stem, "mod" | "lib" | "main") => dir.join(&name),
                    None => dir.join(&*stem).join(&name),
                };
                let file = target.with_extension("rs");
                tests.insert(if file.exists() {
                    file
                } else {
                    target.join("mod.rs")
                });
            }
        }
        if tests.len() == before {
            return tests;
        }
    }
}

#[test]
fn top_level_modules_import_only_down_the_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tests = test_files(&src);
    let allowed = allowed();
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "main" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        // A folder of assets (the dashboard's page) is not a module.
        if !files.is_empty() {
            modules.insert(name, files);
        }
    }
    let mut wrong = Vec::new();
    for (module, files) in &modules {
        let Some(rule) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "{module}: not placed in the layout (tests/layout.rs)"
            ));
            continue;
        };
        let Some(may) = rule else { continue };
        for file in files.iter().filter(|f| !tests.contains(*f)) {
            let text = std::fs::read_to_string(file).unwrap();
            for import in imports(&text) {
                if import != *module
                    && modules.contains_key(&import)
                    && !may.contains(&import.as_str())
                {
                    wrong.push(format!("{}: imports {import}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layout:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layout_itself_has_no_cycle() {
    let allowed = allowed();
    // Depth-first search for a back edge over the allowed imports.
    fn visit<'a>(
        m: &'a str,
        allowed: &'a BTreeMap<&'static str, Option<Vec<&'static str>>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(!path.contains(&m), "cycle: {path:?} -> {m}");
        path.push(m);
        if let Some(Some(next)) = allowed.get(m) {
            for n in next {
                visit(n, allowed, path, done);
            }
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in allowed.keys() {
        visit(m, &allowed, &mut Vec::new(), &mut done);
    }
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let text = "use crate::routing::Table;\nuse crate::{metrics, backends::State};\n\
                // crate::admin in a comment\nfn f() { crate::zone::build() }\n\
                #[cfg(test)]\nmod tests { use crate::lib; }";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["backends", "metrics", "routing", "zone"]);
}

#[test]
fn test_modules_declared_out_of_line_are_found() {
    let text = "mod kept;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\n#[path = \"x_tests.rs\"]\n\
                pub(crate) mod more;\n#[cfg(test)]\nfn helper() {}\nmod after;\n";
    assert_eq!(
        declared_modules(text, false),
        [
            (None, "tests".into()),
            (Some("x_tests.rs".into()), "more".into())
        ]
    );
    assert_eq!(
        declared_modules(text, true).len(),
        4,
        "a test file's modules are all tests"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tests = test_files(&src);
    assert!(tests.contains(&src.join("routing/digest_tests.rs")));
    assert!(tests.contains(&src.join("zone/legacy.rs")));
    assert!(!tests.contains(&src.join("zone/mesos.rs")));
}

/// ARCHITECTURE.md's module table says what `allowed` says: every module placed here has a row,
/// and its "may import" column names exactly its allowed modules.
#[test]
fn architecture_document_matches_the_layout() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let mut documented: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for row in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (modules, may) = (cells[1], cells[cells.len() - 2]);
        let may = match may {
            "everything" => None,
            "nothing" => Some(BTreeSet::new()),
            list => Some(
                list.split(" (")
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|m| m.trim().to_string())
                    .collect(),
            ),
        };
        for module in modules.split(',') {
            let name = module
                .trim()
                .trim_matches('`')
                .trim_end_matches('/')
                .trim_end_matches(".rs");
            documented.insert(name.to_string(), may.clone());
        }
    }
    let expected: BTreeMap<String, Option<BTreeSet<String>>> = allowed()
        .into_iter()
        .map(|(m, a)| {
            (
                m.to_string(),
                a.map(|v| v.into_iter().map(str::to_string).collect()),
            )
        })
        .collect();
    assert_eq!(
        documented, expected,
        "ARCHITECTURE.md's module table against tests/layout.rs"
    );
}
