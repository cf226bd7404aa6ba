//! Attaching the XDP program to interfaces through pinned links, adopting links a previous
//! loader pinned (atomic program replacement, no gap), refusing interfaces that carry an XDP
//! program nodegate did not attach, and detaching. The TC egress flow recorder goes on as a
//! TCX link or, on kernels without TCX, as a clsact filter (see [`super::features`]).

use std::process::Command;

use aya::programs::{
    links::{FdLink, LinkOrder, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    ProgramError, TcAttachType, XdpMode,
};

use super::{
    features::EgressHook, pins::PinLayout, Filter, FilterMaps, LoaderError, EGRESS_PROGRAM,
};

/// clsact filter priority of the flow recorder. The lowest number runs first: the recorder
/// must see a packet before a filter that ends the chain (TC_ACT_OK, redirect) does, and it
/// returns TC_ACT_UNSPEC, so the filters after it still run.
pub const CLSACT_PRIORITY: u16 = 1;
/// clsact filter handle of the flow recorder ("ng"): fixed, so a restarted nodegate finds its
/// filter without a pin (netlink filters cannot be pinned).
pub const CLSACT_HANDLE: u16 = 0x6e67;

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
    /// The XDP mode the kernel runs it in: "driver" or "generic" ("offload", or "unknown"
    /// when an adopted link's mode cannot be read).
    pub xdp_mode: &'static str,
    /// The TC egress recorder: "attached" or "adopted".
    pub egress: &'static str,
    /// How the TC egress recorder is attached (TCX link or clsact filter).
    pub egress_hook: EgressHook,
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
    /// An adopted attachment runs in another mode than `--xdp-mode` asks for.
    #[error(
        "{ifname} runs nodegate's program in {running} mode, but --xdp-mode {requested} was given;          the mode of an attachment cannot change in place. Keep it with --xdp-mode auto (or          {running}), or change it with `nodegate detach --iface {ifname}` and a new start (a          gap without a filter)"
    )]
    ModeMismatch {
        /// Interface.
        ifname: String,
        /// The mode it is attached in.
        running: &'static str,
        /// The mode asked for.
        requested: &'static str,
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

impl crate::hint::Hint for AttachError {
    fn hint(&self) -> Option<&str> {
        match self {
            AttachError::Loader(e) => crate::hint::Hint::hint(e),
            _ => None,
        }
    }
}

/// Interface index by name, in the current network namespace.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: c is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Check, before anything is created or written, that [`Filter::attach`] could take
/// `ifname` in `mode`: the interface exists, and its XDP slot is free, or holds the link
/// `pins` own (adopted on attach) in the mode asked for (`Auto` accepts either). Returns its
/// index.
pub fn check_attachable(
    pins: &PinLayout,
    ifname: &str,
    mode: XdpModeChoice,
) -> Result<u32, AttachError> {
    let index = ifindex(ifname).ok_or_else(|| AttachError::UnknownInterface {
        ifname: ifname.into(),
    })?;
    if !pins.link_path(ifname).exists() {
        if let Some(what) = existing_xdp(ifname) {
            return Err(AttachError::Foreign {
                ifname: ifname.into(),
                what,
            });
        }
        return Ok(index);
    }
    let requested = match mode {
        XdpModeChoice::Auto => return Ok(index),
        XdpModeChoice::Driver => "driver",
        XdpModeChoice::Generic => "generic",
    };
    match attached_mode(ifname) {
        Some(running) if running != requested => Err(AttachError::ModeMismatch {
            ifname: ifname.into(),
            running,
            requested,
        }),
        _ => Ok(index),
    }
}

/// The mode of the XDP attachment on `ifname` according to iproute2 (`IFLA_XDP_ATTACHED`).
pub fn attached_mode(ifname: &str) -> Option<&'static str> {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", ifname])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    // XDP_ATTACHED_DRV, _SKB, _HW (include/uapi/linux/if_link.h).
    match json.get(0)?.get("xdp")?.get("mode")?.as_u64()? {
        1 => Some("driver"),
        2 => Some("generic"),
        3 => Some("offload"),
        _ => None,
    }
}

/// Interface name by index, in the current network namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    (!p.is_null()).then(|| {
        // SAFETY: on success p points into buf, NUL-terminated.
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
    /// Attach to `ifname` and pin the link, or adopt the link a previous loader pinned; then
    /// the same for the egress recorder, which a fresh attachment hooks with `egress_hook`
    /// (an adopted one keeps the form it was pinned with). When the egress side fails, a
    /// fresh XDP attachment is undone: nothing stays half-attached.
    pub fn attach(
        &mut self,
        pins: &PinLayout,
        ifname: &str,
        mode: XdpModeChoice,
        egress_hook: EgressHook,
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
                // Read once here: the link keeps the mode it was attached with.
                xdp_mode: attached_mode(ifname).unwrap_or("unknown"),
                egress: "",
                egress_hook,
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
                xdp_mode: how,
                egress: "",
                egress_hook,
                fallback_reason,
            }
        };
        let mut attached = attached;
        match self.attach_egress(pins, ifname, egress_hook) {
            Ok((how, hook)) => {
                attached.egress = how;
                attached.egress_hook = hook;
            }
            Err(err) => {
                if attached.how != "adopted" {
                    // Unpinning the only reference detaches the XDP program again.
                    let _ = std::fs::remove_file(&link_path);
                }
                return Err(err);
            }
        }
        self.maps_mut().register_iface(ifindex, ifname)?;
        Ok(attached)
    }

    /// Attach the flow recorder to `ifname`'s egress, or adopt the recorder a previous loader
    /// left there in whichever form the pins record (so a state pinned by a nodegate that
    /// chose clsact is never doubled by a TCX link, nor the other way round). Returns
    /// "attached"/"adopted" and the form.
    fn attach_egress(
        &mut self,
        pins: &PinLayout,
        ifname: &str,
        fresh: EgressHook,
    ) -> Result<(&'static str, EgressHook), AttachError> {
        match pins.egress_hook(ifname) {
            Some(EgressHook::Tcx) => self.adopt_tcx(pins, ifname).map(|h| (h, EgressHook::Tcx)),
            Some(EgressHook::Clsact) => self
                .attach_clsact(pins, ifname, true)
                .map(|h| (h, EgressHook::Clsact)),
            None => match fresh {
                EgressHook::Tcx => self.attach_tcx(pins, ifname).map(|h| (h, EgressHook::Tcx)),
                EgressHook::Clsact => self
                    .attach_clsact(pins, ifname, false)
                    .map(|h| (h, EgressHook::Clsact)),
            },
        }
    }

    /// Adopt the pinned TCX link: bpf_link_update swaps the program, with no instant
    /// without a recorder.
    fn adopt_tcx(&mut self, pins: &PinLayout, ifname: &str) -> Result<&'static str, AttachError> {
        let path = pins.egress_link_path(ifname);
        let pinned =
            PinnedLink::from_pin(&path).map_err(|e| egress_pin_err("open pinned", ifname, &e))?;
        let fd_link: FdLink = pinned.into();
        let link = fd_link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| egress_pin_err("adopt", ifname, &e))?;
        let id = self
            .egress_program()
            .attach_to_link(link)
            .map_err(|source| egress_attach_err(ifname, "tc egress (tcx) adopt", source))?;
        // The pin keeps the kernel link; our handle may go.
        let _ = self.egress_program().take_link(id);
        Ok("adopted")
    }

    /// A new TCX link (6.6+), pinned. TCX needs no qdisc; the recorder returns `TCX_NEXT`,
    /// so other TC programs on the interface keep running after it.
    fn attach_tcx(&mut self, pins: &PinLayout, ifname: &str) -> Result<&'static str, AttachError> {
        let id = self
            .egress_program()
            .attach_with_options(
                ifname,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|source| egress_attach_err(ifname, "tc egress (tcx)", source))?;
        let link = self
            .egress_program()
            .take_link(id)
            .map_err(|e| egress_pin_err("take", ifname, &e))?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| egress_pin_err("convert", ifname, &e))?;
        fd_link
            .pin(pins.egress_link_path(ifname))
            .map_err(|e| egress_pin_err("pin", ifname, &e))?;
        Ok("attached")
    }

    /// The clsact form (every kernel): a direct-action BPF filter on the interface's clsact
    /// egress hook at [`CLSACT_PRIORITY`]/[`CLSACT_HANDLE`]. The filter lives in the qdisc,
    /// not in this process, so it keeps recording after nodegate exits; a marker directory
    /// in the pins records the form. Adoption replaces the filter's program in place
    /// (RTM_NEWTFILTER without NLM_F_EXCL: cls_bpf swaps the program under RCU, no gap); a
    /// filter that vanished under us (qdisc deleted) is created again, with a warning.
    fn attach_clsact(
        &mut self,
        pins: &PinLayout,
        ifname: &str,
        adopt: bool,
    ) -> Result<&'static str, AttachError> {
        if adopt {
            let link = SchedClassifierLink::attached(
                ifname,
                TcAttachType::Egress,
                CLSACT_PRIORITY,
                TcHandle::new(0, CLSACT_HANDLE),
                None,
            )
            .map_err(|e| egress_pin_err("find clsact filter", ifname, &e))?;
            match self.egress_program().attach_to_link(link) {
                Ok(id) => {
                    self.forget_clsact_link(id);
                    return Ok("adopted");
                }
                // ENOENT: the filter is gone; EINVAL ("Parent Qdisc doesn't exists"): the
                // whole clsact qdisc is, as on an interface deleted and created again.
                Err(err)
                    if is_netlink_errno(&err, libc::ENOENT)
                        || is_netlink_errno(&err, libc::EINVAL) =>
                {
                    tracing::warn!(iface = %ifname, "the flow recorder's clsact filter was gone (qdisc or filter deleted, or the interface re-created); attaching it again");
                }
                Err(source) => {
                    return Err(egress_attach_err(
                        ifname,
                        "tc egress (clsact) adopt",
                        source,
                    ))
                }
            }
        }
        // Marker first: a crash between the two leaves a marker without a filter, which the
        // next start re-creates, never a filter nobody knows of.
        let marker = pins.clsact_marker(ifname);
        std::fs::create_dir_all(&marker)
            .map_err(|e| egress_pin_err("create clsact marker", ifname, &e))?;
        let result = self.create_clsact_filter(ifname);
        if result.is_err() && !adopt {
            let _ = std::fs::remove_dir(&marker);
        }
        result.map(|()| "attached")
    }

    fn create_clsact_filter(&mut self, ifname: &str) -> Result<(), AttachError> {
        match tc::qdisc_add_clsact(ifname) {
            Ok(()) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(egress_pin_err("add clsact qdisc on", ifname, &e)),
        }
        let options = || {
            TcAttachOptions::Netlink(NlOptions {
                priority: CLSACT_PRIORITY,
                handle: TcHandle::new(0, CLSACT_HANDLE),
                classid: None,
            })
        };
        let first =
            self.egress_program()
                .attach_with_options(ifname, TcAttachType::Egress, options());
        let id = match first {
            Ok(id) => id,
            Err(err) if is_netlink_errno(&err, libc::EEXIST) => {
                // Our priority and handle are taken. A filter of ours whose marker is gone
                // (pins removed by hand) is replaced; anything else is not ours to touch.
                if tc::qdisc_detach_program(ifname, TcAttachType::Egress, EGRESS_PROGRAM).is_err() {
                    return Err(AttachError::Foreign {
                        ifname: ifname.into(),
                        what: format!(
                            "a tc egress filter at priority {CLSACT_PRIORITY} handle {CLSACT_HANDLE:#x}, where nodegate's flow recorder goes (see `tc filter show dev {ifname} egress`)"
                        ),
                    });
                }
                self.egress_program()
                    .attach_with_options(ifname, TcAttachType::Egress, options())
                    .map_err(|source| egress_attach_err(ifname, "tc egress (clsact)", source))?
            }
            Err(source) => return Err(egress_attach_err(ifname, "tc egress (clsact)", source)),
        };
        self.forget_clsact_link(id);
        Ok(())
    }

    /// Drop aya's handle on a netlink filter without detaching it (dropping a
    /// `SchedClassifierLink` that is still owned by the program would remove the filter when
    /// the program is dropped).
    fn forget_clsact_link(&mut self, id: aya::programs::tc::SchedClassifierLinkId) {
        if let Ok(link) = self.egress_program().take_link(id) {
            std::mem::forget(link);
        }
    }

    pub(crate) fn attach_new(
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
    // `exists()` says "no" when the pins cannot be read at all: ask properly, so missing
    // privileges are not reported as "not attached".
    let attached = link_path.try_exists().map_err(|e| AttachError::Pin {
        action: "inspect",
        ifname: ifname.into(),
        detail: format!(
            "{}: {e}; removing a filter needs root (the pins are private to it)",
            link_path.display()
        ),
    })?;
    if !attached {
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
    if pins.clsact_marker(ifname).is_dir() {
        detach_clsact(ifname)?;
        let _ = std::fs::remove_dir(pins.clsact_marker(ifname));
    }
    if let (Some(index), Ok(mut maps)) =
        (ifindex(ifname), FilterMaps::open_pinned(&pins.maps_dir()))
    {
        maps.forget_iface(index);
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

/// Remove the flow recorder's clsact filter from `ifname` (the qdisc stays: other filters
/// may hang on it). An interface that is gone took its filters with it.
fn detach_clsact(ifname: &str) -> Result<(), AttachError> {
    if ifindex(ifname).is_none() {
        return Ok(());
    }
    match tc::qdisc_detach_program(ifname, TcAttachType::Egress, EGRESS_PROGRAM) {
        Ok(()) => Ok(()),
        Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(egress_pin_err("remove clsact filter from", ifname, &e)),
    }
}

fn egress_pin_err(action: &'static str, ifname: &str, e: &dyn std::fmt::Display) -> AttachError {
    AttachError::Pin {
        action,
        ifname: ifname.into(),
        detail: format!("egress: {e}"),
    }
}

fn egress_attach_err(ifname: &str, mode: &'static str, source: ProgramError) -> AttachError {
    AttachError::Attach {
        ifname: ifname.into(),
        mode,
        source: Box::new(source),
    }
}

fn is_netlink_errno(err: &ProgramError, errno: i32) -> bool {
    matches!(err, ProgramError::TcError(TcError::NetlinkError(e)) if e.raw_os_error() == Some(errno))
}

/// The TC egress programs on `ifname` (in this network namespace), by form: TCX links (where
/// the kernel has TCX) and clsact filters (as iproute2's `tc` lists them). What `stats`
/// shows and the tests check, so both forms are seen the same way.
pub fn egress_programs(ifname: &str) -> Vec<(EgressHook, String)> {
    let mut found = Vec::new();
    if let Ok((_, programs)) =
        aya::programs::SchedClassifier::query_tcx(ifname, TcAttachType::Egress)
    {
        found.extend(
            programs
                .iter()
                .map(|p| (EgressHook::Tcx, p.name_as_str().unwrap_or("?").to_string())),
        );
    }
    let filters = Command::new("tc")
        .args(["-j", "filter", "show", "dev", ifname, "egress"])
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok());
    if let Some(serde_json::Value::Array(filters)) = filters {
        found.extend(filters.iter().filter_map(|f| {
            let name = f.get("options")?.get("bpf_name")?.as_str()?;
            Some((EgressHook::Clsact, name.to_string()))
        }));
    }
    found
}
