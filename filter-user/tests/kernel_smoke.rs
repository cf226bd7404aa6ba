//! The XDP program loads, runs under BPF_PROG_TEST_RUN, and counts.
#![cfg(feature = "privileged-tests")]

mod common;

use filter_common::Reason;
use filter_user::loader::testrun::{reason_counter, XdpAction};

fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0u8; 28]);
    f
}

#[test]
fn unconfigured_program_passes_and_counts_not_configured() {
    let mut filter = common::load_private();
    let before = reason_counter(filter.maps(), 0, Reason::NotConfigured, false).unwrap();
    let frame = arp_frame();
    let (action, _) = filter.test_run(&frame, 1).unwrap();
    assert_eq!(action, XdpAction::Pass);
    let after = reason_counter(filter.maps(), 0, Reason::NotConfigured, false).unwrap();
    assert_eq!(
        after.packets,
        before.packets + 1,
        "exactly one not-configured count"
    );
    assert_eq!(after.bytes, before.bytes + frame.len() as u64);
}
