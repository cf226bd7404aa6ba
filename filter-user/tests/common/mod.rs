//! Shared set-up for the privileged tests.
#![allow(dead_code)]

use filter_user::loader::{Filter, LoadOptions};

pub mod daemon;
pub mod flows;

/// A test's deadline for waiting on something, stretched by `NODEGATE_TEST_TIME_SCALE`
/// (an integer; the kernel matrix sets it, since under an emulated CPU everything takes
/// about twenty times longer). Only waits are stretched, never the product's own timeouts.
pub fn patience(d: std::time::Duration) -> std::time::Duration {
    let scale = std::env::var("NODEGATE_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * scale
}

/// Privileged tests never skip: with the feature on they must run, so a missing privilege
/// is a failure with the fix in the message.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("privileged tests need root (BPF_PROG_TEST_RUN, XDP attach, netns); run `sudo -E cargo xtask test`");
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        panic!("bpffs is not mounted at /sys/fs/bpf; run `cargo xtask setup` (or `mount -t bpf bpf /sys/fs/bpf`)");
    }
}

/// A freshly loaded program with private (unpinned) maps.
pub fn load_private() -> Filter {
    require_root();
    Filter::load(&LoadOptions::default()).expect("load the XDP program")
}

/// Attach `filter` in driver mode to the lab's node interface (inside the node namespace).
pub fn attach_to_lab(
    filter: &mut Filter,
    lab: &filter_user::lab::Lab,
) -> aya::programs::xdp::XdpLinkId {
    let ifindex = lab.node_ifindex().expect("node interface index");
    filter_user::lab::in_netns(&lab.node_ns, || {
        filter
            .program()
            .attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)
    })
    .expect("enter the node namespace")
    .expect("attach in driver mode")
}
