//! How to build `filter-ebpf` for `bpfel-unknown-none`: shared by `build.rs` (the shipped
//! object) and `xtask bench` (the knock-out builds of the stage-cost table), so both build
//! with the same toolchain and flags. std only: both include it with `#[path]`.
//!
//! The BPF toolchain is detected, never assumed:
//! 1. rustup `nightly` with the `rust-src` component — the standard aya path
//!    (`-Z build-std=core`).
//! 2. Debian's `rustc-web` (`/usr/bin/rustc`) with the prebuilt `core` for bpfel from
//!    `libstd-rust-web-dev-bpf` — no build-std needed. aya-ebpf uses
//!    `#![feature(asm_experimental_arch)]`, so the stable compiler gets
//!    `RUSTC_BOOTSTRAP=aya_ebpf`, which unlocks features for that one crate only.
//!
//! Both need `bpf-linker` on PATH.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

pub const INSTALL_HINT: &str =
    "run `cargo xtask setup` (installs rustc-web, libstd-rust-web-dev-bpf, \
llvm-22-dev and bpf-linker 0.13.0 on Debian), or install a nightly toolchain with rust-src and \
`cargo install bpf-linker`";

pub enum BpfToolchain {
    Nightly,
    DebianRustcWeb,
}

/// The usable toolchain, if any (`bpf-linker` included).
pub fn detect() -> Option<BpfToolchain> {
    which("bpf-linker")?;
    if nightly_has_rust_src() {
        return Some(BpfToolchain::Nightly);
    }
    let debian_core = Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib");
    if Path::new("/usr/bin/rustc").exists() && debian_core.is_dir() {
        return Some(BpfToolchain::DebianRustcWeb);
    }
    None
}

/// The shipped XDP object's binary in `filter-ebpf`.
pub const NODEGATE_BIN: &str = "nodegate";

/// `cargo build` of the object `bin` in `ebpf_dir` into `target_dir`, with none of the
/// calling cargo's settings leaking in. The object lands at [`built_object`].
pub fn build_command(
    toolchain: &BpfToolchain,
    ebpf_dir: &Path,
    target_dir: &Path,
    bin: &str,
) -> Command {
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
    cmd.current_dir(ebpf_dir)
        .args([
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "--bin",
            bin,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    // The outer cargo's settings are for the host build; none of them may leak into the BPF
    // build (clippy's or sccache's wrapper, host rustflags, a rustup toolchain override,
    // jobserver).
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
        // Only `xtask bench` sets it, on its own builds.
        "NODEGATE_KNOCKOUT",
    ] {
        cmd.env_remove(var);
    }
    if matches!(toolchain, BpfToolchain::Nightly) {
        cmd.env_remove("RUSTC");
    }
    // One object per source wherever the checkout lives (the script says why): CI's fresh
    // clone then verifies the very program a developer measured.
    cmd.env("RUSTC_WRAPPER", ebpf_dir.join("rustc-stable-ids"));
    cmd
}

/// Where [`build_command`] leaves the object `bin`.
pub fn built_object(target_dir: &Path, bin: &str) -> PathBuf {
    target_dir.join("bpfel-unknown-none/release").join(bin)
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

pub fn which(binary: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|candidate| candidate.is_file())
    })
}
