//! Where nodegate keeps its kernel objects in bpffs, so the filter outlives the loader:
//!
//! ```text
//! /sys/fs/bpf/nodegate/           (0700)
//!   v6/                           layout version: a loader refuses any other, except that
//!                                 `run` takes layouts 5, 4, 3 and 2 over in place
//!                                 (`take_over_previous`)
//!     maps/NG_*                   every map (tables, counters, samples)
//!     prog                        the XDP program
//!     links/<ifname>              one XDP link per attached interface
//!     egress/<ifname>             its TC egress (TCX) link: the flow recorder
//!     clsact/<ifname>/            (a directory) the flow recorder runs as a clsact filter
//!                                 instead (kernels without TCX): netlink filters cannot be
//!                                 pinned, so this marks the form; priority and handle are fixed
//!     variant/<name>/             (a directory) how the kernel runs the pinned program:
//!                                 `native` or `spectre-hardened` (`ProgramVariant`)
//! ```

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use filter_common::LAYOUT_VERSION;

/// Default bpffs directory.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/nodegate";

/// bpffs superblock magic (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Errors about the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The directory is not on a bpffs.
    #[error("{path} is not on a BPF filesystem; mount one with `nodegate mount-bpffs /sys/fs/bpf` (or `mount -t bpf bpf /sys/fs/bpf`); in a container, mount the host's /sys/fs/bpf")]
    NotBpffs {
        /// Path checked.
        path: PathBuf,
    },
    /// Pins from another layout version exist.
    #[error(
        "{path} holds nodegate state of layout version {found}, this nodegate speaks version {ours}; \
         it will not reinterpret it.{takeover} Remove it with the nodegate that wrote it (`nodegate uninstall`), \
         or, to discard it, `nodegate uninstall --pin-dir {root}` with --discard-foreign-layout"
    )]
    IncompatibleLayout {
        /// The foreign version directory.
        path: PathBuf,
        /// The pin root.
        root: PathBuf,
        /// Its version.
        found: String,
        /// Ours.
        ours: u32,
        /// How `run` takes this version over, when it can (else empty).
        takeover: &'static str,
    },
    /// A directory of the layout is not one nodegate's user made: whoever owns it can
    /// remove or replace the pins in it, wedging the filter.
    #[error(
        "{path} is {problem}, not a directory owned by nodegate's user (uid {ours}); whoever controls \
         it could remove or replace the filter's pins. Remove it (`rm -r {path}`) or choose another \
         --pin-dir"
    )]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// What it is instead.
        problem: String,
        /// Our effective uid.
        ours: u32,
    },
    /// Filesystem error.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PinError + 'a {
    move |source| PinError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The pin layout under one root directory.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

/// The earlier layouts that `nodegate run` takes over in place
/// ([`PinLayout::take_over_previous`]), newest first. Their maps are this layout's (names,
/// key and value types), so their maps, program pin and links become this layout's state
/// as they are (the source tables keep the size they were created with: an IPv4 generation
/// then has 768 KiB less room for nodes beside the wider root):
/// - layout 5 programs read every IPv4 leaf word as a leaf; this layout's compiler writes
///   inline prefixes into leaf words. A layout-5 program must therefore never see a
///   generation this version publishes (the same order as for layout 3, below); this
///   version's program reads layout 5's tables (no inline prefixes) right.
/// - layout 4 programs read tail records of one prefix; this layout's compiler writes
///   records of up to two (IPv4) or four (IPv6). A layout-4 program must therefore never see a generation this
///   version publishes, which the same order as for layout 3 (below) ensures; this version's
///   program reads layout 4's records (a count of one) right.
/// - layout 3 programs read IPv4 source tables with a 16-bit root and without wide nodes;
///   this layout's compiler writes wider roots and wide nodes. A layout-3 program must
///   therefore never see a generation this version publishes: the engine swaps its program
///   in on the links, waits out one RCU grace period, and only then publishes
///   (`daemon::engine`). Until then this version's program reads layout 3's generation,
///   whose flags tell it the 16-bit root.
/// - layout 2 also lacked `NG_IFINDEX`, which the loader creates and fills from `NG_IFACES`
///   before its program goes live.
pub const ADOPTABLE_LAYOUTS: [u32; 4] = [5, 4, 3, 2];

/// A previous layout's directory renamed to this version's by
/// [`PinLayout::take_over_previous`].
#[derive(Debug)]
pub struct TakenOver {
    /// The previous layout's directory.
    pub from: PathBuf,
    /// This layout's.
    pub to: PathBuf,
}

impl TakenOver {
    /// Give the directory its old name back: the start failed before the new program was
    /// pinned or attached, so the state is still entirely the previous layout's, and a
    /// nodegate of that version can adopt it again.
    pub fn undo(self) -> Result<(), PinError> {
        fs::rename(&self.to, &self.from).map_err(io("rename back", &self.to))
    }
}

impl Default for PinLayout {
    fn default() -> Self {
        PinLayout::new(DEFAULT_PIN_ROOT)
    }
}

impl PinLayout {
    /// Layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinLayout { root: root.into() }
    }

    /// The root (e.g. /sys/fs/bpf/nodegate).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The versioned directory.
    pub fn version_dir(&self) -> PathBuf {
        self.root.join(format!("v{LAYOUT_VERSION}"))
    }

    /// Directory of pinned maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.version_dir().join("maps")
    }

    /// Pinned program.
    pub fn prog_path(&self) -> PathBuf {
        self.version_dir().join("prog")
    }

    /// Directory of pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.version_dir().join("links")
    }

    /// Pinned link of one interface.
    pub fn link_path(&self, ifname: &str) -> PathBuf {
        self.links_dir().join(ifname)
    }

    /// Directory of pinned TC egress links (kept apart from `links/`, whose entries name
    /// the attached interfaces).
    pub fn egress_links_dir(&self) -> PathBuf {
        self.version_dir().join("egress")
    }

    /// Pinned TC egress link of one interface.
    pub fn egress_link_path(&self, ifname: &str) -> PathBuf {
        self.egress_links_dir().join(ifname)
    }

    /// Directory of clsact markers.
    pub fn clsact_dir(&self) -> PathBuf {
        self.version_dir().join("clsact")
    }

    /// Directory whose one subdirectory names the pinned program's variant.
    pub fn variant_dir(&self) -> PathBuf {
        self.version_dir().join("variant")
    }

    /// Record that the pinned program runs as `variant` (replacing an earlier record).
    pub fn record_variant(
        &self,
        variant: super::privileges::ProgramVariant,
    ) -> Result<(), PinError> {
        let dir = self.variant_dir();
        remove_tree(&dir)?;
        for d in [dir.clone(), dir.join(variant.name())] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .map_err(io("create", &d))?;
        }
        Ok(())
    }

    /// The pinned program's variant, as the daemon that pinned it recorded it.
    pub fn recorded_variant(&self) -> Option<super::privileges::ProgramVariant> {
        fs::read_dir(self.variant_dir())
            .ok()?
            .flatten()
            .find_map(|e| {
                super::privileges::ProgramVariant::from_name(&e.file_name().to_string_lossy())
            })
    }

    /// Marker that `ifname`'s flow recorder is a clsact filter (not a TCX link).
    pub fn clsact_marker(&self, ifname: &str) -> PathBuf {
        self.clsact_dir().join(ifname)
    }

    /// How `ifname`'s flow recorder is attached, as the pins record it.
    pub fn egress_hook(&self, ifname: &str) -> Option<super::features::EgressHook> {
        if self.egress_link_path(ifname).exists() {
            Some(super::features::EgressHook::Tcx)
        } else if self.clsact_marker(ifname).is_dir() {
            Some(super::features::EgressHook::Clsact)
        } else {
            None
        }
    }

    /// Whether a previous loader left a program pinned here.
    pub fn has_state(&self) -> bool {
        self.prog_path().exists()
    }

    /// Interfaces with a pinned link; unlike [`PinLayout::pinned_links`], a directory that
    /// exists but cannot be read (no privileges) is an error, not "none".
    pub fn try_pinned_links(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        match fs::read_dir(self.links_dir()) {
            Ok(dir) => {
                for entry in dir {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        Ok(names)
    }

    /// Interfaces with a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.links_dir())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The directories of the layout, root first.
    fn dirs(&self) -> [PathBuf; 6] {
        [
            self.root.clone(),
            self.version_dir(),
            self.maps_dir(),
            self.links_dir(),
            self.egress_links_dir(),
            self.clsact_dir(),
        ]
    }

    /// Check every directory of the layout that exists is a real directory (not a symlink)
    /// owned by our effective user: one pre-created by another user would be adopted
    /// (`create` only fixes the mode), and its owner could wedge the filter.
    pub fn check_ownership(&self) -> Result<(), PinError> {
        // SAFETY: geteuid has no preconditions.
        let ours = unsafe { libc::geteuid() };
        for dir in self.dirs() {
            let meta = match fs::symlink_metadata(&dir) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("inspect", &dir)(e)),
            };
            let problem = if meta.file_type().is_symlink() {
                "a symbolic link".to_string()
            } else if !meta.is_dir() {
                "not a directory".to_string()
            } else if meta.uid() != ours {
                format!("owned by uid {}", meta.uid())
            } else {
                continue;
            };
            return Err(PinError::NotOurs {
                path: dir,
                problem,
                ours,
            });
        }
        Ok(())
    }

    /// Take the newest of [`ADOPTABLE_LAYOUTS`]' state over as this version's: one `rename(2)`
    /// of its directory on bpffs, atomic, so there is never a moment with both or neither.
    /// Nothing is unpinned: the old program keeps enforcing through its links until the new
    /// one is swapped in on them. `None` when there is nothing to take over (or this
    /// version's directory exists already; `check` then refuses the old one, as it refuses a
    /// second old one).
    pub fn take_over_previous(&self) -> Result<Option<TakenOver>, PinError> {
        let to = self.version_dir();
        if to.exists() {
            return Ok(None);
        }
        let Some(from) = ADOPTABLE_LAYOUTS
            .iter()
            .map(|v| self.root.join(format!("v{v}")))
            .find(|dir| dir.is_dir())
        else {
            return Ok(None);
        };
        fs::rename(&from, &to).map_err(io("rename", &from))?;
        Ok(Some(TakenOver { from, to }))
    }

    /// Check the root is on bpffs and holds no foreign layout version.
    pub fn check(&self) -> Result<(), PinError> {
        let probe = if self.root.exists() {
            self.root.clone()
        } else {
            self.root.parent().unwrap_or(Path::new("/")).to_path_buf()
        };
        if !is_bpffs(&probe) {
            return Err(PinError::NotBpffs { path: probe });
        }
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('v') && name != format!("v{LAYOUT_VERSION}") {
                    return Err(PinError::IncompatibleLayout {
                        path: entry.path(),
                        root: self.root.clone(),
                        found: name[1..].to_string(),
                        ours: LAYOUT_VERSION,
                        takeover: if ADOPTABLE_LAYOUTS.iter().any(|v| name[1..] == v.to_string()) {
                            " `nodegate run` of this version takes it over in place, without a gap in filtering."
                        } else {
                            ""
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// Create the directories, owner-only (0700): pinned maps are writable by whoever can
    /// open them, so nobody but root may traverse there.
    pub fn create(&self) -> Result<(), PinError> {
        for dir in self.dirs() {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(io("create", &dir))?;
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io("chmod", &dir))?;
        }
        Ok(())
    }

    /// Remove every pin and directory of this layout version (objects no longer referenced
    /// are freed by the kernel; pinned links going away detaches their programs).
    pub fn remove(&self) -> Result<(), PinError> {
        remove_tree(&self.version_dir())?;
        // The root goes too when nothing else is in it.
        let _ = fs::remove_dir(&self.root);
        Ok(())
    }

    /// Remove a foreign layout version (explicit operator request only).
    pub fn remove_foreign(&self) -> Result<(), PinError> {
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                remove_tree(&entry.path())?;
            }
        }
        let _ = fs::remove_dir(&self.root);
        Ok(())
    }
}

fn remove_tree(dir: &Path) -> Result<(), PinError> {
    if !dir.exists() {
        return Ok(());
    }
    // bpffs has no recursive unlink; walk it.
    for entry in fs::read_dir(dir).map_err(io("read", dir))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_tree(&path)?;
        } else {
            fs::remove_file(&path).map_err(io("unpin", &path))?;
        }
    }
    fs::remove_dir(dir).map_err(io("remove", dir))
}

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; c is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}
