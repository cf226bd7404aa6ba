//! The fuzz targets' entry points (`fuzz/`, run by `cargo xtask fuzz`), here so that the
//! regression test (`tests/fuzz_regressions.rs`) replays every input a fuzzer ever broke
//! something with through exactly the same code. Each takes arbitrary bytes and panics on
//! a bug: a crash, or an oracle that does not hold.

use std::{cell::RefCell, sync::LazyLock};

use crate::{
    config::{parse_str_with, LoadOptions},
    model::Model,
    policy::{DefaultAction, Essentials, Fragments, Mode, Policy, ReturnTraffic},
    replay::{parse_capture, snap, LoadedPolicy, Replayer},
};

/// The rule set of TESTCASES.md, which the frame targets judge with.
const FIXTURE: &str = include_str!("../tests/fixtures/testcases.yaml");

fn options() -> LoadOptions {
    LoadOptions::fixed_ephemeral(32768..=60999)
}

fn fixture() -> Policy {
    parse_str_with("testcases.yaml", FIXTURE, &options())
        .expect("the fixture loads")
        .policy
}

/// The fixture and four variants covering the policy switches, by name: what the
/// differential test's corpus run judges real traffic with, and what `kernel_vs_model`
/// picks from with its first byte.
pub fn rule_sets() -> Vec<(&'static str, Policy)> {
    let mut monitor = fixture();
    monitor.mode = Mode::Monitor;
    let mut open = fixture();
    open.default = DefaultAction::Pass;
    open.ipv4_options_allow = true;
    open.unknown_ethertypes_pass = true;
    open.return_traffic = ReturnTraffic::Off;
    let mut strict = fixture();
    strict.essentials = Essentials {
        arp: false,
        neighbor_discovery: false,
        icmp_errors: false,
    };
    strict.fragments = Fragments::Drop;
    strict.return_traffic = ReturnTraffic::Off;
    let mut stateful = fixture();
    stateful.return_traffic = ReturnTraffic::Stateful;
    vec![
        ("enforce", fixture()),
        ("monitor", monitor),
        ("open (default pass, options, ethertypes)", open),
        ("strict (no essentials, fragments drop)", strict),
        ("stateful (empty flow table)", stateful),
    ]
}

/// Config text → `check`'s front end: any text is accepted or rejected with diagnostics,
/// never a panic, an overflow or a hang.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = parse_str_with("fuzz.yaml", text, &options()) {
            // Every diagnostic renders with its position.
            let _ = e.to_string();
        }
    }
}

/// Capture bytes → frames, and each frame as on the wire: never a panic.
pub fn capture(data: &[u8]) {
    if let Ok(capture) = parse_capture(data) {
        for frame in &capture.frames {
            assert!(frame.original_len >= frame.data.len());
            let _ = snap::as_on_the_wire(&frame.data, frame.original_len);
        }
    }
}

static MODEL: LazyLock<Model> = LazyLock::new(|| Model::new(&fixture()));

/// A frame → the reference model's verdict; and the snap-length oracle: the frame cut
/// anywhere after [`snap::headers_end`] and padded back is judged exactly as the whole.
pub fn model(data: &[u8]) {
    let whole = MODEL.judge(data);
    let Some(end) = snap::headers_end(data) else {
        return;
    };
    if end >= data.len() {
        return;
    }
    if let Some(padded) = snap::as_on_the_wire(&data[..end], data.len()) {
        let cut = MODEL.judge(&padded);
        assert_eq!(
            (cut.pass, cut.reason, &cut.rule),
            (whole.pass, whole.reason, &whole.rule),
            "a frame cut after its headers ({end} of {} bytes) is judged differently",
            data.len()
        );
    }
}

thread_local! {
    /// One loaded program per rule set, for the life of the process (a fuzzer runs one
    /// input after another on one thread).
    static JUDGES: RefCell<Vec<Replayer<'static>>> = RefCell::new(
        rule_sets()
            .iter()
            .map(|(_, policy)| {
                let loaded: &'static mut LoadedPolicy = Box::leak(Box::new(
                    LoadedPolicy::load_on(policy, None)
                        .expect("load the XDP program (the kernel target needs root)"),
                ));
                Replayer::with_kernel(policy, loaded, 1).expect("read the counters")
            })
            .collect(),
    );
}

/// The first byte picks a rule set, the rest is a frame: `BPF_PROG_TEST_RUN` and the
/// reference model must agree on verdict, reason and rule (needs root).
pub fn kernel_vs_model(data: &[u8]) {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    JUDGES.with(|judges| {
        let mut judges = judges.borrow_mut();
        let n = judges.len();
        let judge = &mut judges[usize::from(pick) % n];
        // Each input is a trace of its own: a first fragment an earlier input recorded must
        // not decide this one (the kernel forgets it after FRAG_TIMEOUT_NS, the model never).
        judge.clear_fragments().expect("empty the fragment tables");
        let result = judge.frame(frame).expect("BPF_PROG_TEST_RUN");
        if let Some(d) = result.disagreement {
            panic!(
                "kernel and model disagree on a {}-byte frame: {d:?}",
                frame.len()
            );
        }
    });
}

/// Seed frames for the frame targets: generated Kubernetes-node traffic of every category.
pub fn seed_frames(count: usize) -> Vec<Vec<u8>> {
    crate::traffic::generate(&crate::traffic::Profile::default(), count, 1)
        .into_iter()
        .map(|g| g.data)
        .collect()
}
