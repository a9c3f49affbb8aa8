//! Tidy checks on the source tree itself (after rust-analyzer's tidy.rs):
//! every source file says what it owns in a `//!` comment, and no absolute
//! path of a developer's machine is committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}

#[test]
fn no_machine_specific_absolute_paths_are_committed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    for doc in ["README.md", "ARCHITECTURE.md", ".ci/run"] {
        files.push(root.join(doc));
    }
    let forbidden = ["/work/", "/root/", "/home/"];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in forbidden {
            // This file names the needles themselves.
            if file.ends_with("tidy.rs") {
                continue;
            }
            assert!(
                !text.contains(needle),
                "{} contains {needle}",
                file.display()
            );
        }
    }
}

/// The store must not know HTTP or the monitor: `store/` is below both
/// (the API and the alerts thread call the writer, never the reverse), so
/// an import of either would be a circle.
#[test]
fn the_store_imports_neither_the_api_nor_the_monitor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/store"), &mut files);
    assert!(files.len() > 5, "found only {files:?}");
    let forbidden = ["crate::api", "crate::monitor", "tiny_http"];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for needle in forbidden {
            if text.contains(needle) {
                found.push(format!("{} mentions {needle}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
