//! `cargo xtask image`: the container image, built here without a registry or network.
//!
//! The root filesystem holds the release `nodegate`, iproute2's `ip` and `tc` (nodegate asks
//! them about interfaces' XDP and TC programs) and exactly the shared libraries these three
//! load (their `ldd` closure), nothing else: no shell, no package manager. `buildah` (Debian's)
//! commits it from scratch as one layer, labelled with version and commit, into an OCI
//! archive under `target/image/`; nothing is left in buildah's local storage.
//! `deploy/Containerfile` builds the same root filesystem with `--rootfs`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::cmd::{output, workspace_root};

/// Where the binary goes in the image (the DaemonSet runs the image's entrypoint).
pub const BINARY: &str = "usr/bin/nodegate";
/// Host programs the image carries besides nodegate, at the same paths.
const HELPERS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/tc"];
/// Mount points a runtime (or the image test) mounts over; empty in the image.
const MOUNT_POINTS: &[&str] = &["etc/nodegate", "run/nodegate", "sys", "proc", "dev", "tmp"];

/// The OCI archive `cargo xtask image` writes.
pub fn archive_path() -> PathBuf {
    workspace_root().join("target/image/nodegate.oci.tar")
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Build the release binary and the image; print its size and layers.
pub fn run(rootfs_only: Option<PathBuf>) -> anyhow::Result<()> {
    let root = workspace_root();
    let binary = crate::cmd::build_release_nodegate()?;
    if let Some(dir) = rootfs_only {
        return assemble_rootfs(&binary, &dir);
    }
    crate::setup::install_debian_packages(&["buildah"], &mut Vec::new())?;
    let staging = root.join("target/image/rootfs");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    assemble_rootfs(&binary, &staging)?;
    let archive = archive_path();
    let _ = std::fs::remove_file(&archive);
    let commit = output("git", &["-C", root.to_str().unwrap(), "rev-parse", "HEAD"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    // vfs: overlayfs inside this sandbox is not available to buildah.
    let buildah = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("buildah")
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .context("run buildah")?;
        if !out.status.success() {
            bail!(
                "buildah {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let container = buildah(&["from", "scratch"])?;
    let result = (|| {
        buildah(&["copy", &container, staging.to_str().unwrap(), "/"])?;
        let labels = [
            format!("org.opencontainers.image.version={}", version()),
            format!("org.opencontainers.image.revision={commit}"),
            "org.opencontainers.image.title=nodegate".into(),
            "org.opencontainers.image.description=XDP node firewall".into(),
            "org.opencontainers.image.licenses=MIT OR Apache-2.0".into(),
        ];
        let mut config = vec![
            "config".to_string(),
            "--entrypoint".into(),
            format!("[\"/{BINARY}\"]"),
            "--cmd".into(),
            "[\"--help\"]".into(),
        ];
        for label in &labels {
            config.extend(["--label".into(), label.clone()]);
        }
        config.push(container.clone());
        buildah(&config.iter().map(String::as_str).collect::<Vec<_>>())?;
        buildah(&[
            "commit",
            "--format",
            "oci",
            &container,
            &format!("oci-archive:{}:nodegate:{}", archive.display(), version()),
        ])
    })();
    let _ = buildah(&["rm", &container]);
    // Committing to an archive also stored the image locally: remove what we made.
    let _ = buildah(&["rmi", "--prune"]);
    result?;
    report(&archive, &commit)
}

/// Copy the binary, the helpers and their shared libraries into `dir`.
fn assemble_rootfs(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<(PathBuf, PathBuf)> = vec![(binary.to_path_buf(), dir.join(BINARY))];
    files.extend(
        HELPERS
            .iter()
            .map(|h| (PathBuf::from(h), dir.join(&h[1..]))),
    );
    let mut libraries = Vec::new();
    for (source, _) in &files {
        libraries.extend(shared_libraries(source)?);
    }
    libraries.sort();
    libraries.dedup();
    files.extend(
        libraries
            .iter()
            .map(|lib| (lib.clone(), dir.join(lib.strip_prefix("/").unwrap()))),
    );
    for (source, target) in &files {
        std::fs::create_dir_all(target.parent().unwrap())?;
        // Content, not symlinks: the loader paths ldd names are what the binaries open.
        std::fs::copy(source, target)
            .with_context(|| format!("copy {} into the image", source.display()))?;
    }
    for point in MOUNT_POINTS {
        std::fs::create_dir_all(dir.join(point))?;
    }
    eprintln!(
        "image root filesystem: {} ({} files)",
        dir.display(),
        files.len()
    );
    Ok(())
}

/// The shared libraries `program` loads, as absolute paths (`ldd`).
fn shared_libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Print the archive's size and its manifest's layers.
fn report(archive: &Path, commit: &str) -> anyhow::Result<()> {
    let size = std::fs::metadata(archive)?.len();
    let listing = output("tar", &["-tvf", archive.to_str().unwrap()]).unwrap_or_default();
    eprintln!(
        "image: {} ({:.1} MiB), nodegate:{} at {commit}\n{listing}",
        archive.display(),
        size as f64 / (1 << 20) as f64,
        version()
    );
    Ok(())
}
