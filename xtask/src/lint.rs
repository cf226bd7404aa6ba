//! Formatting and clippy, host workspace and BPF crate separately (they target different
//! architectures and toolchains).

use std::process::Command;

use crate::cmd::{sh, workspace_root};

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    sh(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    sh(Command::new("cargo")
        .current_dir(root.join("filter-ebpf"))
        .args(["fmt", "--", "--check"]))?;
    sh(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        "filter-user/privileged-tests",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The library as an embedder builds it: without the test and bench tools.
    sh(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--locked",
        "-p",
        "filter-user",
        "--lib",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The BPF pass needs a clippy that matches the BPF compiler: Debian's rust-web-clippy
    // for rustc-web (rustup's clippy has no bpfel `core`).
    crate::setup::install_debian_packages(&["rust-web-clippy"], &mut Vec::new())?;
    sh(Command::new("cargo")
        .current_dir(root.join("filter-ebpf"))
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_WORKSPACE_WRAPPER", "/usr/bin/clippy-driver")
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        )
        .args([
            "check",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(root.join("target/bpf-clippy")))?;
    Ok(())
}
