//! The daemon's own references on everything it pinned: every map and each interface's
//! links. Pins are how nodegate outlives its process, but they are files: anyone with root
//! can remove them, and removing the last reference on a link detaches the filter. While
//! the daemon holds these, removing pins changes nothing in the kernel, and [`Holds::repin`]
//! puts them back; [`Holds::link_trouble`] tells when a link stopped doing its job.

use std::{collections::BTreeMap, path::PathBuf};

use aya::maps::MapData;

use super::{attach::ifindex, link_ref::LinkRef, pins::PinLayout, LoaderError, PINNED_MAPS};

/// One interface's links, held.
#[derive(Debug)]
struct InterfaceLinks {
    ifindex: u32,
    xdp: LinkRef,
    /// The TCX egress recorder's link (a clsact recorder lives in the qdisc, not in a link).
    egress: Option<LinkRef>,
    /// The recorder is a clsact filter: its marker directory records the form.
    clsact: bool,
}

/// Why an interface's attachment is not what the daemon made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTrouble {
    /// The XDP link is detached: the interface was deleted, or someone ran
    /// `bpftool link detach`.
    Detached,
    /// The interface was deleted and another one of the same name created: the link went
    /// with the old one.
    Recreated {
        /// The new interface's index.
        now: u32,
    },
    /// The link runs another program (someone updated it through the pin).
    Replaced {
        /// The program it runs now.
        prog_id: u32,
    },
    /// The TCX egress recorder's link is detached (return traffic is no longer learned).
    EgressDetached,
}

impl std::fmt::Display for LinkTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkTrouble::Detached => write!(
                f,
                "the XDP link was detached (interface deleted, or `bpftool link detach`)"
            ),
            LinkTrouble::Recreated { now } => write!(
                f,
                "the interface was deleted and created again (now ifindex {now}); the link went with the old one"
            ),
            LinkTrouble::Replaced { prog_id } => write!(
                f,
                "the XDP link runs program id {prog_id}, not nodegate's (updated through its pin)"
            ),
            LinkTrouble::EgressDetached => {
                write!(f, "the egress flow recorder's TCX link was detached")
            }
        }
    }
}

/// References on the pinned maps and on each attached interface's links.
#[derive(Debug)]
pub struct Holds {
    pins: PinLayout,
    maps: Vec<(&'static str, MapData)>,
    links: BTreeMap<String, InterfaceLinks>,
}

impl Holds {
    /// Hold every map pinned under `pins` (call after the load pinned them).
    pub fn maps(pins: &PinLayout) -> Result<Holds, LoaderError> {
        let dir = pins.maps_dir();
        let maps = PINNED_MAPS
            .iter()
            .map(|name| {
                let path = dir.join(name);
                MapData::from_pin(&path)
                    .map(|data| (*name, data))
                    .map_err(|source| LoaderError::OpenPin { path, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Holds {
            pins: pins.clone(),
            maps,
            links: BTreeMap::new(),
        })
    }

    /// Hold the links pinned for `ifname` (attached at `ifindex`), replacing what was held.
    pub fn hold_links(&mut self, ifname: &str, ifindex: u32) -> std::io::Result<()> {
        let xdp = LinkRef::open(&self.pins.link_path(ifname))?;
        let egress_path = self.pins.egress_link_path(ifname);
        let egress = match egress_path.exists() {
            true => Some(LinkRef::open(&egress_path)?),
            false => None,
        };
        let clsact = self.pins.clsact_marker(ifname).is_dir();
        self.links.insert(
            ifname.to_string(),
            InterfaceLinks {
                ifindex,
                xdp,
                egress,
                clsact,
            },
        );
        Ok(())
    }

    /// Let go of `ifname`'s links and remove their pins: they are detached and do nothing,
    /// and a stale pin would be adopted by the next attach.
    pub fn drop_links(&mut self, ifname: &str) {
        self.links.remove(ifname);
        for path in [
            self.pins.link_path(ifname),
            self.pins.egress_link_path(ifname),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Let go of `ifname`'s egress recorder link and remove its pin (it is detached).
    pub fn drop_egress(&mut self, ifname: &str) {
        if let Some(links) = self.links.get_mut(ifname) {
            links.egress = None;
        }
        let _ = std::fs::remove_file(self.pins.egress_link_path(ifname));
    }

    /// Whether `ifname`'s links are held.
    pub fn holds(&self, ifname: &str) -> bool {
        self.links.contains_key(ifname)
    }

    /// What is wrong with `ifname`'s attachment now, if anything (`program_id`: the
    /// program nodegate attached). A link the kernel will not describe counts as detached.
    pub fn link_trouble(&self, ifname: &str, program_id: u32) -> Option<LinkTrouble> {
        let held = self.links.get(ifname)?;
        let Ok(state) = held.xdp.state() else {
            return Some(LinkTrouble::Detached);
        };
        match (state.ifindex, ifindex(ifname)) {
            (None, Some(now)) if now != held.ifindex => {
                return Some(LinkTrouble::Recreated { now })
            }
            (None, _) => return Some(LinkTrouble::Detached),
            _ => {}
        }
        if state.prog_id != program_id {
            return Some(LinkTrouble::Replaced {
                prog_id: state.prog_id,
            });
        }
        let egress_detached = held
            .egress
            .as_ref()
            .is_some_and(|link| link.state().map_or(true, |s| s.ifindex.is_none()));
        egress_detached.then_some(LinkTrouble::EgressDetached)
    }

    /// Pin again whatever held object lost its pin (directories are re-created owner-only).
    /// Returns the paths pinned again.
    pub fn repin(&self) -> Result<Vec<PathBuf>, LoaderError> {
        let mut missing = Vec::new();
        let maps_dir = self.pins.maps_dir();
        for (name, data) in &self.maps {
            let path = maps_dir.join(name);
            if !exists(&path) {
                missing.push((path, Pinnable::Map(data)));
            }
        }
        for (ifname, links) in &self.links {
            let path = self.pins.link_path(ifname);
            if !exists(&path) {
                missing.push((path, Pinnable::Link(&links.xdp)));
            }
            if let Some(egress) = &links.egress {
                let path = self.pins.egress_link_path(ifname);
                if !exists(&path) {
                    missing.push((path, Pinnable::Link(egress)));
                }
            }
            let marker = self.pins.clsact_marker(ifname);
            if links.clsact && !exists(&marker) {
                missing.push((marker, Pinnable::Marker));
            }
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        self.pins.create().map_err(|e| LoaderError::Repin {
            path: self.pins.root().to_path_buf(),
            detail: e.to_string(),
        })?;
        missing
            .into_iter()
            .map(|(path, object)| {
                let result = match object {
                    Pinnable::Map(data) => data.pin(&path).map_err(|e| e.to_string()),
                    Pinnable::Link(link) => link.pin(&path).map_err(|e| e.to_string()),
                    Pinnable::Marker => std::fs::create_dir(&path).map_err(|e| e.to_string()),
                };
                result
                    .map(|()| path.clone())
                    .map_err(|detail| LoaderError::Repin { path, detail })
            })
            .collect()
    }
}

enum Pinnable<'a> {
    Map(&'a MapData),
    Link(&'a LinkRef),
    /// A clsact marker directory.
    Marker,
}

/// Whether something is pinned at `path` (a pin we cannot even look at counts as there:
/// pinning over it would fail anyway).
fn exists(path: &std::path::Path) -> bool {
    path.try_exists().unwrap_or(true)
}
