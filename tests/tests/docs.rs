//! Documentation that runs: every `seer-agent`, `seer-testbed` and `cargo xtask` command the
//! READMEs show (in code blocks and inline code) is parsed by the real binary as written (the
//! command with `--help` after it: clap refuses an unknown flag or subcommand before it gets to
//! the help), and the quick ones run in full. A README cannot drift from the command line.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use seer_tests::target_bin;

/// The documents whose commands must run.
const DOCS: &[&str] = &[
    "README.md",
    "seer-testbed/README.md",
    "eval/diagnosis/README.md",
    "fuzz/README.md",
    "models/README.md",
];

/// Commands run in full (quick, harmless, no root needed beyond what the test has): their
/// exit status must be 0.
const RUN_IN_FULL: &[&str] = &["seer-testbed check", "seer-agent --help"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Code blocks' lines (continuations joined) and inline code spans.
fn snippets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut cont = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let l = line.trim();
            if let Some(head) = l.strip_suffix('\\') {
                cont.push_str(head.trim_end());
                cont.push(' ');
                continue;
            }
            cont.push_str(l);
            out.push(std::mem::take(&mut cont));
        } else {
            // `...` spans on one line.
            let mut parts = line.split('`');
            parts.next();
            while let (Some(code), Some(_)) = (parts.next(), parts.next()) {
                out.push(code.to_string());
            }
        }
    }
    out
}

/// A command as (binary, arguments), or None if the snippet is not one of ours or shows
/// alternatives / elisions (`a|b`, `[--flag]`, `...`) rather than a command.
fn command(snippet: &str) -> Option<(PathBuf, Vec<String>, String)> {
    // A trailing shell comment, a prompt.
    let s = match snippet.find(" #") {
        Some(i) => &snippet[..i],
        None => snippet,
    };
    let s = s
        .trim()
        .trim_start_matches("$ ")
        .trim_start_matches("sudo ");
    if ["|", "[", "<", "...", "…", ">", "&&", ";", "*"]
        .iter()
        .any(|x| s.contains(x))
    {
        return None;
    }
    let words: Vec<&str> = s.split_whitespace().collect();
    let (bin, rest): (PathBuf, &[&str]) = match words.as_slice() {
        ["cargo", "xtask", "testbed", rest @ ..] => (target_bin("seer-testbed"), rest),
        ["cargo", "xtask", rest @ ..] => (target_bin("xtask"), rest),
        ["seer-agent", rest @ ..] => (target_bin("seer-agent"), rest),
        ["seer-testbed", rest @ ..] => (target_bin("seer-testbed"), rest),
        _ => return None,
    };
    // Arguments after `--` go to another program (the training script, seer-agent run).
    let rest: Vec<&str> = rest.iter().copied().take_while(|w| *w != "--").collect();
    // Placeholders: a number where a count goes, a word elsewhere.
    let args: Vec<String> = rest
        .iter()
        .map(|w| {
            let placeholder = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c == ':');
            match *w {
                "N" | "SECS" | "MINUTES" | "K" if placeholder => "1".to_string(),
                "SERVICE:P99_MS" => "nginx:50".to_string(),
                _ if placeholder => "x".to_string(),
                w => w.to_string(),
            }
        })
        .collect();
    let name = bin
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let shown = format!("{name} {}", args.join(" ")).trim().to_string();
    Some((bin, args, shown))
}

#[test]
fn every_documented_command_parses_and_the_quick_ones_run() {
    let mut checked = 0;
    let mut ran = 0;
    let mut bad = Vec::new();
    for doc in DOCS {
        let path = root().join(doc);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for snippet in snippets(&text) {
            let Some((bin, args, shown)) = command(&snippet) else {
                continue;
            };
            let full = RUN_IN_FULL.iter().any(|p| shown.starts_with(p));
            let mut cmd = Command::new(&bin);
            cmd.args(&args).current_dir(root());
            if !full {
                cmd.arg("--help");
            }
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
            checked += 1;
            ran += usize::from(full);
            if !out.status.success() {
                bad.push(format!(
                    "{doc}: `{snippet}` -> {} ({}): {}",
                    if full { "run" } else { "parse" },
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" / ")
                ));
            }
        }
    }
    println!("{checked} documented commands checked, {ran} run in full");
    assert!(checked >= 15, "only {checked} commands found in {DOCS:?}");
    assert!(ran >= 1, "no quick command was run in full");
    assert!(
        bad.is_empty(),
        "documented commands that do not run as written:\n  {}",
        bad.join("\n  ")
    );
}

/// The extraction sees commands in blocks (with continuations) and inline, and skips
/// alternatives and elisions.
#[test]
fn snippets_and_commands_are_read_as_a_reader_would() {
    let text = "Run `seer-agent query top outstanding` or `seer-agent query services|service NAME`.\n\
                ```sh\ncargo xtask testbed run --scenario a.toml \\\n  --out /tmp/x   # comment\n```\n";
    let s = snippets(text);
    assert!(s.contains(&"seer-agent query top outstanding".to_string()));
    assert!(s.contains(
        &"cargo xtask testbed run --scenario a.toml --out /tmp/x   # comment".to_string()
    ));
    let cmds: Vec<String> = s.iter().filter_map(|x| command(x)).map(|c| c.2).collect();
    assert_eq!(
        cmds,
        [
            "seer-agent query top outstanding",
            "seer-testbed run --scenario a.toml --out /tmp/x"
        ]
    );
    assert_eq!(
        command("seer-agent run --ticks N --qos SERVICE:P99_MS")
            .unwrap()
            .1,
        ["run", "--ticks", "1", "--qos", "nginx:50"]
    );
}
