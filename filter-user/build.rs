//! Builds the XDP object (`filter-ebpf`) for `bpfel-unknown-none` and leaves it in OUT_DIR
//! for `include_bytes_aligned!`.
//!
//! The toolchain detection and the build command live in `bpf_toolchain.rs` (shared with
//! `xtask bench`), included with `#[path]`.
//!
//! When no usable toolchain is found the build still succeeds with
//! an empty stub object (so `cargo check` and clippy work anywhere) and prints a warning
//! naming what to install; loading that stub fails at run time with the same advice.

#[path = "bpf_toolchain.rs"]
mod bpf_toolchain;

use std::{env, fs, path::PathBuf};

use bpf_toolchain::INSTALL_HINT;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .expect("filter-user lives in the workspace")
        .to_path_buf();
    let ebpf_dir = workspace.join("filter-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("nodegate.bpf.o");

    for path in [
        "filter-ebpf/src",
        "filter-ebpf/Cargo.toml",
        "filter-ebpf/Cargo.lock",
        "filter-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=NODEGATE_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo::rustc-check-cfg=cfg(nodegate_ebpf_stub)");

    if let Ok(prebuilt) = env::var("NODEGATE_EBPF_OBJECT") {
        // The same path with a new object in it (a data-path change) is a new object.
        println!("cargo:rerun-if-changed={prebuilt}");
        fs::copy(&prebuilt, &object)?;
        return Ok(());
    }

    let Some(toolchain) = bpf_toolchain::detect() else {
        println!(
            "cargo:warning=nodegate: no BPF toolchain (bpf-linker + nightly/rust-src or Debian rustc-web); \
             building a stub without the XDP program. To fix: {INSTALL_HINT}"
        );
        println!("cargo:rustc-cfg=nodegate_ebpf_stub");
        // Rebuild for real as soon as a toolchain appears (e.g. after `cargo xtask setup`):
        // installing bpf-linker or rustc-web changes these directories.
        let cargo_home = env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env::var("HOME").unwrap_or_default()).join(".cargo"));
        for dir in [
            cargo_home.join("bin"),
            PathBuf::from("/usr/lib/rustlib"),
            PathBuf::from("/usr/bin/rustc"),
        ] {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
        fs::write(&object, [])?;
        return Ok(());
    };

    let target_dir = workspace.join("target").join("bpf");
    let mut cmd = bpf_toolchain::build_command(
        &toolchain,
        &ebpf_dir,
        &target_dir,
        bpf_toolchain::NODEGATE_BIN,
    );
    let status = cmd.status()?;
    if !status.success() {
        anyhow::bail!("building filter-ebpf for bpfel-unknown-none failed ({status}); if the toolchain is incomplete: {INSTALL_HINT}");
    }
    fs::copy(
        bpf_toolchain::built_object(&target_dir, bpf_toolchain::NODEGATE_BIN),
        &object,
    )?;
    Ok(())
}
