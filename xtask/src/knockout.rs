//! The BPF objects `xtask bench` builds beside the shipped one: the knock-out builds of the
//! stage-cost table (the XDP object built once per stage with `NODEGATE_KNOCKOUT=<stage>`,
//! filter-ebpf/src/knockout.rs, each stopping right after that stage, for `ng-bench stages`
//! to time beside the shipped program), and the lookup-candidates object
//! (filter-ebpf/src/candidates/main.rs) that `ng-bench lookup` times the flat table against
//! DXR and poptrie with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[path = "../../filter-user/bpf_toolchain.rs"]
mod bpf_toolchain;

/// The stages a build can stop after, in program order (the full program is the embedded
/// object). Keep in step with `knockout::Stage` and `benches::STAGES`.
pub const STAGES: [&str; 5] = ["settings", "parse", "handoff", "lookup", "verdict"];

/// The benches' lookup-candidates binary in `filter-ebpf` (`src/candidates/main.rs`).
const CANDIDATES_BIN: &str = "lookup-candidates";

/// The lookup-candidates object's file name in the knock-out directory (`ng-bench lookup`
/// reads it from `NODEGATE_KNOCKOUT_DIR`).
pub const CANDIDATES: &str = "lookup-candidates.o";

/// Build every knock-out object into `target/knockout/<stage>.o`, and the lookup-candidates
/// object into [`CANDIDATES`] there; returns that directory.
pub fn build(root: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let Some(toolchain) = bpf_toolchain::detect() else {
        bail!(
            "no BPF toolchain for the knock-out builds; {}",
            bpf_toolchain::INSTALL_HINT
        );
    };
    let build_dir = target.join("bpf-knockout");
    let ebpf = root.join("filter-ebpf");
    let out = target.join("knockout");
    // Anew each time: an object a renamed stage left behind would otherwise stay beside the
    // current ones.
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("failed to clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    for stage in STAGES {
        let mut cmd = bpf_toolchain::build_command(
            &toolchain,
            &ebpf,
            &build_dir,
            bpf_toolchain::NODEGATE_BIN,
        );
        cmd.env("NODEGATE_KNOCKOUT", stage);
        eprintln!("+ NODEGATE_KNOCKOUT={stage} cargo build (filter-ebpf)");
        let status = cmd.status().context("failed to run the BPF build")?;
        if !status.success() {
            bail!("knock-out build `{stage}` failed ({status})");
        }
        let object = out.join(format!("{stage}.o"));
        std::fs::copy(
            bpf_toolchain::built_object(&build_dir, bpf_toolchain::NODEGATE_BIN),
            &object,
        )
        .with_context(|| format!("failed to copy the `{stage}` object"))?;
    }
    let bin = CANDIDATES_BIN;
    eprintln!("+ cargo build --bin {bin} (filter-ebpf)");
    let status = bpf_toolchain::build_command(&toolchain, &ebpf, &build_dir, bin)
        .status()
        .context("failed to run the BPF build")?;
    if !status.success() {
        bail!("the `{bin}` build failed ({status})");
    }
    std::fs::copy(
        bpf_toolchain::built_object(&build_dir, bin),
        out.join(CANDIDATES),
    )
    .with_context(|| format!("failed to copy the `{bin}` object"))?;
    Ok(out)
}
