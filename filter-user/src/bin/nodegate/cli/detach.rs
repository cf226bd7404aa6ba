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

use super::PinArgs;

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
        "the running `nodegate run` must stop first (SIGTERM leaves the filter attached); then          detach or uninstall",
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    println!(
        "detached from {}{}",
        args.iface,
        if last {
            "; no interface left, removed all pins"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let layout = PinLayout::new(&args.pins.pin_dir);
    if args.discard_foreign_layout {
        layout
            .remove_foreign()
            .context("failed to remove pinned state")?;
        println!("removed everything under {}", layout.root().display());
        return Ok(ExitCode::SUCCESS);
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
        println!(
            "nothing to remove: no nodegate state under {}",
            layout.root().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let links = layout
        .try_pinned_links()
        .map_err(|e| denied(&layout.links_dir(), e))?;
    let owner = exclusive(&layout)?;
    for ifname in links {
        attach::detach(&layout, &ifname)
            .with_context(|| format!("failed to detach from {ifname}"))?;
        println!("detached from {ifname}");
    }
    layout.remove().context("failed to remove pins")?;
    println!("removed {}", version_dir.display());
    // The run directory's files for these pins go too: nothing owns them any more.
    let _ = std::fs::remove_file(control::socket_path(RUN_DIR.as_ref(), &layout));
    let _ = std::fs::remove_file(filter_user::daemon::run::active_rules_path(
        RUN_DIR.as_ref(),
        &layout,
    ));
    let _ = std::fs::remove_file(owner.path());
    Ok(ExitCode::SUCCESS)
}
