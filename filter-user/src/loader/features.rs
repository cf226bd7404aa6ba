//! What the running kernel offers, found by probing rather than by comparing version
//! numbers (distribution kernels backport features, and a version says nothing about a
//! kernel built without BTF), and the attach mechanisms chosen from it.
//!
//! Every probe is read-only or loads a throw-away program; none attaches anything:
//! - `bpf_xdp_load_bytes` and the ring buffer: aya's helper and map probes (a trivial
//!   program or map is loaded and freed);
//! - TCX links: `BPF_PROG_QUERY` for `BPF_TCX_EGRESS` on the loopback device (EINVAL where the
//!   attach type does not exist, 6.6+);
//! - XDP links: the `bpf_xdp_link` type in the kernel's own BTF (5.9+);
//! - BTF: `/sys/kernel/btf/vmlinux` parses.
//!
//! [`KernelFeatures::require`] is called before anything in the kernel changes, so a kernel
//! that lacks something without a fallback gets one error naming the feature, the kernel found
//! and the minimum, and no half-attached filter.

use std::fmt;

use aya::{
    maps::MapType,
    programs::{ProgramType, SchedClassifier, TcAttachType},
    sys::{is_helper_supported, is_map_supported, BpfHelper},
    Btf,
};
use aya_obj::btf::BtfKind;

/// How the TC egress flow recorder (stateful return traffic) is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressHook {
    /// A TCX bpf_link (6.6+), pinned; adoption swaps the program with `bpf_link_update`.
    Tcx,
    /// A classic `clsact` qdisc with a direct-action BPF filter, created over netlink at a
    /// fixed priority and handle; adoption replaces the filter's program in place.
    Clsact,
}

impl EgressHook {
    /// Lower-case name, as logged and shown by `stats`.
    pub fn name(self) -> &'static str {
        match self {
            EgressHook::Tcx => "tcx",
            EgressHook::Clsact => "clsact",
        }
    }
}

impl fmt::Display for EgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--egress-attach`: which egress mechanism new attachments use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EgressChoice {
    /// TCX where the kernel has it, else clsact.
    #[default]
    Auto,
    /// TCX only (refused on kernels without it).
    Tcx,
    /// clsact + netlink filter, also where TCX exists.
    Clsact,
}

/// The outcome of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// The kernel has it.
    Yes,
    /// The kernel lacks it.
    No,
    /// The probe itself failed (e.g. missing privileges); treated as absent.
    Unknown,
}

impl Probe {
    fn from_result<E>(r: Result<bool, E>) -> Probe {
        match r {
            Ok(true) => Probe::Yes,
            Ok(false) => Probe::No,
            Err(_) => Probe::Unknown,
        }
    }

    /// Whether the feature can be used.
    pub fn present(self) -> bool {
        self == Probe::Yes
    }

    fn word(self) -> &'static str {
        match self {
            Probe::Yes => "yes",
            Probe::No => "no",
            Probe::Unknown => "unknown",
        }
    }
}

/// What the running kernel offers nodegate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// The kernel's BTF (`/sys/kernel/btf/vmlinux`).
    pub btf: Probe,
    /// XDP bpf_links (pinnable XDP attachments).
    pub xdp_links: Probe,
    /// TCX links for TC programs.
    pub tcx: Probe,
    /// The `bpf_xdp_load_bytes` helper, which the parser reads every header with.
    pub xdp_load_bytes: Probe,
    /// `BPF_MAP_TYPE_RINGBUF` (drop samples).
    pub ring_buffer: Probe,
}

/// A feature without a fallback is missing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "this kernel ({release}) lacks {feature}, which nodegate needs and has no fallback for \
     (first in Linux {since}); nodegate runs on Linux ≥ {minimum} (tested on 6.1, 6.12 and newer: \
     README \"Kernel compatibility\"). Nothing was attached or changed"
)]
pub struct MissingFeature {
    /// Kernel release found.
    pub release: String,
    /// What is missing.
    pub feature: &'static str,
    /// The mainline release that introduced it.
    pub since: &'static str,
    /// nodegate's minimum.
    pub minimum: &'static str,
    /// What to do instead of booting a newer kernel, when there is something.
    pub alternative: &'static str,
}

impl crate::hint::Hint for MissingFeature {
    fn hint(&self) -> Option<&str> {
        Some(if self.alternative.is_empty() {
            "boot a newer kernel"
        } else {
            self.alternative
        })
    }
}

/// The oldest mainline kernel with everything nodegate needs without a fallback
/// (`bpf_xdp_load_bytes`, 5.18).
pub const MINIMUM_KERNEL: &str = "5.18";

impl KernelFeatures {
    /// Probe the running kernel. Needs CAP_BPF (checked before by the caller); without it
    /// the program and map probes come back [`Probe::Unknown`].
    pub fn probe() -> KernelFeatures {
        let btf = Btf::from_sys_fs().ok();
        let btf_has_struct = |name: &str| match &btf {
            Some(btf) => Probe::from_result::<()>(Ok(btf
                .id_by_type_name_kind(name, BtfKind::Struct)
                .is_ok())),
            None => Probe::Unknown,
        };
        let xdp_load_bytes = Probe::from_result(is_helper_supported(
            ProgramType::Xdp,
            BpfHelper::BPF_FUNC_xdp_load_bytes,
        ));
        // Without BTF, XDP links are implied by bpf_xdp_load_bytes (5.9 before 5.18).
        let xdp_links = match btf_has_struct("bpf_xdp_link") {
            Probe::Unknown => xdp_load_bytes,
            known => known,
        };
        KernelFeatures {
            release: kernel_release(),
            btf: if btf.is_some() { Probe::Yes } else { Probe::No },
            xdp_links,
            tcx: probe_tcx(),
            xdp_load_bytes,
            ring_buffer: Probe::from_result(is_map_supported(MapType::RingBuf)),
        }
    }

    /// Refuse a kernel that lacks a feature without a fallback.
    pub fn require(&self) -> Result<(), MissingFeature> {
        let missing = |feature, since, alternative| MissingFeature {
            release: self.release.clone(),
            feature,
            since,
            minimum: MINIMUM_KERNEL,
            alternative,
        };
        if !self.xdp_load_bytes.present() {
            return Err(missing(
                "the bpf_xdp_load_bytes helper (every header read of the XDP parser)",
                "5.18",
                "boot a newer kernel (Ubuntu 22.04: the HWE kernel 6.8; Amazon Linux 2: AL2023)",
            ));
        }
        if !self.xdp_links.present() {
            return Err(missing(
                "XDP bpf_links (the pinned attachment that keeps enforcing after nodegate exits)",
                "5.9",
                "",
            ));
        }
        if !self.ring_buffer.present() {
            return Err(missing("the BPF ring buffer (drop samples)", "5.8", ""));
        }
        Ok(())
    }

    /// The egress mechanism new attachments use under `choice`, or why none fits.
    pub fn egress_hook(&self, choice: EgressChoice) -> Result<EgressHook, MissingFeature> {
        match choice {
            EgressChoice::Clsact => Ok(EgressHook::Clsact),
            EgressChoice::Auto if self.tcx.present() => Ok(EgressHook::Tcx),
            EgressChoice::Auto => Ok(EgressHook::Clsact),
            EgressChoice::Tcx if self.tcx.present() => Ok(EgressHook::Tcx),
            EgressChoice::Tcx => Err(MissingFeature {
                release: self.release.clone(),
                feature: "TCX links (asked for with --egress-attach tcx)",
                since: "6.6",
                minimum: "6.6 with --egress-attach tcx",
                alternative: "boot a newer kernel, or leave --egress-attach at auto: clsact works on every kernel",
            }),
        }
    }

    /// One line for logs and `stats`.
    pub fn summary(&self) -> String {
        format!(
            "kernel {}: bpf_xdp_load_bytes {}, xdp links {}, tcx {}, ring buffer {}, btf {}",
            self.release,
            self.xdp_load_bytes.word(),
            self.xdp_links.word(),
            self.tcx.word(),
            self.ring_buffer.word(),
            self.btf.word(),
        )
    }
}

/// `BPF_PROG_QUERY` of TCX egress on loopback: answers on 6.6+, EINVAL before.
fn probe_tcx() -> Probe {
    match SchedClassifier::query_tcx("lo", TcAttachType::Egress) {
        Ok(_) => Probe::Yes,
        Err(aya::programs::ProgramError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::EINVAL) =>
        {
            Probe::No
        }
        Err(_) => Probe::Unknown,
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(f: impl FnOnce(&mut KernelFeatures)) -> KernelFeatures {
        let mut k = KernelFeatures {
            release: "6.1.0-test".into(),
            btf: Probe::Yes,
            xdp_links: Probe::Yes,
            tcx: Probe::No,
            xdp_load_bytes: Probe::Yes,
            ring_buffer: Probe::Yes,
        };
        f(&mut k);
        k
    }

    #[test]
    fn a_kernel_without_tcx_gets_clsact_and_is_not_refused() {
        let k = features(|_| {});
        assert_eq!(k.require(), Ok(()));
        assert_eq!(k.egress_hook(EgressChoice::Auto), Ok(EgressHook::Clsact));
        assert_eq!(k.egress_hook(EgressChoice::Clsact), Ok(EgressHook::Clsact));
        let err = k.egress_hook(EgressChoice::Tcx).unwrap_err();
        assert!(err.to_string().contains("6.1.0-test"), "{err}");
        assert!(err.to_string().contains("6.6"), "{err}");
    }

    #[test]
    fn a_kernel_with_tcx_uses_it_unless_told_otherwise() {
        let k = features(|k| k.tcx = Probe::Yes);
        assert_eq!(k.egress_hook(EgressChoice::Auto), Ok(EgressHook::Tcx));
        assert_eq!(k.egress_hook(EgressChoice::Clsact), Ok(EgressHook::Clsact));
    }

    #[test]
    fn missing_features_without_fallback_are_named_with_kernel_and_minimum() {
        let k = features(|k| {
            k.release = "5.15.0-91-generic".into();
            k.xdp_load_bytes = Probe::No;
        });
        let err = k.require().unwrap_err().to_string();
        for needle in [
            "5.15.0-91-generic",
            "bpf_xdp_load_bytes",
            "5.18",
            "Nothing was attached",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
        let k = features(|k| k.ring_buffer = Probe::Unknown);
        assert!(k.require().unwrap_err().to_string().contains("ring buffer"));
    }

    #[test]
    fn summary_names_every_probe() {
        let s = features(|_| {}).summary();
        assert_eq!(
            s,
            "kernel 6.1.0-test: bpf_xdp_load_bytes yes, xdp links yes, tcx no, ring buffer yes, btf yes"
        );
    }
}
