//! `cargo xtask install`: nodegate on a host without Kubernetes, in the FHS places. The
//! binary and the unit go to /usr/local and /etc/systemd/system; an existing rule file is
//! never overwritten. Prints what it did and what to do next.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use anyhow::Context;

use crate::cmd::workspace_root;

/// Where each file goes, relative to the destination root.
pub const BINARY: &str = "usr/local/bin/nodegate";
pub const UNIT: &str = "etc/systemd/system/nodegate.service";
pub const RULES: &str = "etc/nodegate/rules.yaml";
const BASH_COMPLETION: &str = "usr/local/share/bash-completion/completions/nodegate";
const ZSH_COMPLETION: &str = "usr/local/share/zsh/site-functions/_nodegate";
const EXAMPLES: &str = "usr/local/share/doc/nodegate/examples";

pub fn run(destdir: &Path) -> anyhow::Result<()> {
    let root = workspace_root();
    install(&crate::cmd::build_release_nodegate()?, &root, destdir)?;
    if destdir == Path::new("/") {
        eprintln!(
            "next: edit /{RULES} (`nodegate check /{RULES}`), set the interfaces with `systemctl edit nodegate` \
             (NODEGATE_IFACES), then `systemctl daemon-reload && systemctl enable --now nodegate`"
        );
    }
    Ok(())
}

/// Put `binary` and the files of the workspace at `root` below `destdir`.
pub fn install(binary: &Path, root: &Path, destdir: &Path) -> anyhow::Result<()> {
    let place = |source: &Path, target: &str, mode: u32| -> anyhow::Result<()> {
        let target = destdir.join(target);
        std::fs::create_dir_all(target.parent().unwrap())?;
        std::fs::copy(source, &target)
            .with_context(|| format!("install {} as {}", source.display(), target.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        eprintln!("installed {}", target.display());
        Ok(())
    };
    place(binary, BINARY, 0o755)?;
    place(&root.join("deploy/systemd/nodegate.service"), UNIT, 0o644)?;
    for example in ["eks-node.yaml", "aks-authorized-ranges.yaml"] {
        place(
            &root.join("examples").join(example),
            &format!("{EXAMPLES}/{example}"),
            0o644,
        )?;
    }
    let rules = destdir.join(RULES);
    if rules.exists() {
        eprintln!("kept {} (never overwritten)", rules.display());
    } else {
        place(&root.join("examples/eks-node.yaml"), RULES, 0o600)?;
    }
    for (shell, target) in [("bash", BASH_COMPLETION), ("zsh", ZSH_COMPLETION)] {
        let out = Command::new(binary)
            .args(["completions", shell])
            .output()
            .context("nodegate completions")?;
        let target = destdir.join(target);
        std::fs::create_dir_all(target.parent().unwrap())?;
        std::fs::write(&target, out.stdout)?;
        eprintln!("installed {}", target.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything lands in its place, an existing rule file is kept, and the installed unit
    /// passes `systemd-analyze verify` (pointed at the installed binary: verify checks that
    /// ExecStart exists).
    #[test]
    fn install_places_every_file_and_the_unit_verifies() {
        let root = workspace_root();
        let dest = std::env::temp_dir().join(format!("nodegate-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dest);
        // Any executable that prints completions stands in for the release binary.
        let binary = dest.join("fake-nodegate");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(&binary, "#!/bin/sh\necho \"# completions for $2\"\n").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dest.join("etc/nodegate")).unwrap();
        std::fs::write(dest.join(RULES), "mine").unwrap();
        install(&binary, &root, &dest).unwrap();
        for file in [BINARY, UNIT, BASH_COMPLETION, ZSH_COMPLETION] {
            assert!(dest.join(file).is_file(), "{file}");
        }
        assert!(dest.join(EXAMPLES).join("eks-node.yaml").is_file());
        assert_eq!(std::fs::read_to_string(dest.join(RULES)).unwrap(), "mine");
        assert!(std::fs::read_to_string(dest.join(ZSH_COMPLETION))
            .unwrap()
            .contains("zsh"));

        let unit = std::fs::read_to_string(dest.join(UNIT)).unwrap().replace(
            "/usr/local/bin/nodegate",
            dest.join(BINARY).to_str().unwrap(),
        );
        let checked = dest.join("nodegate.service");
        std::fs::write(&checked, unit).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&checked)
            .output()
            .expect("systemd-analyze (Debian's systemd)");
        let complaints = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && complaints.trim().is_empty(),
            "systemd-analyze verify: {complaints}"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }
}
