//! The agent's modules follow its data flow: each stage imports only the stages below it
//! (README, "Map of the agent's code"). `cargo test -p seer-agent --test layout` lists every
//! import that runs up. Test code (`#[cfg(test)]` modules, `*_tests.rs`, test utilities) may
//! reach up to build what it checks; it is not counted.
use std::{collections::BTreeSet, path::Path};

/// The stages, bottom first; a module may import those at its level or below. `util` and
/// `http` are helpers, `config` plain data (it validates URLs with `http`), `output` the live
/// view the tick loop prints (and the central's JSON lines), `cluster` the NATS publisher and
/// the central predictor.
const LEVELS: &[(&str, u32)] = &[
    ("util", 0),
    ("http", 0),
    ("http_client", 0),
    ("sys", 1),
    ("config", 1),
    ("channels", 2),
    ("discovery", 3),
    ("sampler", 4),
    ("store", 5),
    ("watch", 6),
    ("infer", 7),
    ("diagnose", 8),
    ("respond", 9),
    ("actuate", 10),
    ("alert", 11),
    ("serve", 12),
    ("output", 13),
    ("cluster", 14),
    ("tick_loop", 15),
    ("cli", 16),
    ("main", 17),
];

fn level(module: &str) -> Option<u32> {
    LEVELS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Top-level modules a source file names through `crate::`: paths (`crate::a::b`) and the
/// first segment of each item of `use crate::{a::{..}, b, ..};`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.insert(ident(item.trim()));
                        item.clear();
                    }
                    c if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            refs.insert(ident(item.trim()));
        } else {
            refs.insert(ident(rest));
        }
    }
    refs.remove("");
    refs
}

/// Imports of `module`'s non-test code (`text`) that run up: (imported module, its level).
fn upward(module: &str, text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let Some(mine) = level(module) else {
        return vec![format!(
            "{module} is not in LEVELS: place it in the data flow"
        )];
    };
    crate_refs(code)
        .into_iter()
        .filter(|r| level(r).is_some_and(|l| l > mine && r != module))
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_import_runs_up_the_data_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with("_tests.rs") || name == "testutil.rs" || name == "resctrl_emu.rs" {
            continue;
        }
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("")
            .trim_end_matches(".rs");
        let text = std::fs::read_to_string(f).expect("read source");
        for up in upward(top, &text) {
            bad.push(format!("{}: imports {up}", rel.display()));
        }
        checked += 1;
    }
    assert!(
        checked > 50,
        "only {checked} source files found under {src:?}"
    );
    assert!(
        bad.is_empty(),
        "imports that run up the data flow:\n  {}",
        bad.join("\n  ")
    );
}

/// The checker sees what it must: paths, grouped uses, nested groups, and ignores tests.
#[test]
fn the_checker_finds_upward_imports() {
    assert_eq!(
        upward("sys", "use crate::{util, cli::RunArgs};"),
        vec!["cli".to_string()]
    );
    assert_eq!(
        upward(
            "discovery",
            "use crate::{config::{Config, Rule}, respond::policy::Mode};"
        ),
        vec!["respond".to_string()]
    );
    assert_eq!(
        upward("watch", "fn f() { crate::alert::send(); }"),
        vec!["alert".to_string()]
    );
    assert!(upward("respond", "use crate::{diagnose, watch::QosWatch};").is_empty());
    assert!(upward("sys", "#[cfg(test)]\nmod tests { use crate::cli; }").is_empty());
    assert_eq!(
        upward("newstage", "").len(),
        1,
        "an unplaced module is reported"
    );
}
