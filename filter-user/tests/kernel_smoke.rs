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

/// Reloads of 110k entirely different prefixes each fit the default capacity, land in the
/// kernel exactly as compiled, and write only what differs: publishing the list a slot
/// already holds writes no table word at all.
#[test]
fn large_disjoint_reloads_fit_and_write_only_differences() {
    use filter_user::{
        compiler::{compile, RuleSlots},
        policy::{Policy, Protocol, Rule, RuleKind},
    };
    let list = |seed: u32| -> Policy {
        let v4 = (0..100_000u32).map(|i| {
            let a = std::net::Ipv4Addr::from((seed << 24) | (i << 5));
            ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, 27).unwrap())
        });
        let v6 = (0..10_000u32).map(|i| {
            let a = std::net::Ipv6Addr::new(0x2001, 0xdb8, seed as u16, i as u16, 0, 0, 0, 0);
            ipnet::IpNet::V6(ipnet::Ipv6Net::new(a, 64).unwrap())
        });
        Policy {
            rules: vec![Rule {
                name: "bulk".into(),
                kind: RuleKind::Allow,
                sources: v4.chain(v6).collect(),
                protocol: Protocol::Tcp,
                keys: vec![443..=443],
                interfaces: Vec::new(),
            }],
            ..Policy::default()
        }
    };
    let mut filter = common::load_private();
    let mut slots = RuleSlots::new();
    for (round, seed) in [11, 12, 13, 12, 12].into_iter().enumerate() {
        let tables = compile(&list(seed), &slots).expect("compiles");
        let report = filter
            .maps_mut()
            .publish(&tables)
            .unwrap_or_else(|e| panic!("publish of list {seed}: {e}"));
        slots.commit(&tables);
        println!(
            "list {seed}: slot {} wrote {} of {} words in {:?} (grace wait {:?}, {:?})",
            report.gen_slot,
            report.table_words_written,
            report.table_words,
            report.total,
            report.grace_wait,
            report.grace_method
        );
        assert_eq!(
            report.table_words,
            tables.v4_table.len() + tables.v6_table.len()
        );
        let (v4, v6) = filter.maps().read_tables(
            report.gen_slot,
            (tables.v4_table.len(), tables.v6_table.len()),
        );
        assert!(
            v4 == tables.v4_table && v6 == tables.v6_table,
            "list {seed} landed as compiled"
        );
        // Rounds alternate slots 0, 1, 0, 1, 0.
        match round {
            // Slot 1 has held list 12 since round 1: nothing differs.
            3 => assert_eq!(
                report.table_words_written, 0,
                "an unchanged slot is rewritten"
            ),
            // Slot 0 holds list 13.
            _ => assert!(report.table_words_written > 0),
        }
    }
}

/// The program's aya-log diagnostics reach userspace, at the level fixed at load: a corrupt
/// table (a class id past capacity, which the compiler never produces) makes the packet an
/// internal error, which drops fail-closed and logs one error record.
#[test]
fn internal_errors_are_logged_through_aya_log() {
    use std::sync::Mutex;

    use filter_user::{
        compiler::{compile, RuleSlots},
        config::{parse_str_with, LoadOptions as ConfigOptions},
        craft::Frame,
        loader::{testrun::XdpAction, Filter, LoadOptions},
    };

    struct Capture(Mutex<Vec<String>>);
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
        fn flush(&self) {}
    }

    common::require_root();
    let run = |level: u8| -> Vec<String> {
        let mut filter = Filter::load(&LoadOptions {
            bpf_log_level: level,
            ..LoadOptions::default()
        })
        .unwrap();
        let policy = parse_str_with(
            "t.yaml",
            include_str!("fixtures/testcases.yaml"),
            &ConfigOptions::fixed_ephemeral(32768..=60999),
        )
        .unwrap()
        .policy;
        let mut tables = compile(&policy, &RuleSlots::new()).unwrap();
        // Every IPv4 prefix answers a class past capacity.
        let mut corrupt: Vec<_> = tables
            .v4
            .iter()
            .map(|(net, _)| filter_user::compiler::lookup::TablePrefix {
                addr: u128::from(u32::from(net.addr())) << 96,
                len: net.prefix_len(),
                leaf: filter_common::lookup::entry::leaf(filter_common::MAX_CLASSES + 7),
            })
            .collect();
        tables.v4_table = filter_user::compiler::lookup::build(
            filter_user::compiler::lookup::Family::V4,
            &mut corrupt,
            filter_common::lookup::v4_root_bits(tables.gen_config.flags),
        );
        filter.maps_mut().publish(&tables).unwrap();
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let mut logger = aya_log::EbpfLogger::init_with_logger(filter.ebpf_mut(), capture)
            .expect("the object has a log ring");
        let frame = Frame::tcp(
            "10.0.0.5".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
            40000,
            443,
        )
        .syn()
        .build();
        let (action, _) = filter.test_run(&frame, 1).unwrap();
        assert_eq!(action, XdpAction::Drop, "internal errors fail closed");
        logger.flush();
        let lines = capture.0.lock().unwrap().clone();
        lines
    };
    let at_error = run(1);
    assert_eq!(at_error.len(), 1, "one record: {at_error:?}");
    assert!(
        at_error[0].starts_with("ERROR") && at_error[0].contains("internal error"),
        "{at_error:?}"
    );
    assert!(run(0).is_empty(), "level off (set at load) silences it");
}

/// The drop-sample token bucket: a full second's worth of samples at once, then one per
/// `1 / rate` as time passes, whatever the number of drops; its refills follow the clock at
/// tick resolution (samples.rs reads the clock only when a tick has begun).
#[test]
fn drop_samples_keep_to_their_rate() {
    use std::{net::IpAddr, time::Duration};

    use filter_user::{
        craft::Frame,
        policy::{Policy, Protocol, Rule, RuleKind},
        replay::LoadedPolicy,
    };
    const RATE: u64 = 20;
    // The bucket is per CPU: every test run of this test on one CPU, the one this thread is
    // on (always in its allowed set, whatever cpuset the runner gives the suite).
    // SAFETY: sched_getcpu has no preconditions; a zeroed cpu_set_t with one bit set, for
    // this thread.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let policy = Policy {
        rules: vec![Rule {
            name: "office".into(),
            kind: RuleKind::Allow,
            sources: vec!["10.0.0.0/8".parse().unwrap()],
            protocol: Protocol::Tcp,
            keys: vec![443..=443],
            interfaces: Vec::new(),
        }],
        samples_per_sec: RATE as u32,
        ..Policy::default()
    };
    let mut loaded = LoadedPolicy::load(&policy).unwrap();
    // From outside the set: dropped (`no-source-match`), so sampled.
    let dropped = Frame::tcp(
        IpAddr::from([198, 51, 100, 7]),
        IpAddr::from([192, 0, 2, 1]),
        40000,
        443,
    )
    .syn()
    .pad_to(64)
    .build();
    let emitted = |loaded: &LoadedPolicy| loaded.filter.maps().sample_counts().unwrap().0;
    let (action, took) = loaded.filter.test_run(&dropped, 20_000).unwrap();
    assert_eq!(action, XdpAction::Drop);
    // The full bucket, and at most what the run's own duration earned on top.
    let first = emitted(&loaded);
    let earned = (took.as_secs_f64() * 20_000.0 * RATE as f64).ceil() as u64;
    assert!(
        (RATE..=RATE + earned + 1).contains(&first),
        "{first} samples from 20,000 drops in {took:?} at {RATE}/s"
    );
    // Half a second later: about half a second's worth more, not another full bucket.
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    loaded.filter.test_run(&dropped, 20_000).unwrap();
    let waited = started.elapsed().as_secs_f64();
    let more = emitted(&loaded) - first;
    let expected = waited * RATE as f64;
    assert!(
        more as f64 >= expected - 2.0 && more as f64 <= (expected + 2.0).min(RATE as f64),
        "{more} samples after {waited:.3} s at {RATE}/s"
    );
}
