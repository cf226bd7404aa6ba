//! Writes the fuzz targets' seed corpora (`cargo xtask fuzz` runs it, uninstrumented):
//! `fuzz_seeds OUT_DIR EXAMPLES_DIR FIXTURES_DIR CAPTURE_DIR`.
//! config: every rule file of the examples and the test fixtures; capture: the smaller
//! captures of the corpus; model and kernel_vs_model: generated frames of every category
//! and the corpus frames (the kernel target's first byte picks the rule set).

use std::path::{Path, PathBuf};

fn files(dir: &Path, ext: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ext.contains(&e))
    });
    out.sort();
    out
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out, examples, fixtures, captures] = &args[..] else {
        eprintln!("usage: fuzz_seeds OUT_DIR EXAMPLES_DIR FIXTURES_DIR CAPTURE_DIR");
        std::process::exit(2);
    };
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for path in files(examples, &["yaml"])
        .into_iter()
        .chain(files(fixtures, &["yaml"]))
    {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        write("config", name, &std::fs::read(&path).unwrap());
    }
    let mut frames = filter_user::fuzzing::seed_frames(400);
    for path in files(captures, &["pcap", "pcapng"]) {
        let bytes = std::fs::read(&path).unwrap();
        if bytes.len() <= 4096 {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            write("capture", name, &bytes);
        }
        if let Ok(c) = filter_user::replay::parse_capture(&bytes) {
            frames.extend(c.frames.into_iter().take(4).map(|f| f.data));
        }
    }
    frames.sort();
    frames.dedup();
    for (i, frame) in frames.iter().enumerate() {
        write("model", format!("frame-{i:05}"), frame);
        let pick = (i % 5) as u8;
        write(
            "kernel_vs_model",
            format!("frame-{i:05}"),
            &[&[pick][..], frame].concat(),
        );
    }
    println!("seeds: {} frames", frames.len());
}
