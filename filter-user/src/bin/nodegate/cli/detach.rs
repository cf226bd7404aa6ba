//! `nodegate detach` and `nodegate uninstall`: the only ways the filter is removed.

use std::process::ExitCode;

use anyhow::Context;
use filter_user::{
    daemon::{
        control,
        owner::{OwnerLock, RUN_DIR},
    },
    loader::{attach, pins::PinLayout},
};

use super::{output::Output, PinArgs};

/// What `detach` and `uninstall` removed, as `-o json` prints it.
#[derive(serde::Serialize, Default)]
struct Removed {
    /// Interfaces the filter was detached from.
    detached: Vec<String>,
    /// The pinned state removed with the last interface, if it was.
    removed: Option<String>,
}

impl Removed {
    fn print(&self, out: Output) -> anyhow::Result<ExitCode> {
        if out.is_json() {
            out.document(self)?;
        } else {
            for name in &self.detached {
                println!("detached from {name}");
            }
            match &self.removed {
                Some(dir) => println!("removed {dir}"),
                None if self.detached.is_empty() => println!("nothing to remove"),
                None => {}
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Detach from one interface.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pins: PinArgs,
    /// Interface to detach from.
    #[arg(long, value_name = "IF")]
    iface: String,
}

/// Remove everything.
#[derive(clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pins: PinArgs,
    /// Also remove pinned state written by an incompatible nodegate version.
    #[arg(long)]
    discard_foreign_layout: bool,
}

/// The pin directory, taken from under no running daemon: a `run` that owns it would go on
/// writing maps and reloading into a filter that is gone.
fn exclusive(layout: &PinLayout) -> anyhow::Result<OwnerLock> {
    OwnerLock::acquire(RUN_DIR.as_ref(), layout, std::time::Duration::ZERO).context(
        "the running `nodegate run` must stop first (SIGTERM leaves the filter attached); then detach or uninstall",
    )
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let layout = PinLayout::new(&args.pins.pin_dir);
    layout.check()?;
    // Missing privileges first: they would also deny the lock, with a less useful message.
    let link = layout.link_path(&args.iface);
    link.try_exists().with_context(|| {
        format!(
            "cannot read {}; detach needs root (the pins are private to it)",
            link.display()
        )
    })?;
    let _owner = exclusive(&layout)?;
    let last = attach::detach(&layout, &args.iface)
        .with_context(|| format!("failed to detach from {}", args.iface))?;
    // The last interface takes every pin with it.
    Removed {
        detached: vec![args.iface],
        removed: last.then(|| layout.version_dir().display().to_string()),
    }
    .print(out)
}

pub fn uninstall(args: UninstallArgs, out: Output) -> anyhow::Result<ExitCode> {
    let layout = PinLayout::new(&args.pins.pin_dir);
    if args.discard_foreign_layout {
        layout
            .remove_foreign()
            .context("failed to remove pinned state")?;
        return Removed {
            detached: Vec::new(),
            removed: Some(layout.root().display().to_string()),
        }
        .print(out);
    }
    layout.check()?;
    let denied = |path: &std::path::Path, e: std::io::Error| {
        anyhow::anyhow!(
            "cannot read {}: {e}; uninstall needs root (the pins are private to it)",
            path.display()
        )
    };
    let version_dir = layout.version_dir();
    if !version_dir
        .try_exists()
        .map_err(|e| denied(&version_dir, e))?
    {
        return Removed::default().print(out);
    }
    let links = layout
        .try_pinned_links()
        .map_err(|e| denied(&layout.links_dir(), e))?;
    let owner = exclusive(&layout)?;
    let mut removed = Removed::default();
    for ifname in links {
        attach::detach(&layout, &ifname)
            .with_context(|| format!("failed to detach from {ifname}"))?;
        removed.detached.push(ifname);
    }
    layout.remove().context("failed to remove pins")?;
    removed.removed = Some(version_dir.display().to_string());
    // The run directory's files for these pins go too: nothing owns them any more.
    let _ = std::fs::remove_file(control::socket_path(RUN_DIR.as_ref(), &layout));
    let _ = std::fs::remove_file(filter_user::daemon::run::active_rules_path(
        RUN_DIR.as_ref(),
        &layout,
    ));
    let _ = std::fs::remove_file(owner.path());
    removed.print(out)
}
