//! The knock-out builds of the stage-cost table: the XDP object built once per stage with
//! `NODEGATE_KNOCKOUT=<stage>` (filter-ebpf/src/knockout.rs), each stopping right after that
//! stage, for `benches/benches/testrun.rs` to time beside the shipped program.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[path = "../../filter-user/bpf_toolchain.rs"]
mod bpf_toolchain;

/// The stages a build can stop after, in program order (the full program is the embedded
/// object). Keep in step with `knockout::Stage` and `benches::STAGES`.
pub const STAGES: [&str; 5] = ["settings", "parse", "call", "lookup", "verdict"];

/// Build every knock-out object into `target/knockout/<stage>.o`; returns that directory.
pub fn build(root: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let Some(toolchain) = bpf_toolchain::detect() else {
        bail!(
            "no BPF toolchain for the knock-out builds; {}",
            bpf_toolchain::INSTALL_HINT
        );
    };
    let build_dir = target.join("bpf-knockout");
    let out = target.join("knockout");
    std::fs::create_dir_all(&out)?;
    for stage in STAGES {
        let mut cmd =
            bpf_toolchain::build_command(&toolchain, &root.join("filter-ebpf"), &build_dir);
        cmd.env("NODEGATE_KNOCKOUT", stage);
        eprintln!("+ NODEGATE_KNOCKOUT={stage} cargo build (filter-ebpf)");
        let status = cmd.status().context("failed to run the BPF build")?;
        if !status.success() {
            bail!("knock-out build `{stage}` failed ({status})");
        }
        let object = out.join(format!("{stage}.o"));
        std::fs::copy(bpf_toolchain::built_object(&build_dir), &object)
            .with_context(|| format!("failed to copy the `{stage}` object"))?;
    }
    Ok(out)
}
