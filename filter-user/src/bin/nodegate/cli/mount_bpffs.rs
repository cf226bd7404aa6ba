//! `nodegate mount-bpffs`: make sure a BPF filesystem is mounted where the pins go. The
//! Kubernetes kit's init container runs it (with mount propagation back to the host) on
//! nodes whose distribution does not mount bpffs itself.

use std::{ffi::CString, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use filter_user::loader::pins::is_bpffs;

#[derive(clap::Args)]
pub struct Args {
    /// Where bpffs belongs.
    #[arg(default_value = "/sys/fs/bpf")]
    path: PathBuf,
}

pub fn run(args: Args, out: super::output::Output) -> anyhow::Result<ExitCode> {
    let path = &args.path;
    if is_bpffs(path) {
        return done(path, false, out);
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    let target = CString::new(path.as_os_str().as_encoded_bytes())?;
    let (source, fstype, options) = (c"bpf", c"bpf", c"mode=0700");
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "cannot mount bpffs at {}: {} (needs CAP_SYS_ADMIN; in Kubernetes a privileged init container with mountPropagation: Bidirectional)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    done(path, true, out)
}

/// Say what was done: `mounted` is false when a BPF filesystem was already there.
fn done(
    path: &std::path::Path,
    mounted: bool,
    out: super::output::Output,
) -> anyhow::Result<ExitCode> {
    if out.is_json() {
        out.document(&serde_json::json!({"path": path, "mounted": mounted}))?;
    } else if mounted {
        println!("mounted a BPF filesystem at {}", path.display());
    } else {
        println!("{} is already a BPF filesystem", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
