//! Golden tests of the simplification pipeline.
//!
//! Each `tests/filetests/*.mj` file is graph text (as `print` writes it, comments allowed)
//! followed by `; check:` lines that hold the printed graph after `passes::simplify`. The test
//! parses each file, simplifies it with verification on, and compares the printed result line by
//! line. With `METAJIT_BLESS=1` it rewrites the `; check:` lines instead (review the diff).

use std::fs;
use std::path::{Path, PathBuf};

use metajit_metaops::parse::parse;
use metajit_metaops::passes::{PassCx, simplify};
use metajit_metaops::print::print;

const CHECK: &str = "; check:";

#[test]
fn filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let bless = std::env::var("METAJIT_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mj"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .mj files in {}", dir.display());

    let mut failures = Vec::new();
    for path in &files {
        let name = path.display();
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = match parse(&text) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let cx = PassCx {
            verify: true,
            trace: None,
        };
        let got = print(&simplify(&g, &cx));
        if bless {
            fs::write(path, blessed(&text, &got)).unwrap_or_else(|e| panic!("{name}: {e}"));
            continue;
        }
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(CHECK))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        if expected.is_empty() {
            failures.push(format!(
                "{name}: no `{CHECK}` lines (run with METAJIT_BLESS=1)"
            ));
        } else if got.lines().collect::<Vec<_>>() != expected {
            failures.push(format!(
                "{name}: simplify gave\n{got}expected\n{}\n",
                expected.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} file test(s) failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// `text` with its `; check:` lines replaced by `got`.
fn blessed(text: &str, got: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with(CHECK))
        .map(|l| format!("{l}\n"))
        .collect();
    while out.ends_with("\n\n") {
        out.pop();
    }
    out.push('\n');
    for l in got.lines() {
        out.push_str(&format!("{CHECK} {l}\n"));
    }
    out
}
