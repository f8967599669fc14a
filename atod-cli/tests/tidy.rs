//! Layering checks over atod-cli's sources (rust-analyzer's tidy tests are the model): the command line is the
//! leaves, so no module outside `commands/` (and `main.rs`) imports from it or knows clap, and the library can be
//! used without them.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_commands_know_the_command_line() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "found the sources: {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        if relative.starts_with("commands") || relative == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source");
        for (n, line) in text.lines().enumerate() {
            if line.contains("commands::") || line.contains("clap") {
                offences.push(format!("{}:{}: {}", relative.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(offences.is_empty(), "outside commands/, these lines name the command line:\n{}", offences.join("\n"));
}
