//! The XDP program attaches in driver mode to a veth end inside the lab's node namespace and
//! counts frames the peer namespace sends.
#![cfg(feature = "privileged-tests")]

mod common;

use filter_user::lab::{Lab, LabAddrs};

#[test]
fn driver_mode_attach_sees_peer_traffic() {
    let mut filter = common::load_private();
    let lab = Lab::new("smk", LabAddrs::default()).expect("create lab");
    let link = common::attach_to_lab(&mut filter, &lab);

    let sum_all = |filter: &filter_user::loader::Filter| -> u64 {
        filter
            .maps()
            .snapshot()
            .unwrap()
            .reasons
            .iter()
            .map(|r| r.packets)
            .sum()
    };
    let before = sum_all(&filter);
    let sender = lab.peer_sender().unwrap();
    let mut frame = vec![0xffu8; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x08, 0x06]);
    frame.extend_from_slice(&[0u8; 46]);
    for _ in 0..10 {
        sender.send(&frame).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = sum_all(&filter);
    assert!(
        after >= before + 10,
        "XDP saw {} of 10 frames",
        after - before
    );
    filter.program().detach(link).unwrap();
}
