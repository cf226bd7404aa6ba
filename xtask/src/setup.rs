//! Idempotent machine set-up for building and running nodegate.
//!
//! On Debian-family systems: the BPF-capable Rust toolchain from Debian (rustc-web with a
//! prebuilt `core` for bpfel, plus LLVM 22 for bpf-linker), iproute2, then bpf-linker 0.13.0
//! built against that LLVM, then bpffs. Elsewhere it prints the steps (rustup nightly +
//! rust-src + bpf-linker is the standard aya route) instead of guessing a package manager.

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::cmd::{is_root, output, sh};

/// Debian packages the build and the tests need.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "iputils-ping",
    "bpftool",
    // The capture tests record real tcpdump captures (snap lengths, nanosecond stamps,
    // Linux cooked captures) and read them back.
    "tcpdump",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// What set-up found or did, for the summary line.
pub struct Report {
    lines: Vec<String>,
}

/// Run set-up; prints a summary and returns it.
pub fn run() -> anyhow::Result<Report> {
    let mut report = Report { lines: Vec::new() };
    if Path::new("/etc/debian_version").exists() && output("dpkg-query", &["--version"]).is_some() {
        install_debian_packages(PACKAGES, &mut report.lines)?;
    } else {
        print_manual_steps();
        report
            .lines
            .push("not a Debian-family system: printed the manual steps".into());
    }
    install_bpf_linker(&mut report.lines)?;
    mount_bpffs(&mut report.lines)?;
    eprintln!("setup: {}", report.lines.join("; "));
    Ok(report)
}

/// Install the Debian packages that are missing (apt-get update first, once).
pub fn install_debian_packages(packages: &[&str], lines: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        lines.push(format!(
            "{} Debian packages already installed",
            packages.len()
        ));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run as root: apt-get update && apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    sh(Command::new("apt-get").arg("update").arg("-qq"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // The kernel matrix's kernels boot under virtme-ng, which makes its own initramfs:
        // the two that Debian's hook builds on install went unused and took ~90 s of a
        // fresh machine's CI run (`/etc/kernel/postinst.d/initramfs-tools` honours this).
        .env("INITRD", "No"))?;
    lines.push(format!("installed {}", missing.join(" ")));
    Ok(())
}

fn install_bpf_linker(lines: &mut Vec<String>) -> anyhow::Result<()> {
    if output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        lines.push(format!("bpf-linker {BPF_LINKER_VERSION} present"));
        return Ok(());
    }
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
    ]);
    if Path::new("/usr/lib/llvm-22").is_dir() {
        // Debian has LLVM 22, bpf-linker's default feature wants LLVM 23.
        cmd.args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    }
    sh(&mut cmd)?;
    lines.push(format!("built bpf-linker {BPF_LINKER_VERSION}"));
    Ok(())
}

fn mount_bpffs(lines: &mut Vec<String>) -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        lines.push("bpffs mounted".into());
        return Ok(());
    }
    if !is_root() {
        lines.push("bpffs not mounted (needs root: mount -t bpf bpf /sys/fs/bpf)".into());
        return Ok(());
    }
    sh(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    lines.push("mounted bpffs at /sys/fs/bpf".into());
    Ok(())
}

fn print_manual_steps() {
    eprintln!(
        "This is not a Debian-family system; install by hand:\n\
         1. rustup toolchain install nightly --component rust-src\n\
         2. cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked   (needs a matching LLVM)\n\
         3. iproute2 (ip), and as root: mount -t bpf bpf /sys/fs/bpf"
    );
}
