//! Every input in `fuzz/regressions/TARGET` (what a fuzzer once broke something with, kept
//! with its fix) through the same entry point the fuzz target runs (`filter_user::fuzzing`),
//! plus the adversarial inputs that were found before the fuzzers ran. The kernel target's
//! inputs need root and run with the privileged tests.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = inputs(target);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        eprintln!("{target}: {}", path.display());
        run(&bytes);
    }
    files.len()
}

#[test]
fn config_regressions() {
    let n = replay("config", filter_user::fuzzing::config);
    assert!(n >= 1, "the regression directory holds its inputs");
}

#[test]
fn capture_regressions() {
    let n = replay("capture", filter_user::fuzzing::capture);
    assert!(n >= 1, "the regression directory holds its inputs");
}

#[test]
fn model_regressions() {
    let n = replay("model", filter_user::fuzzing::model);
    assert!(n >= 1, "the regression directory holds its inputs");
}

#[cfg(feature = "privileged-tests")]
#[test]
fn kernel_vs_model_regressions() {
    let n = replay("kernel_vs_model", filter_user::fuzzing::kernel_vs_model);
    assert!(n >= 1, "the regression directory holds its inputs");
}
