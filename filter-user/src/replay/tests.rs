use filter_common::Reason;

use super::*;
use crate::{
    craft::Frame,
    policy::{Mode, Policy, Protocol, Rule, RuleKind},
};

fn policy() -> Policy {
    Policy {
        rules: vec![Rule {
            name: "https".into(),
            kind: RuleKind::Allow,
            sources: vec!["192.0.2.0/24".parse().unwrap()],
            protocol: Protocol::Tcp,
            keys: vec![443..=443],
            interfaces: Vec::new(),
        }],
        ..Policy::default()
    }
}

#[test]
fn jsonl_lines_have_the_spec_keys_in_order() {
    let mut replay = Replayer::model_only(&policy());
    let pass = replay
        .frame(
            &Frame::tcp(
                "192.0.2.9".parse().unwrap(),
                "10.1.1.1".parse().unwrap(),
                40000,
                443,
            )
            .syn()
            .build(),
        )
        .unwrap();
    let drop = replay
        .frame(
            &Frame::udp(
                "198.51.100.1".parse().unwrap(),
                "10.1.1.1".parse().unwrap(),
                1,
                53,
            )
            .build(),
        )
        .unwrap();
    let short = replay.frame(&[0u8; 10]).unwrap();
    assert_eq!(
        frame_json(&pass),
        r#"{"index":0,"verdict":"pass","reason":"allow-rule","rule":"https","would_drop":false}"#
    );
    assert_eq!(
        frame_json(&drop),
        r#"{"index":1,"verdict":"drop","reason":"no-source-match","rule":null,"would_drop":false}"#
    );
    assert_eq!(
        frame_json(&short),
        r#"{"index":2,"verdict":"drop","reason":"eth-truncated","rule":null,"would_drop":false}"#
    );
    let summary = replay.finish(&[]).unwrap();
    assert_eq!(
        (
            summary.frames,
            summary.model_only_frames,
            summary.kernel_frames
        ),
        (3, 3, 0)
    );
    assert_eq!(summary.verdicts["pass"], 1);
    assert_eq!(summary.verdicts["drop"], 2);
    assert_eq!(summary.rules["https"], 1);
    let line: serde_json::Value = serde_json::from_str(&summary_json(&summary)).unwrap();
    assert_eq!(line["summary"]["frames"], 3);
    assert_eq!(line["summary"]["reasons"]["no-source-match"], 1);
    assert_eq!(line["summary"]["disagreements"], serde_json::json!([]));
}

#[test]
fn fragments_are_tracked_in_capture_order() {
    let mut policy = policy();
    policy.rules[0].protocol = Protocol::Udp;
    policy.rules[0].keys = vec![53..=53];
    let src = "192.0.2.9".parse().unwrap();
    let dst = "10.1.1.1".parse().unwrap();
    let first = Frame::udp(src, dst, 5353, 53)
        .payload(&[0; 64])
        .ipv4_fragment(0, true, 7)
        .build();
    let second = Frame::ip_proto(src, dst, 17, &[0; 64])
        .ipv4_fragment(9, false, 7)
        .build();
    let mut replay = Replayer::model_only(&policy);
    assert_eq!(replay.frame(&first).unwrap().answer.reason, "allow-rule");
    assert_eq!(
        replay.frame(&second).unwrap().answer.reason,
        Reason::FragmentTracked.name()
    );
}

#[test]
fn monitor_mode_passes_would_drops() {
    let mut policy = policy();
    policy.mode = Mode::Monitor;
    let mut replay = Replayer::model_only(&policy);
    let r = replay
        .frame(
            &Frame::udp(
                "198.51.100.1".parse().unwrap(),
                "10.1.1.1".parse().unwrap(),
                1,
                53,
            )
            .build(),
        )
        .unwrap();
    assert_eq!(
        (r.answer.verdict, r.answer.reason, r.answer.would_drop),
        ("pass", "no-source-match", true)
    );
}

/// The helper programs load, run and attach; the live-frames generator delivers through a
/// veth pair of a private lab (no nodegate program needed).
#[cfg(feature = "privileged-tests")]
mod privileged {
    use std::time::Duration;

    use crate::{
        lab::{in_netns, Lab, LabAddrs},
        loader::attach::ifindex,
        replay::{
            live::{rx_packets, settle, Generator, LiveOptions, LIVE_FRAMES, PACKET_SOCKET},
            rawbpf::{action, RawProgram},
        },
    };

    #[test]
    fn raw_programs_return_their_constant() {
        let frame = crate::craft::Frame::udp(
            "192.0.2.9".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            9,
            9,
        )
        .pad_to(64)
        .build();
        for (prog, want) in [
            (RawProgram::pass(), action::PASS),
            (RawProgram::drop_all(), action::DROP),
        ] {
            let run = prog.expect("load").test_run(&frame, 100).expect("test run");
            assert_eq!(run.retval, want);
            assert!(run.duration < Duration::from_micros(50));
        }
    }

    /// `copies` copies of a UDP frame from the generator `make` builds on the peer end of
    /// a private lab, to a bare `XDP_DROP` on the node end: what was sent and how many
    /// frames the receiver's XDP hook saw.
    fn through_a_lab(
        make: impl FnOnce(u32) -> Result<Generator, crate::replay::live::LiveError> + Send,
        copies: u64,
    ) -> (crate::replay::live::Sent, u64) {
        let lab = Lab::new("gen", LabAddrs::default()).unwrap();
        let drop = RawProgram::drop_all().unwrap();
        let node_ifindex = lab.node_ifindex().unwrap();
        let _link = in_netns(&lab.node_ns, || drop.attach_xdp(node_ifindex))
            .unwrap()
            .expect("attach drop");
        let frame = crate::craft::Frame::udp(
            "198.18.0.1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            9,
            9,
        )
        .pad_to(64)
        .build();
        let before = rx_packets(&lab.node_ns, &lab.node_if).unwrap();
        let sent = in_netns(&lab.peer_ns, || {
            let generator = make(ifindex(&lab.peer_if).unwrap()).unwrap();
            generator.send(
                &[&frame],
                &LiveOptions {
                    loops: copies,
                    ..Default::default()
                },
                &mut |_| {},
            )
        })
        .unwrap()
        .unwrap();
        let after = settle(
            || rx_packets(&lab.node_ns, &lab.node_if),
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(sent.frames, copies);
        (sent, after - before)
    }

    /// The generator takes live frames where the kernel runs them, the AF_PACKET socket
    /// where it refuses them (EPERM, as locked-down sandbox kernels answer), and either
    /// way its frames reach the other end's XDP hook.
    #[test]
    fn the_generator_crosses_the_veth_pair_with_the_engine_the_kernel_allows() {
        let allowed = RawProgram::transmit()
            .unwrap()
            .live_frames_allowed()
            .expect("the probe gets EPERM or ENODEV");
        let (sent, delivered) = through_a_lab(Generator::new, 1_000_000);
        assert_eq!(
            sent.engine,
            if allowed { LIVE_FRAMES } else { PACKET_SOCKET },
            "live frames allowed: {allowed}"
        );
        assert!(delivered > 1000, "delivered {delivered} of 1000000");
    }

    /// The AF_PACKET engine, chosen whatever the kernel allows: every copy is one frame at
    /// the receiver (its sends return once the veth took the frame, and the receiver drains
    /// its ring at each send's end; a sliver is allowed for a ring full under load).
    #[test]
    fn the_packet_socket_engine_delivers_its_copies() {
        let (sent, delivered) = through_a_lab(|i| Generator::packet_socket(i, &[]), 200_000);
        assert_eq!(sent.engine, PACKET_SOCKET);
        assert!(
            (199_000..=200_000).contains(&delivered),
            "delivered {delivered} of 200000"
        );
    }

    fn eks_policy() -> crate::policy::Policy {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/eks-node.yaml");
        crate::config::load_file_with(
            path,
            &crate::config::LoadOptions::fixed_ephemeral(32768..=60999),
        )
        .expect("example loads")
        .policy
    }

    #[test]
    fn generated_traffic_replays_through_the_kernel_without_disagreement() {
        let policy = eks_policy();
        let frames = crate::traffic::generate(&crate::traffic::Profile::default(), 3000, 9);
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.data.as_slice()).collect();
        let mut loaded = crate::replay::LoadedPolicy::load(&policy).expect("load and publish");
        let mut replay = crate::replay::Replayer::with_kernel(&policy, &mut loaded, 1).unwrap();
        for frame in &refs {
            replay.frame(frame).unwrap();
        }
        let summary = replay.finish(&refs).unwrap();
        assert_eq!(summary.disagreements, vec![], "kernel and model disagree");
        assert!(summary.kernel_frames > 2900);
        let timing = summary.timing.expect("timed");
        assert!(timing.nodegate_ns > 0.0 && timing.empty_xdp_ns > 0.0);
    }

    /// Jumbo frames go through the kernel (XDP frags); only a frame too long for any XDP
    /// program (more than 17 pages) is left to the model.
    #[test]
    fn long_frames_are_judged_by_the_kernel_too() {
        let policy = super::policy();
        let frame = |len: usize| {
            crate::craft::Frame::udp(
                "192.0.2.9".parse().unwrap(),
                "10.1.1.1".parse().unwrap(),
                40000,
                53,
            )
            .pad_to(len)
            .build()
        };
        let frames = [frame(1500), frame(9000), frame(65_000), frame(80_000)];
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let mut loaded = crate::replay::LoadedPolicy::load(&policy).expect("load and publish");
        let mut replay = crate::replay::Replayer::with_kernel(&policy, &mut loaded, 0).unwrap();
        for frame in &refs {
            let r = replay.frame(frame).unwrap();
            assert_eq!(r.answer.reason, "no-rule-match", "{} bytes", frame.len());
        }
        let summary = replay.finish(&refs).unwrap();
        assert_eq!(summary.disagreements, vec![]);
        assert_eq!(
            (summary.kernel_frames, summary.model_only_frames),
            (3, 1),
            "1500, 9000 and 65000 bytes through the kernel; 80000 refused"
        );
    }

    /// `replay --on-iface`: the kernel (through the loopback standing in for the interface)
    /// and the model both use that interface's settings.
    #[test]
    fn replay_on_an_interface_uses_its_settings() {
        let mut policy = super::policy();
        policy.interfaces.insert(
            "ng-mon0".into(),
            crate::policy::InterfaceSettings {
                mode: Some(crate::policy::Mode::Monitor),
                default: None,
            },
        );
        let stranger = crate::craft::Frame::tcp(
            "198.51.100.7".parse().unwrap(),
            "10.1.1.1".parse().unwrap(),
            40000,
            443,
        )
        .syn()
        .build();
        for (iface, verdict) in [
            (Some("ng-mon0"), "pass"),
            (Some("ng-other0"), "drop"),
            (None, "drop"),
        ] {
            let mut loaded =
                crate::replay::LoadedPolicy::load_on(&policy, iface).expect("load and publish");
            let mut replay = crate::replay::Replayer::with_kernel(&policy, &mut loaded, 0).unwrap();
            let r = replay.frame(&stranger).unwrap();
            assert_eq!(
                (r.answer.verdict, r.answer.reason, r.disagreement.is_none()),
                (verdict, "no-source-match", true),
                "on {iface:?}"
            );
            let model_only = crate::replay::Replayer::model_only_on(&policy, iface)
                .frame(&stranger)
                .unwrap();
            assert_eq!(
                model_only.answer.verdict, verdict,
                "model only, on {iface:?}"
            );
        }
    }

    #[test]
    fn live_replay_in_a_lab_counts_every_frame() {
        let policy = eks_policy();
        let frames = crate::traffic::generate(&crate::traffic::Profile::default(), 500, 4);
        let refs: Vec<&[u8]> = frames
            .iter()
            .map(|f| f.data.as_slice())
            .filter(|f| f.len() >= crate::replay::MIN_FRAME)
            .collect();
        let report = crate::replay::live::replay_in_lab(
            &policy,
            &refs,
            &LiveOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.sent, refs.len() as u64);
        assert!(report.delivered >= report.sent * 9 / 10, "{report:?}");
        assert_eq!(report.passed + report.dropped, report.delivered);
    }
}
