//! Shared set-up for the privileged tests.
#![allow(
    dead_code,
    reason = "each test crate includes this module and uses a different part of it"
)]

use std::fmt::Write as _;

use filter_user::compiler::{compile, RuleSlots, Tables};
use filter_user::config::parse_str_with;
use filter_user::loader::{Filter, LoadOptions};
use filter_user::policy::Policy;

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
    load_with(LoadOptions::default())
}

/// The program variant the suites run against: `NODEGATE_TEST_VARIANT=spectre-hardened`
/// loads every program holding only CAP_BPF + CAP_NET_ADMIN, as a daemon without
/// CAP_PERFMON does (6.18+), so the same verdict and counter assertions check that variant;
/// unset (or `native`) loads as root. `cargo xtask test` runs the TESTCASES and
/// differential suites both ways.
pub fn test_variant() -> filter_user::loader::privileges::ProgramVariant {
    use filter_user::loader::privileges::ProgramVariant;
    match std::env::var("NODEGATE_TEST_VARIANT") {
        Err(_) => ProgramVariant::Native,
        Ok(name) => ProgramVariant::from_name(&name).unwrap_or_else(|| {
            panic!("NODEGATE_TEST_VARIANT={name}: expected native or spectre-hardened")
        }),
    }
}

/// Load with `options` as [`test_variant`] asks.
pub fn load_with(options: LoadOptions) -> Filter {
    use filter_user::loader::privileges::{with_only, ProgramVariant, CAP_BPF, CAP_NET_ADMIN};
    require_root();
    match test_variant() {
        ProgramVariant::Native => Filter::load(&options).expect("load the XDP program"),
        ProgramVariant::Hardened => with_only(&[CAP_BPF, CAP_NET_ADMIN], || {
            // Checked on the loading thread: the variant the kernel applied.
            assert_eq!(ProgramVariant::of_this_process(), ProgramVariant::Hardened);
            Filter::load(&options)
        })
        .expect("drop to CAP_BPF + CAP_NET_ADMIN")
        .expect("load the XDP program without CAP_PERFMON (6.18 or later)"),
    }
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

/// The oldest kernel measured to load both programs with CAP_BPF + CAP_NET_ADMIN alone
/// (6.18). The kernel matrix measured 6.1 and 6.12 refusing them without CAP_PERFMON: their
/// verifiers reject, for an unprivileged-for-Spectre loader, code whose speculative paths run
/// past a buffer (aya-log's record copy, the header parser's stack use) where newer ones
/// fence such paths instead; kernels in between are not measured and are documented as
/// needing CAP_PERFMON.
pub const LEAST_PRIVILEGE_FROM: (u32, u32) = (6, 18);

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least((major, minor): (u32, u32)) -> bool {
    let release = filter_user::loader::features::kernel_release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let found = (
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0),
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0),
    );
    found >= (major, minor)
}

/// Send frames paced so the veth ring never overflows (every frame must reach XDP). A send
/// the kernel refuses for lack of buffer space (ENOBUFS: the frame was not queued, seen on
/// slow emulated kernels of the matrix) is retried after a pause, so every counted frame
/// was sent.
pub fn send_paced(sender: &filter_user::lab::RawSender, frame: &[u8], count: usize) {
    for i in 0..count {
        loop {
            match sender.send(frame) {
                Ok(()) => break,
                Err(filter_user::lab::LabError::Sys { source, .. })
                    if source.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("send a lab frame: {e}"),
            }
        }
        if i % 16 == 15 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// `text` validated as the config front end does, with the ephemeral port range pinned so
/// nothing depends on this machine's `ip_local_port_range`; `name` names it in errors.
pub fn policy_of(name: &str, text: &str) -> Policy {
    let options = filter_user::config::LoadOptions::fixed_ephemeral(32768..=60999);
    parse_str_with(name, text, &options)
        .unwrap_or_else(|e| panic!("{name} does not load:\n{e}\n--- text ---\n{text}"))
        .policy
}

/// A freshly loaded program (private maps) with `policy` compiled and published as its
/// active generation; the tables, for rule slot names and stats.
pub fn published(policy: &Policy) -> (Filter, Tables) {
    let mut filter = load_private();
    let mut slots = RuleSlots::new();
    let tables = compile(policy, &slots).expect("the policy compiles");
    filter
        .maps_mut()
        .publish(&tables)
        .expect("publish the generation");
    slots.commit(&tables);
    (filter, tables)
}

/// Hex of a frame, cut after 256 bytes (the headers are what matters).
pub fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 256;
    let mut s = bytes[..bytes.len().min(SHOWN)]
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
    if bytes.len() > SHOWN {
        let _ = write!(s, "… ({} more bytes)", bytes.len() - SHOWN);
    }
    s
}
