//! Rules of the source the compiler cannot check. tokio's `select!` picks among ready
//! branches with its own random number, which the simulator cannot seed: every `select!`
//! in the engine and its seams is `biased;` (robustness #43: an unbiased one in the member
//! election made the cluster world differ between two runs of one seed).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_select_in_the_engine_and_its_seams_is_biased() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crates dir").to_path_buf();
    let mut files = Vec::new();
    for name in ["t4/src", "t4-env/src", "t4-object/src"] {
        rust_files(&crates.join(name), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut unbiased = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if !line.contains("select! {") || line.trim_start().starts_with("//") {
                continue;
            }
            // `biased;` is the first statement: after any comment lines.
            let first = lines[at + 1..].iter().map(|line| line.trim()).find(|line| !line.starts_with("//"));
            if !first.is_some_and(|first| first.starts_with("biased;")) {
                unbiased.push(format!("{}:{}", file.display(), at + 1));
            }
        }
    }
    assert!(unbiased.is_empty(), "select! without biased: {unbiased:?}");
}
