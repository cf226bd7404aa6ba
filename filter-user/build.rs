//! Builds the XDP object (`filter-ebpf`) for `bpfel-unknown-none` and leaves it in OUT_DIR
//! for `include_bytes_aligned!`.
//!
//! The BPF toolchain is detected, never assumed:
//! 1. `NODEGATE_EBPF_OBJECT=/path/to/obj` — use a prebuilt object as is.
//! 2. rustup `nightly` with the `rust-src` component — the standard aya path
//!    (`-Z build-std=core`).
//! 3. Debian's `rustc-web` (`/usr/bin/rustc`) with the prebuilt `core` for bpfel from
//!    `libstd-rust-web-dev-bpf` — no build-std needed. aya-ebpf uses
//!    `#![feature(asm_experimental_arch)]`, so the stable compiler gets
//!    `RUSTC_BOOTSTRAP=aya_ebpf`, which unlocks features for that one crate only.
//!
//! Both need `bpf-linker` on PATH. When nothing usable is found the build still succeeds with
//! an empty stub object (so `cargo check` and clippy work anywhere) and prints a warning
//! naming what to install; loading that stub fails at run time with the same advice.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const INSTALL_HINT: &str = "run `cargo xtask setup` (installs rustc-web, libstd-rust-web-dev-bpf, \
llvm-22-dev and bpf-linker 0.13.0 on Debian), or install a nightly toolchain with rust-src and \
`cargo install bpf-linker`";

enum BpfToolchain {
    Nightly,
    DebianRustcWeb,
}

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
        fs::copy(&prebuilt, &object)?;
        return Ok(());
    }

    let toolchain = detect_toolchain();
    let linker = which("bpf-linker");
    let (Some(toolchain), Some(_)) = (toolchain, linker) else {
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
    let mut cmd = match toolchain {
        BpfToolchain::Nightly => {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core"]);
            c
        }
        BpfToolchain::DebianRustcWeb => {
            let mut c = Command::new("cargo");
            c.arg("build")
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "aya_ebpf");
            c
        }
    };
    cmd.current_dir(&ebpf_dir)
        .args([
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "--bin",
            "nodegate",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's settings are for the host build; none of them may leak into the BPF
    // build (clippy's wrapper, host rustflags, a rustup toolchain override, jobserver).
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    if matches!(toolchain, BpfToolchain::Nightly) {
        cmd.env_remove("RUSTC");
    }
    let status = cmd.status()?;
    if !status.success() {
        anyhow::bail!("building filter-ebpf for bpfel-unknown-none failed ({status}); if the toolchain is incomplete: {INSTALL_HINT}");
    }
    let built = target_dir.join("bpfel-unknown-none/release/nodegate");
    fs::copy(&built, &object)?;
    Ok(())
}

fn detect_toolchain() -> Option<BpfToolchain> {
    if nightly_has_rust_src() {
        return Some(BpfToolchain::Nightly);
    }
    let debian_core = Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib");
    if Path::new("/usr/bin/rustc").exists() && debian_core.is_dir() {
        return Some(BpfToolchain::DebianRustcWeb);
    }
    None
}

fn nightly_has_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
}

fn which(binary: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|candidate| candidate.is_file())
    })
}
