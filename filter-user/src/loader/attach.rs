//! Attaching the XDP program to interfaces through pinned links, adopting links a previous
//! loader pinned (atomic program replacement, no gap), refusing interfaces that carry an XDP
//! program nodegate did not attach, and detaching.

use std::process::Command;

use aya::programs::{
    links::{FdLink, LinkOrder, PinnedLink},
    tc::TcAttachOptions,
    ProgramError, TcAttachType, XdpMode,
};

use super::{pins::PinLayout, Filter, FilterMaps, LoaderError};

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpModeChoice {
    /// Driver (native) mode, falling back to generic with a warning.
    #[default]
    Auto,
    /// Driver mode only.
    Driver,
    /// Generic (skb) mode.
    Generic,
}

/// How an interface ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// "driver", "generic", or "adopted" (a pinned link now runs this program).
    pub how: &'static str,
    /// The TC egress link: "attached" or "adopted".
    pub egress: &'static str,
    /// Set when auto mode had to fall back to generic: why driver mode failed.
    pub fallback_reason: Option<String>,
}

/// Errors while attaching or detaching.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No such interface.
    #[error("no interface named {ifname} (check `ip link`)")]
    UnknownInterface {
        /// Name given.
        ifname: String,
    },
    /// Someone else's XDP program is there.
    #[error(
        "{ifname} already has an XDP program that nodegate did not attach ({what}); nodegate never replaces it. \
         Remove it first (e.g. `ip link set dev {ifname} xdp off`) or choose another interface"
    )]
    Foreign {
        /// Interface.
        ifname: String,
        /// Program id/name as far as known.
        what: String,
    },
    /// The kernel refused the attach.
    #[error("attaching to {ifname} in {mode} mode failed: {source}")]
    Attach {
        /// Interface.
        ifname: String,
        /// Mode tried.
        mode: &'static str,
        /// aya's error.
        source: Box<ProgramError>,
    },
    /// No pinned link for the interface.
    #[error("nodegate is not attached to {ifname} (no pinned link at {path})")]
    NotAttached {
        /// Interface.
        ifname: String,
        /// Where the link would be.
        path: String,
    },
    /// Pinning or unpinning failed.
    #[error("{action} link for {ifname}: {detail}")]
    Pin {
        /// What.
        action: &'static str,
        /// Interface.
        ifname: String,
        /// Error text.
        detail: String,
    },
    /// A map error.
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// Interface index by name, in the current network namespace.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: c is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Interface name by index, in the current network namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    // SAFETY: on success p points into buf, NUL-terminated.
    (!p.is_null()).then(|| {
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    })
}

/// The XDP program currently on `ifname` according to iproute2, if any: "id N name X".
fn existing_xdp(ifname: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", ifname])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let xdp = json.get(0)?.get("xdp")?;
    let prog = xdp.get("prog").or_else(|| {
        xdp.get("attached")
            .and_then(|a| a.get(0))
            .and_then(|a| a.get("prog"))
    })?;
    Some(format!(
        "program id {} name {}",
        prog.get("id")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into()),
        prog.get("name").and_then(|v| v.as_str()).unwrap_or("?")
    ))
}

fn is_busy(err: &ProgramError) -> bool {
    matches!(err, ProgramError::SyscallError(e) if matches!(e.io_error.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)))
}

impl Filter {
    /// Attach to `ifname` and pin the link, or adopt the link a previous loader pinned.
    pub fn attach(
        &mut self,
        pins: &PinLayout,
        ifname: &str,
        mode: XdpModeChoice,
    ) -> Result<Attached, AttachError> {
        let ifindex = ifindex(ifname).ok_or_else(|| AttachError::UnknownInterface {
            ifname: ifname.into(),
        })?;
        let link_path = pins.link_path(ifname);
        let attached = if link_path.exists() {
            // Our own link from an earlier run: swap in this program atomically
            // (bpf_link_update), so there is no instant without a filter.
            let pinned = PinnedLink::from_pin(&link_path).map_err(|e| AttachError::Pin {
                action: "open pinned",
                ifname: ifname.into(),
                detail: e.to_string(),
            })?;
            let fd_link: FdLink = pinned.into();
            let xdp_link = fd_link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| AttachError::Pin {
                    action: "adopt",
                    ifname: ifname.into(),
                    detail: e.to_string(),
                })?;
            let id =
                self.program()
                    .attach_to_link(xdp_link)
                    .map_err(|source| AttachError::Attach {
                        ifname: ifname.into(),
                        mode: "adopt",
                        source: Box::new(source),
                    })?;
            // Keep the kernel link alive through its pin only; dropping our fd is harmless.
            let _ = self.program().take_link(id);
            Attached {
                ifname: ifname.into(),
                ifindex,
                how: "adopted",
                egress: "",
                fallback_reason: None,
            }
        } else {
            if let Some(what) = existing_xdp(ifname) {
                return Err(AttachError::Foreign {
                    ifname: ifname.into(),
                    what,
                });
            }
            let (id, how, fallback_reason) = self.attach_new(ifname, ifindex, mode)?;
            let link = self.program().take_link(id).map_err(|e| AttachError::Pin {
                action: "take",
                ifname: ifname.into(),
                detail: e.to_string(),
            })?;
            let fd_link: FdLink = link.try_into().map_err(|e: aya::programs::links::LinkError| AttachError::Pin {
                action: "convert",
                ifname: ifname.into(),
                detail: format!("{e} (the kernel fell back to a netlink attachment, which cannot be pinned; kernel ≥ 5.9 needed)"),
            })?;
            fd_link.pin(&link_path).map_err(|e| AttachError::Pin {
                action: "pin",
                ifname: ifname.into(),
                detail: e.to_string(),
            })?;
            Attached {
                ifname: ifname.into(),
                ifindex,
                how,
                egress: "",
                fallback_reason,
            }
        };
        let mut attached = attached;
        attached.egress = self.attach_egress(pins, ifname)?;
        self.maps_mut().register_iface(ifindex, ifname)?;
        Ok(attached)
    }

    /// Attach the flow recorder to `ifname`'s egress as a TCX link and pin it, or adopt the
    /// pinned link (bpf_link_update: no instant without a recorder). TCX (kernel ≥ 6.6)
    /// needs no clsact qdisc; the recorder returns `TCX_NEXT`, so other TC programs on the
    /// interface keep running after it.
    fn attach_egress(
        &mut self,
        pins: &PinLayout,
        ifname: &str,
    ) -> Result<&'static str, AttachError> {
        let pin_err = |action: &'static str| {
            move |e: &dyn std::fmt::Display| AttachError::Pin {
                action,
                ifname: ifname.into(),
                detail: format!("egress: {e}"),
            }
        };
        let path = pins.egress_link_path(ifname);
        let (id, how) = if path.exists() {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| pin_err("open pinned")(&e))?;
            let fd_link: FdLink = pinned.into();
            let link = fd_link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| pin_err("adopt")(&e))?;
            let id = self
                .egress_program()
                .attach_to_link(link)
                .map_err(|source| AttachError::Attach {
                    ifname: ifname.into(),
                    mode: "tc egress adopt",
                    source: Box::new(source),
                })?;
            (id, "adopted")
        } else {
            let id = self
                .egress_program()
                .attach_with_options(
                    ifname,
                    TcAttachType::Egress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|source| AttachError::Attach {
                    ifname: ifname.into(),
                    mode: "tc egress",
                    source: Box::new(source),
                })?;
            (id, "attached")
        };
        let link = self
            .egress_program()
            .take_link(id)
            .map_err(|e| pin_err("take")(&e))?;
        if how == "attached" {
            let fd_link: FdLink = link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| pin_err("convert")(&e))?;
            fd_link.pin(&path).map_err(|e| pin_err("pin")(&e))?;
        }
        Ok(how)
    }

    fn attach_new(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: XdpModeChoice,
    ) -> Result<(aya::programs::xdp::XdpLinkId, &'static str, Option<String>), AttachError> {
        let try_mode = |filter: &mut Filter, m: XdpMode, name: &'static str| {
            filter
                .program()
                .attach_to_if_index(ifindex, m)
                .map_err(|source| {
                    if is_busy(&source) {
                        AttachError::Foreign {
                            ifname: ifname.into(),
                            what: existing_xdp(ifname).unwrap_or_else(|| "busy".into()),
                        }
                    } else {
                        AttachError::Attach {
                            ifname: ifname.into(),
                            mode: name,
                            source: Box::new(source),
                        }
                    }
                })
        };
        match mode {
            XdpModeChoice::Driver => {
                Ok((try_mode(self, XdpMode::Driver, "driver")?, "driver", None))
            }
            XdpModeChoice::Generic => {
                Ok((try_mode(self, XdpMode::Skb, "generic")?, "generic", None))
            }
            XdpModeChoice::Auto => match try_mode(self, XdpMode::Driver, "driver") {
                Ok(id) => Ok((id, "driver", None)),
                Err(AttachError::Attach { source, .. }) => {
                    let id = try_mode(self, XdpMode::Skb, "generic")?;
                    Ok((id, "generic", Some(source.to_string())))
                }
                Err(other) => Err(other),
            },
        }
    }
}

/// Detach from `ifname`: unpin its link (which detaches the program) and forget its slot.
/// When it was the last interface, every pin goes. Works whether or not `run` is alive.
pub fn detach(pins: &PinLayout, ifname: &str) -> Result<bool, AttachError> {
    let link_path = pins.link_path(ifname);
    if !link_path.exists() {
        return Err(AttachError::NotAttached {
            ifname: ifname.into(),
            path: link_path.display().to_string(),
        });
    }
    let pinned = PinnedLink::from_pin(&link_path).map_err(|e| AttachError::Pin {
        action: "open pinned",
        ifname: ifname.into(),
        detail: e.to_string(),
    })?;
    let link = pinned.unpin().map_err(|e| AttachError::Pin {
        action: "unpin",
        ifname: ifname.into(),
        detail: e.to_string(),
    })?;
    drop(link);
    // The flow recorder goes with it (absent when pinned by a nodegate without one).
    let egress = pins.egress_link_path(ifname);
    if egress.exists() {
        let pinned = PinnedLink::from_pin(&egress).map_err(|e| AttachError::Pin {
            action: "open pinned egress",
            ifname: ifname.into(),
            detail: e.to_string(),
        })?;
        let link = pinned.unpin().map_err(|e| AttachError::Pin {
            action: "unpin egress",
            ifname: ifname.into(),
            detail: e.to_string(),
        })?;
        drop(link);
    }
    if let (Some(index), Ok(mut maps)) =
        (ifindex(ifname), FilterMaps::open_pinned(&pins.maps_dir()))
    {
        let _ = maps.ifaces.remove(&index);
    }
    let last = pins.pinned_links().is_empty();
    if last {
        pins.remove().map_err(|e| AttachError::Pin {
            action: "remove pins after",
            ifname: ifname.into(),
            detail: e.to_string(),
        })?;
    }
    Ok(last)
}
