//! Checking privileges up front, so a missing capability is one clear error before anything
//! is loaded or attached (never a half-attached filter).

/// CAP_NET_ADMIN (include/uapi/linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_PERFMON.
pub const CAP_PERFMON: u32 = 38;
/// CAP_BPF.
pub const CAP_BPF: u32 = 39;

/// Missing capabilities.
#[derive(Debug, thiserror::Error)]
#[error(
    "missing {missing}: nodegate needs CAP_BPF and CAP_NET_ADMIN (or root) to load and attach its XDP \
     program, and CAP_PERFMON as well to run it at full speed (and at all before 6.18)"
)]
pub struct MissingCapabilities {
    /// Names of the missing capabilities.
    pub missing: String,
}

impl crate::hint::Hint for MissingCapabilities {
    fn hint(&self) -> Option<&str> {
        Some(
            "run it as root, or grant them: `setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(which nodegate)` \
             (in Kubernetes: securityContext.capabilities.add: [BPF, NET_ADMIN, PERFMON])",
        )
    }
}

/// Effective capability set of this process.
fn effective_caps() -> u64 {
    // thread-self: capabilities belong to a thread (the tests drop them on one).
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0)
}

/// Whether this process holds CAP_PERFMON (or CAP_SYS_ADMIN, which implies it).
pub fn has_perfmon() -> bool {
    let caps = effective_caps();
    caps & ((1u64 << CAP_PERFMON) | (1u64 << CAP_SYS_ADMIN)) != 0
}

/// How the kernel runs the program this process loads: decided at load time by the
/// loader's privileges, the same object either way (identical verdicts and counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramVariant {
    /// Loaded with CAP_PERFMON: the verifier trusts the loader with speculative execution
    /// and adds nothing.
    Native,
    /// Loaded without CAP_PERFMON (6.18 and later accept that): the verifier adds Spectre
    /// v1 and v4 hardening (masked pointer arithmetic, speculation barriers after stack
    /// stores) to the program, which made it 3 to 5 times slower per packet on 6.18
    /// (docs/BENCHMARKS.md, cost per stage); it also reads the frame length and
    /// variable-offset headers with helpers (NG_PERFMON) and keeps its per-packet state in
    /// a per-CPU map value (filter-ebpf `scratch.rs`).
    Hardened,
}

impl ProgramVariant {
    /// The variant a load by this thread gets.
    pub fn of_this_process() -> ProgramVariant {
        if has_perfmon() {
            ProgramVariant::Native
        } else {
            ProgramVariant::Hardened
        }
    }

    /// Name in logs, `stats` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProgramVariant::Native => "native",
            ProgramVariant::Hardened => "spectre-hardened",
        }
    }

    /// The variant named `name` ([`ProgramVariant::name`]).
    pub fn from_name(name: &str) -> Option<ProgramVariant> {
        [ProgramVariant::Native, ProgramVariant::Hardened]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

/// Check for what loading and attaching needs.
pub fn check_attach_privileges() -> Result<(), MissingCapabilities> {
    check(effective_caps())
}

fn check(caps: u64) -> Result<(), MissingCapabilities> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    // CAP_PERFMON is not required: 6.18 loads the program without it, hardened against
    // Spectre v1 (the `hardened` variant, `ProgramVariant`); 6.1 and 6.12 refuse it, and
    // that load error gets its own hint.
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingCapabilities {
            missing: missing.join(", "),
        })
    }
}

/// Run `f` on a thread of its own that holds exactly `caps` (effective and permitted), and
/// return what it returns: how the tests and benches load the programs as a process with
/// fewer privileges would (capabilities belong to a thread; the caller keeps its own).
/// Needs the capabilities to drop to, i.e. root.
pub fn with_only<R: Send>(caps: &[u32], f: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                #[repr(C)]
                struct Header {
                    version: u32,
                    pid: i32,
                }
                #[repr(C)]
                #[derive(Clone, Copy, Default)]
                struct Data {
                    effective: u32,
                    permitted: u32,
                    inheritable: u32,
                }
                let header = Header {
                    version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                    pid: 0,
                };
                let mut data = [Data::default(); 2];
                for cap in caps {
                    let word = &mut data[(*cap / 32) as usize];
                    word.effective |= 1 << (cap % 32);
                    word.permitted |= 1 << (cap % 32);
                }
                // SAFETY: capset(2) with a valid v3 header and two data words; it changes
                // this thread's capabilities only.
                let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| std::io::Error::other("the capability-dropped thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_bpf_and_net_admin() {
        assert_eq!(check(0).unwrap_err().missing, "CAP_BPF, CAP_NET_ADMIN");
        let (bpf, net, sys) = (
            1u64 << CAP_BPF,
            1u64 << CAP_NET_ADMIN,
            1u64 << CAP_SYS_ADMIN,
        );
        assert_eq!(check(bpf).unwrap_err().missing, "CAP_NET_ADMIN");
        assert!(check(bpf | net).is_ok());
        // CAP_SYS_ADMIN implies CAP_BPF.
        assert!(check(sys | net).is_ok());
    }
}
