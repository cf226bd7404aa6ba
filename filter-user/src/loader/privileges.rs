//! Checking privileges up front, so a missing capability is one clear error before anything
//! is loaded or attached (never a half-attached filter).

/// CAP_NET_ADMIN (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN.
const CAP_SYS_ADMIN: u32 = 21;
/// CAP_PERFMON.
const CAP_PERFMON: u32 = 38;
/// CAP_BPF.
const CAP_BPF: u32 = 39;

/// Missing capabilities.
#[derive(Debug, thiserror::Error)]
#[error(
    "missing {missing}: nodegate needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN) to load and attach \
     XDP programs; run it as root, or grant them: `setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(which nodegate)` \
     (in Kubernetes: securityContext.capabilities.add: [BPF, NET_ADMIN, PERFMON])"
)]
pub struct MissingCapabilities {
    /// Names of the missing capabilities.
    pub missing: String,
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
    // CAP_PERFMON is not checked here: whether the verifier needs it depends on the kernel
    // (6.18 does not, 6.1 and 6.12 do); a load refused for lack of it gets its own hint.
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingCapabilities {
            missing: missing.join(" and "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_bpf_and_net_admin() {
        assert!(check(0)
            .unwrap_err()
            .missing
            .contains("CAP_BPF and CAP_NET_ADMIN"));
        assert!(check(1 << CAP_BPF).unwrap_err().missing == "CAP_NET_ADMIN");
        assert!(check((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)).is_ok());
        assert!(check((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_ok());
    }
}
