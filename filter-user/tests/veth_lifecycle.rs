//! TESTCASES §J on a real veth attach: reloads under traffic, set removal at the flip,
//! surviving SIGKILL/SIGTERM, adoption with counters continuing, detach, foreign programs,
//! metrics on loopback only, and every reload trigger (ConfigMap symlink swap, SIGHUP via
//! `nodegate reload`, bad files).
#![cfg(feature = "privileged-tests")]

mod common;

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::daemon::{metric, reason_total, rule_total, Env};
use filter_user::{
    compiler::{compile, compile_after, RuleSlots},
    config::{parse_str_with, LoadOptions as ConfigOptions},
    craft::Frame,
    lab::{in_netns, Lab, LabAddrs, RawSender},
};

const FIXTURE: &str = include_str!("fixtures/testcases.yaml");
const NODE: &str = "203.0.113.1";
/// Allowed flow frames are padded to this length, disallowed ones to another, so that byte
/// counters prove which flow every counted packet belonged to.
const ALLOWED_LEN: usize = 80;
const DISALLOWED_LEN: usize = 120;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn allowed_frame() -> Vec<u8> {
    Frame::tcp(ip("10.0.0.5"), ip(NODE), 40000, 10250)
        .syn()
        .pad_to(ALLOWED_LEN)
        .build()
}

fn disallowed_frame() -> Vec<u8> {
    Frame::tcp(ip("198.51.100.7"), ip(NODE), 40000, 10250)
        .syn()
        .pad_to(DISALLOWED_LEN)
        .build()
}

fn clients_frame() -> Vec<u8> {
    Frame::tcp(ip("192.0.2.9"), ip(NODE), 40000, 443)
        .syn()
        .build()
}

fn tables(yaml: &str, slots: &RuleSlots) -> filter_user::compiler::Tables {
    let loaded = parse_str_with(
        "test.yaml",
        yaml,
        &ConfigOptions::fixed_ephemeral(32768..=60999),
    )
    .expect("valid fixture");
    compile(&loaded.policy, slots).expect("compiles")
}

/// The fixture plus a rule over 100k random prefixes in 100.64.0.0/10 (where neither J31
/// flow's source is): a reload to or from it replaces 100k prefixes.
fn with_bulk(slots: &RuleSlots, seed: u64) -> filter_user::compiler::Compiled {
    let loaded = parse_str_with(
        "test.yaml",
        FIXTURE,
        &ConfigOptions::fixed_ephemeral(32768..=60999),
    )
    .expect("valid fixture");
    let mut policy = loaded.policy;
    let mut x = seed;
    let mut next = move || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^ (z >> 29)
    };
    let sources = (0..100_000)
        .map(|_| {
            let addr = 0x6440_0000 | (next() as u32 & 0x003f_ffff);
            let len = 16 + (next() % 17) as u8;
            ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(addr), len)
                    .unwrap()
                    .trunc(),
            )
        })
        .collect();
    policy.rules.push(filter_user::policy::Rule {
        name: "bulk".into(),
        kind: filter_user::policy::RuleKind::Allow,
        sources,
        protocol: filter_user::policy::Protocol::Udp,
        keys: vec![53..=53],
        interfaces: Vec::new(),
    });
    let tables = compile(&policy, slots).expect("compiles");
    filter_user::compiler::Compiled { policy, tables }
}

/// The fixture without the `clients` set and its rule.
fn fixture_without_clients() -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in FIXTURE.lines() {
        let t = line.trim_start();
        if t.starts_with("clients:") {
            continue;
        }
        if t.starts_with("- name: clients-https") {
            skip = true;
            continue;
        }
        if skip && (t.starts_with("- name:") || !line.starts_with(' ')) {
            skip = false;
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The allowed and the disallowed flow, sent in alternating bursts from the peer until
/// stopped, counting what was sent.
/// Disallowed frames in bursts of 16 until stopped: a flow every packet of which must be
/// judged (dropped as no-source-match) while the filter's owner changes.
struct DroppedFlow {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl DroppedFlow {
    fn start(env: &Env) -> DroppedFlow {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            let sender = env.lab.peer_sender().unwrap();
            std::thread::spawn(move || {
                let frame = disallowed_frame();
                while !stop.load(Ordering::Relaxed) {
                    common::send_paced(&sender, &frame, 16);
                    sent.fetch_add(16, Ordering::Relaxed);
                }
            })
        };
        DroppedFlow { stop, sent, thread }
    }

    /// Stop, let the last frames be judged, and return how many were sent.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        self.sent.load(Ordering::Relaxed)
    }
}

/// Start a daemon on `config` while a dropped flow runs, and stop the flow once it has
/// attached: (the daemon, frames sent meanwhile, every one of which must be judged).
fn start_under_traffic(env: &Env, config: &std::path::Path) -> (common::daemon::Daemon, u64) {
    let traffic = DroppedFlow::start(env);
    let daemon = env.start_daemon(config, &[]);
    daemon.wait_for_log("attached", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    (daemon, traffic.stop())
}

/// The pinned control word (which generation slot packets read).
fn control_word(env: &Env) -> filter_common::Control {
    filter_user::loader::FilterMaps::open_pinned(&env.pins.maps_dir())
        .unwrap()
        .control()
        .unwrap()
}

struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<(AtomicU64, AtomicU64)>,
    thread: std::thread::JoinHandle<()>,
}

impl Traffic {
    fn start(sender: RawSender, burst: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let (good, bad) = (allowed_frame(), disallowed_frame());
                while !stop.load(Ordering::Relaxed) {
                    common::send_paced(&sender, &good, burst);
                    sent.0.fetch_add(burst as u64, Ordering::Relaxed);
                    common::send_paced(&sender, &bad, burst);
                    sent.1.fetch_add(burst as u64, Ordering::Relaxed);
                }
            })
        };
        Traffic { stop, sent, thread }
    }

    /// Stop sending; (allowed, disallowed) frames sent.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        (
            self.sent.0.load(Ordering::Relaxed),
            self.sent.1.load(Ordering::Relaxed),
        )
    }
}

/// J31: 1,000 back-to-back reloads while an allowed and a disallowed flow run: zero drops of
/// the allowed flow, zero passes of the disallowed one. In-process, through the same
/// compile + publish path the daemon uses; every tenth reload switches to or between two
/// rule sets with 100k other prefixes (a 100k-prefix table replaced), and one in ten to an
/// incrementally compiled edit of the first of them. The generation counters account for
/// every packet exactly once.
#[test]
fn j31_reloads_under_traffic_never_misjudge() {
    let mut filter = common::load_private();
    let lab = Lab::new("j31", LabAddrs::default()).unwrap();
    let mut slots = RuleSlots::new();
    let a = tables(FIXTURE, &slots);
    // Same verdicts for both flows, different tables: an extra unrelated rule and set.
    let b_yaml = format!("{FIXTURE}  - name: unrelated-dns\n    from: [198.18.0.0/15]\n    protocol: udp\n    ports: [53]\n");
    filter.maps_mut().publish(&a).unwrap();
    slots.commit(&a);
    let b = tables(&b_yaml, &slots);
    let bulk = [with_bulk(&slots, 1), with_bulk(&slots, 2)];
    // The first bulk generation with a few of its prefixes replaced, compiled as an update
    // (`compile_after`): a table whose replaced subtrees stay behind as garbage.
    let mut edited = bulk[0].policy.clone();
    let sources = &mut edited.rules.last_mut().unwrap().sources;
    for (i, net) in ["100.127.255.0/24", "100.64.0.0/16", "100.100.1.128/25"]
        .iter()
        .enumerate()
    {
        sources[i * 1000] = net.parse().unwrap();
    }
    let edited = compile_after(&edited, &slots, bulk[0].previous()).unwrap();
    assert!(edited.incremental, "a three-prefix edit is an update");
    let link = common::attach_to_lab(&mut filter, &lab);

    let traffic = Traffic::start(lab.peer_sender().unwrap(), 8);
    let started = std::time::Instant::now();
    let (mut bulk_reloads, mut grace_waited) = (0, Duration::ZERO);
    for i in 0..1000 {
        let next = if i % 10 == 9 {
            bulk_reloads += 1;
            &bulk[(i / 10) % 2].tables
        } else if i % 10 == 4 {
            &edited
        } else if i % 2 == 0 {
            &b
        } else {
            &a
        };
        let report = filter.maps_mut().publish(next).unwrap();
        grace_waited += report.grace_wait;
        assert!(
            report.grace_method.is_some(),
            "every publish waited out the grace period of the flip before it"
        );
    }
    let reload_time = started.elapsed();
    let (good_sent, bad_sent) = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));

    let snap = filter.maps().snapshot().unwrap();
    let allow = reason_total(&snap, "allow-rule");
    let deny = reason_total(&snap, "no-source-match");
    println!("1000 reloads ({bulk_reloads} of them replacing 100k prefixes, 100 an incrementally compiled bulk table) in {reload_time:?}, {grace_waited:?} of it blocked on grace periods; sent {good_sent} allowed / {bad_sent} disallowed; counted {allow:?} / {deny:?}; per generation slot {:?}", snap.generations);
    assert_eq!(
        snap.generations.iter().sum::<u64>(),
        good_sent + bad_sent,
        "every packet was judged by exactly one generation"
    );
    assert!(
        good_sent > 1000 && bad_sent > 1000,
        "traffic ran during the reloads"
    );
    // Byte counters prove which flow each counted packet came from.
    assert_eq!(
        allow.1,
        allow.0 * ALLOWED_LEN as u64,
        "a disallowed packet passed"
    );
    assert_eq!(
        deny.1,
        deny.0 * DISALLOWED_LEN as u64,
        "an allowed packet dropped"
    );
    assert_eq!(
        allow.0, good_sent,
        "every allowed packet passed as allow-rule"
    );
    assert_eq!(
        deny.0, bad_sent,
        "every disallowed packet dropped as no-source-match"
    );
    let others: Vec<_> = snap
        .reasons
        .iter()
        .filter(|r| r.reason != "allow-rule" && r.reason != "no-source-match")
        .collect();
    assert!(
        others.is_empty(),
        "no other verdict reason may appear: {others:?}"
    );
    filter.program().detach(link).unwrap();
}

/// J32: removing a set takes effect at the flip; generation counters show which generation
/// judged each packet.
#[test]
fn j32_set_removal_takes_effect_at_the_flip() {
    let mut filter = common::load_private();
    let lab = Lab::new("j32", LabAddrs::default()).unwrap();
    let mut slots = RuleSlots::new();
    let with = tables(FIXTURE, &slots);
    let report = filter.maps_mut().publish(&with).unwrap();
    slots.commit(&with);
    let without = tables(&fixture_without_clients(), &slots);
    let link = common::attach_to_lab(&mut filter, &lab);
    let sender = lab.peer_sender().unwrap();

    common::send_paced(&sender, &clients_frame(), 50);
    std::thread::sleep(Duration::from_millis(100));
    let before = filter.maps().snapshot().unwrap();
    assert_eq!(reason_total(&before, "allow-rule").0, 50);
    assert_eq!(rule_total(&before, "clients-https"), 50);
    assert_eq!(before.generations[report.gen_slot as usize], 50);

    let flip = filter.maps_mut().publish(&without).unwrap();
    assert_ne!(flip.gen_slot, report.gen_slot);
    common::send_paced(&sender, &clients_frame(), 50);
    std::thread::sleep(Duration::from_millis(100));
    let after = filter.maps().snapshot().unwrap();
    assert_eq!(
        reason_total(&after, "allow-rule").0,
        50,
        "no clients packet passed after the flip"
    );
    assert_eq!(reason_total(&after, "no-source-match").0, 50);
    assert_eq!(
        after.generations[report.gen_slot as usize], 50,
        "the old generation judged nothing after the flip"
    );
    assert_eq!(
        after.generations[flip.gen_slot as usize], 50,
        "the new generation judged every packet after it"
    );
    filter.program().detach(link).unwrap();
}

/// J33: SIGKILL leaves the filter enforcing; a restart adopts it with no gap (every packet
/// sent across the restart is judged) and counters continue; SIGTERM leaves it attached;
/// `nodegate detach` removes it and every pin.
#[test]
fn j33_survives_kill_adopts_on_restart_and_detaches() {
    let env = Env::new("j33");
    let config = env.write_config("rules.yaml", FIXTURE);
    let sender = env.lab.peer_sender().unwrap();
    let mut daemon = env.start_daemon(&config, &[]);
    let prog = env.xdp_prog_id().expect("attached");

    common::send_paced(&sender, &allowed_frame(), 20);
    common::send_paced(&sender, &disallowed_frame(), 20);
    env.wait_counted("no-source-match", 20);
    let first = env.snapshot();
    assert_eq!(reason_total(&first, "allow-rule").0, 20);
    assert_eq!(rule_total(&first, "control-plane-api"), 20);

    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(5));
    assert_eq!(
        env.xdp_prog_id(),
        Some(prog),
        "the same program stays attached after SIGKILL"
    );
    common::send_paced(&sender, &allowed_frame(), 20);
    common::send_paced(&sender, &disallowed_frame(), 20);
    env.wait_counted("no-source-match", 40);
    assert_eq!(
        reason_total(&env.snapshot(), "allow-rule").0,
        40,
        "cases 1-2 still hold without a loader"
    );

    // Restart while traffic flows: every packet must be judged (no window without a filter).
    let (mut daemon, during) = start_under_traffic(&env, &config);
    let adopted = env.snapshot();
    assert!(
        daemon.log_text().contains("adopted"),
        "the restart adopted the pinned link:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        reason_total(&adopted, "no-source-match").0,
        40 + during,
        "counters continued and no packet slipped through during the restart"
    );
    assert_eq!(
        reason_total(&adopted, "allow-rule").0,
        40,
        "counters were not reset"
    );

    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait(Duration::from_secs(10)).success(),
        "SIGTERM is a clean exit"
    );
    assert!(
        env.xdp_prog_id().is_some(),
        "SIGTERM leaves the filter attached"
    );
    common::send_paced(&sender, &allowed_frame(), 10);
    env.wait_counted("allow-rule", 50);

    let out = env.run(&["detach", "--iface", &env.lab.node_if]);
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.xdp_prog_id(), None, "detach removed the program");
    assert!(
        !env.pins.version_dir().exists(),
        "detach of the last interface removed every pin"
    );
}

/// J34: an XDP program nodegate did not attach is never replaced.
#[test]
fn j34_foreign_program_is_refused() {
    let env = Env::new("j34");
    let mut foreign = common::load_private();
    let _link = common::attach_to_lab(&mut foreign, &env.lab);
    let prog = env.xdp_prog_id().expect("foreign program attached");

    let config = env.write_config("rules.yaml", FIXTURE);
    let out = env.run_to_exit(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must refuse");
    assert!(
        stderr.contains("did not attach") && stderr.contains("never replaces"),
        "clear message: {stderr}"
    );
    assert_eq!(
        env.xdp_prog_id(),
        Some(prog),
        "the foreign program is untouched"
    );
    assert_no_pins(&env);
}

/// One owner per pin directory: a second `run` is refused naming the first, which goes on
/// untouched (its PID file, its process); a second started with `--owner-wait` waits for
/// the first to exit, then adopts under traffic with every packet judged.
#[test]
fn a_second_daemon_is_refused_and_a_waiting_one_takes_over() {
    let env = Env::new("owner");
    let config = env.write_config("rules.yaml", FIXTURE);
    // Both daemons append to one log: its lines stand in the order they were written.
    let write_log = env.dir.join("handover.log");
    let mut first = env.start_daemon_logging_to(&config, &[], &write_log);
    let first_pid = first.pid().to_string();
    let pid_file = || std::fs::read_to_string(env.pid_file()).unwrap_or_default();
    assert_eq!(pid_file().trim(), first_pid);
    let before = env.snapshot();
    let control = || control_word(&env);
    let control_before = control();

    let out = env.run_to_exit(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second run must be refused");
    assert!(
        stderr.contains("owns pin directory") && stderr.contains(&format!("(pid {first_pid})")),
        "names the owner: {stderr}"
    );
    assert_eq!(
        pid_file().trim(),
        first_pid,
        "the owner's PID file is untouched"
    );
    assert_eq!(
        control(),
        control_before,
        "the refused start published nothing (no flip)"
    );
    assert!(
        !first.log_text().contains("reloaded"),
        "the owner did not see a reload"
    );

    // Handover under traffic: the waiting daemon takes over once the first exits.
    let traffic = DroppedFlow::start(&env);
    let owner = first.pid();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: signals our own child.
        unsafe { libc::kill(owner, libc::SIGTERM) };
    });
    let mut second = env.start_daemon_logging_to(&config, &["--owner-wait", "30"], &write_log);
    stopper.join().unwrap();
    assert!(first.wait(Duration::from_secs(10)).success());
    std::thread::sleep(Duration::from_millis(200));
    let sent = traffic.stop();
    let log = second.log_text();
    assert!(
        log.contains("waiting for it to exit") && log.contains("adopted"),
        "the second waited, then adopted:\n{log}"
    );
    assert_eq!(pid_file().trim(), second.pid().to_string());
    // Never two writers: every generation the first published stands before its exit, the
    // second's first one after it, and the epochs climb by one per publish.
    let second_pid = second.pid().to_string();
    let writes: Vec<(String, u64)> = log
        .lines()
        .filter(|l| l.contains("rule generation active"))
        .map(|l| {
            let field = |name: &str| {
                let at = l.find(&format!("{name}=")).expect(name) + name.len() + 1;
                l[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .to_string()
            };
            (field("writer"), field("epoch").parse().unwrap())
        })
        .collect();
    let exit_line = log.find("exiting;").expect("the first logged its exit");
    let first_write_of_second = log
        .find(&format!("writer={second_pid}"))
        .expect("the second published");
    assert!(exit_line < first_write_of_second, "{log}");
    assert_eq!(
        writes.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        [first_pid.as_str(), second_pid.as_str()],
        "one publish each, the first's before the second's: {log}"
    );
    assert_eq!(writes[1].1, writes[0].1 + 1, "{writes:?}");
    assert_eq!(
        filter_user::loader::FilterMaps::open_pinned(&env.pins.maps_dir())
            .unwrap()
            .active_epoch()
            .unwrap(),
        Some(writes[1].1),
        "the kernel's active generation is the second's"
    );
    let after = env.snapshot();
    assert_eq!(
        reason_total(&after, "no-source-match").0 - reason_total(&before, "no-source-match").0,
        sent,
        "every packet sent during the handover was judged and dropped"
    );
    second.signal(libc::SIGTERM);
    assert!(second.wait(Duration::from_secs(10)).success());
}

/// A metrics port already taken fails the start before the first pin or map write.
#[test]
fn a_start_on_a_taken_metrics_port_changes_nothing() {
    let env = Env::new("port");
    let config = env.write_config("rules.yaml", FIXTURE);
    let taken = in_netns(&env.lab.node_ns, || {
        std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap()
    })
    .unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let pid_file = env.pid_file();
    let out = env
        .nodegate(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--iface",
            &env.lab.node_if,
            "--metrics",
            &addr,
            "--pid-file",
            pid_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must refuse");
    assert!(
        stderr.contains(&addr) && stderr.to_lowercase().contains("in use"),
        "names the address and the cause: {stderr}"
    );
    assert_eq!(env.xdp_prog_id(), None, "nothing attached");
    assert_no_pins(&env);
}

/// `uninstall` and `detach` say what happened: nothing there is "nothing to remove"; without
/// privileges they fail naming the cause (not "removed", not "not attached") and leave the
/// filter in place.
#[test]
fn uninstall_and_detach_report_missing_state_and_missing_privileges() {
    let env = Env::new("unpriv");
    let out = env.run(&["uninstall"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to remove"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let config = env.write_config("rules.yaml", FIXTURE);
    let mut daemon = env.start_daemon(&config, &[]);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let prog = env.xdp_prog_id().expect("still attached after SIGTERM");
    let root = env.pins.root().to_str().unwrap().to_string();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::daemon::NODEGATE)
            .args(args)
            .args(["--pin-dir", &root])
            .output()
            .unwrap()
    };
    for args in [
        &["uninstall"][..],
        &["detach", "--iface", &env.lab.node_if][..],
    ] {
        let out = as_nobody(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} without privileges must fail"
        );
        assert!(
            stderr.contains("Permission denied") && stderr.contains("needs root"),
            "{args:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("removed"),
            "{args:?} claims a removal"
        );
    }
    assert_eq!(env.xdp_prog_id(), Some(prog), "the filter stays");
    assert!(env.pins.version_dir().exists(), "the pins stay");
}

/// Restarting with `--xdp-mode driver` over a generic attachment is refused with the way
/// out, not silently kept generic; `auto` adopts whatever mode runs.
#[test]
fn an_adopted_attachment_in_another_mode_is_refused_not_ignored() {
    let env = Env::new("mode");
    let config = env.write_config("rules.yaml", FIXTURE);
    let mut daemon = env.start_daemon(&config, &["--xdp-mode", "generic"]);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let prog = env.xdp_prog_id().expect("attached");

    let out = env.run_to_exit(&config, &["--xdp-mode", "driver"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a mode change must not be ignored");
    assert!(
        stderr.contains("in generic mode") && stderr.contains("--xdp-mode driver"),
        "names both modes: {stderr}"
    );
    assert_eq!(
        env.xdp_prog_id(),
        Some(prog),
        "the running filter is untouched"
    );

    let mut daemon = env.start_daemon(&config, &["--xdp-mode", "auto"]);
    assert!(
        daemon.log_text().contains("adopted"),
        "{}",
        daemon.log_text()
    );
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
}

/// `detach` and `uninstall` under a running daemon are refused (it would go on writing into
/// a filter that is gone); once it stopped they work, and `uninstall` also removes the
/// daemon's files in the run directory.
#[test]
fn detach_and_uninstall_under_a_running_daemon_are_refused() {
    let env = Env::new("busy");
    let config = env.write_config("rules.yaml", FIXTURE);
    let mut daemon = env.start_daemon(&config, &[]);
    let prog = env.xdp_prog_id().expect("attached");
    for args in [
        &["detach", "--iface", &env.lab.node_if][..],
        &["uninstall"][..],
    ] {
        let out = env.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} under a running daemon");
        assert!(
            stderr.contains(&format!("(pid {})", daemon.pid()))
                && stderr.contains("must stop first"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(env.xdp_prog_id(), Some(prog), "the filter stays");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let run_dir = std::path::Path::new(filter_user::daemon::owner::RUN_DIR);
    let lock = filter_user::daemon::owner::OwnerLock::path_for(run_dir, &env.pins);
    assert!(lock.exists());
    let out = env.run(&["uninstall"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.xdp_prog_id(), None, "uninstalled");
    assert!(!lock.exists(), "the owner lock went with the pins");
}

/// `nodegate status`: nothing installed (exit 3); a healthy daemon (exit 0) with its file,
/// hash, interfaces and every rule's counters, matched or not; a rejected file (exit 2, not
/// ready, the file on disk differs); no daemon (exit 2, the pinned filter on its own).
#[test]
fn status_tells_what_is_loaded_and_whether_it_is_healthy() {
    let env = Env::new("status");
    let status = |args: &[&str]| {
        let out = env.run(&[&["status", "-o", "json"][..], args].concat());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), json)
    };
    let (code, json) = status(&[]);
    assert_eq!(code, Some(3), "{json}");
    assert_eq!(json["installed"], false);

    let config = env.write_config("rules.yaml", FIXTURE);
    let mut daemon = env.start_daemon(&config, &[]);
    let sender = env.lab.peer_sender().unwrap();
    common::send_paced(&sender, &allowed_frame(), 7);
    env.wait_counted("allow-rule", 7);
    let (code, json) = status(&[]);
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["daemon"]["pid"], daemon.pid());
    assert_eq!(json["daemon"]["config"], config.to_str().unwrap());
    assert_eq!(json["config_on_disk_matches"], true);
    assert_eq!(json["active_epoch"], json["daemon"]["epoch"], "{json:#}");
    assert!(json["interfaces"][&env.lab.node_if].is_string(), "{json:#}");
    let rules = json["rules"].as_array().unwrap();
    let packets = |name: &str| {
        rules
            .iter()
            .find(|r| r["rule"] == name)
            .unwrap_or_else(|| panic!("rule {name} listed: {json:#}"))["packets"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(packets("control-plane-api"), 7);
    let api = rules
        .iter()
        .find(|r| r["rule"] == "control-plane-api")
        .unwrap();
    assert_eq!(api["sources"], serde_json::json!([1, 1]), "{api}");
    let sets = json["daemon"]["sets"].as_array().unwrap();
    let cp = sets
        .iter()
        .find(|s| s["name"] == "control-plane")
        .expect("sets listed");
    assert_eq!(
        (cp["ipv4"].as_u64(), cp["ipv6"].as_u64()),
        (Some(1), Some(1)),
        "{json:#}"
    );

    // `diff` compares with the rules the daemon published (recorded owner-only in the run
    // directory): the same file is no change, an edited one names what it changes.
    let recorded = filter_user::daemon::run::active_rules_path(
        std::path::Path::new(filter_user::daemon::owner::RUN_DIR),
        &env.pins,
    );
    let mode = std::fs::metadata(&recorded).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = env.run(&["diff", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let edited = env.write_config(
        "edited.yaml",
        &FIXTURE.replace("name: control-plane-api", "name: control-plane-api-v2"),
    );
    let out = env.run(&["diff", edited.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rule +    control-plane-api-v2")
            && text.contains("rule -    control-plane-api"),
        "{text}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["packets"] == 0 && r["kind"].is_string()),
        "rules that never matched are listed: {json:#}"
    );

    std::fs::write(&config, "version: 1\nrules: [oops\n").unwrap();
    daemon.wait_for_log("reload rejected", Duration::from_secs(10));
    let (code, json) = status(&[]);
    assert_eq!(code, Some(2), "{json:#}");
    assert_eq!(json["config_on_disk_matches"], false);
    let problems = json["problems"].to_string();
    assert!(
        problems.contains("not ready") && problems.contains("differs"),
        "{problems}"
    );
    // The audit trail: the start's publish, then the rejected file change.
    let history = json["daemon"]["history"].as_array().unwrap();
    assert_eq!(history[0]["trigger"], "start", "{json:#}");
    assert_eq!(history[0]["published"], true);
    assert!(history[0]["config_hash"].is_string());
    let last = history.last().unwrap();
    assert_eq!(last["published"], false, "{json:#}");
    assert_eq!(last["trigger"], "file change");

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let (code, json) = status(&[]);
    assert_eq!(code, Some(2), "{json:#}");
    assert!(json["daemon"].is_null());
    assert!(json["problems"].to_string().contains("no `nodegate run`"));
    assert!(json["active_epoch"].as_u64().unwrap() >= 1, "{json:#}");
    // The text form says the same.
    let out = env.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("daemon          none"), "{text}");
    assert!(text.contains("(from the pins)"), "{text}");
    // With the daemon gone, `diff` still compares with what it published last.
    let out = env.run(&["diff", edited.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// Whatever a refused start left in the pin directory: it must be nothing.
fn assert_no_pins(env: &Env) {
    let mut left = Vec::new();
    let mut dirs = vec![env.pins.root().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            } else {
                left.push(entry.path());
            }
        }
    }
    assert!(left.is_empty(), "a refused start pinned {left:?}");
}

/// A start that names an interface that is not there fails before the first pin or map
/// write: nothing pinned, nothing attached, also on the interfaces it could have taken.
#[test]
fn a_start_with_a_missing_interface_changes_nothing() {
    let env = Env::new("noif");
    let config = env.write_config("rules.yaml", FIXTURE);
    let out = env.run_to_exit(&config, &["--iface", "ng-nosuch0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must refuse");
    assert!(
        stderr.contains("no interface named ng-nosuch0"),
        "names the interface: {stderr}"
    );
    assert_eq!(env.xdp_prog_id(), None, "the lab interface stays free");
    assert_no_pins(&env);
}

/// A FIFO, a directory or a device at the config path fails the start at once (a FIFO
/// would block a read for good) and before anything is written.
#[test]
fn a_start_with_an_unreadable_rule_file_changes_nothing() {
    let env = Env::new("badfile");
    let fifo = env.dir.join("rules.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, says) in [
        (fifo.as_path(), "not a regular file"),
        (env.dir.as_path(), "not a regular file"),
        (std::path::Path::new("/dev/zero"), "not a regular file"),
    ] {
        let started = std::time::Instant::now();
        let out = env.run_to_exit(path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "run must refuse {}", path.display());
        assert!(
            stderr.contains(says) && stderr.contains(path.to_str().unwrap()),
            "names the file and the problem: {stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "no hang");
        assert_eq!(env.xdp_prog_id(), None, "nothing attached");
        assert_no_pins(&env);
    }
    // A file that does not validate: the message says nothing was attached (there are no
    // "active rules" to keep at a start), once.
    let invalid = env.write_config("invalid.yaml", "version: 1\nrules: [oops\n");
    let out = env.run_to_exit(&invalid, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr
            .matches("rule file rejected, nothing was attached")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("active rules are unchanged"), "{stderr}");
    assert_no_pins(&env);
}

/// `nodegate reload` finds the daemon by its control socket, never by a PID file: with a
/// stale PID file naming an unrelated process and no daemon, it fails clearly and that
/// process lives on; the PID-file flag is gone.
#[test]
fn reload_never_signals_a_pid_read_from_a_file() {
    let env = Env::new("stalepid");
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(env.pid_file(), format!("{}\n", bystander.id())).unwrap();
    let out = env.run(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no daemon, no reload");
    assert!(
        stderr.contains("nodegate run"),
        "says what is missing: {stderr}"
    );
    let out = env.run(&["reload", "--pid-file", env.pid_file().to_str().unwrap()]);
    assert!(!out.status.success(), "the flag is refused");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the process named by the PID file was not signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// `/readyz` follows the rule file (ready when attached with the file's generation active,
/// 503 with the reason after a rejected reload), `/healthz` answers while the process runs,
/// and under systemd (`NOTIFY_SOCKET`) the daemon says READY, RELOADING and STOPPING.
#[test]
fn readiness_follows_the_rule_file_and_systemd_is_notified() {
    let env = Env::new("ready");
    let config = env.write_config("rules.yaml", FIXTURE);
    let notify_path = env.dir.join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next_notice = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let port = 20000 + (std::process::id() % 20000) as u16 + 7;
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = env.start_daemon_env(
        &config,
        &["--metrics", &addr],
        &[("NOTIFY_SOCKET", notify_path.as_os_str())],
    );
    assert_eq!(next_notice().as_deref(), Some("READY=1\nSTATUS=running"));
    assert!(env.get(port, "/healthz").starts_with("HTTP/1.1 200"));
    let ready = env.get(port, "/readyz");
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready\n"),
        "{ready}"
    );

    std::fs::write(&config, "version: 1\nrules: [oops\n").unwrap();
    let out = env.run(&["reload"]);
    assert!(!out.status.success());
    // The watcher may reload the file too; every reload is bracketed the same way.
    assert!(next_notice()
        .unwrap_or_default()
        .starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next_notice().as_deref(), Some("READY=1"));
    let ready = env.get(port, "/readyz");
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains("last reload was rejected"),
        "{ready}"
    );

    std::fs::write(&config, FIXTURE).unwrap();
    let out = env.run(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = env.get(port, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let mut notices = Vec::new();
    while let Some(notice) = next_notice() {
        let stopping = notice == "STOPPING=1";
        notices.push(notice);
        if stopping {
            break;
        }
    }
    assert_eq!(
        notices.last().map(String::as_str),
        Some("STOPPING=1"),
        "{notices:?}"
    );
}

/// J35: metrics answer on 127.0.0.1 only, counters move; the pin directory is 0700. Also a
/// rejected reload (bad file) keeps the old rules and is counted.
#[test]
fn j35_metrics_on_loopback_and_private_pins() {
    let env = Env::new("j35");
    let config = env.write_config("rules.yaml", FIXTURE);
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let daemon = env.start_daemon(&config, &["--metrics", &addr]);
    daemon.wait_for_log("serving Prometheus metrics", Duration::from_secs(10));

    let listening = env.lab.node_cmd("ss", &["-ltnH"]).output().unwrap();
    let listening = String::from_utf8_lossy(&listening.stdout);
    assert!(listening.contains(&addr), "listens on {addr}: {listening}");
    assert_eq!(
        listening.lines().count(),
        1,
        "and nowhere else: {listening}"
    );

    let before = metric(
        &env.scrape(port),
        "nodegate_packets_total",
        &[("reason", "allow-rule")],
    );
    let sender = env.lab.peer_sender().unwrap();
    common::send_paced(&sender, &allowed_frame(), 25);
    env.wait_counted("allow-rule", 25);
    let text = env.scrape(port);
    assert_eq!(
        metric(
            &text,
            "nodegate_packets_total",
            &[("reason", "allow-rule"), ("verdict", "pass")]
        ),
        before + 25
    );
    assert_eq!(
        metric(
            &text,
            "nodegate_rule_packets_total",
            &[("rule", "control-plane-api")]
        ),
        25
    );
    // The start is a load, not a reload.
    assert_eq!(
        metric(&text, "nodegate_reloads_total", &[("result", "success")]),
        0
    );
    assert_eq!(
        metric(&text, "nodegate_publishes_total", &[("trigger", "start")]),
        1
    );

    for dir in [env.pins.root().to_path_buf(), env.pins.version_dir()] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is private", dir.display());
    }

    // A bad file is rejected, counted, and the previous rules stay.
    std::fs::write(&config, "version: 1\nrules: [\n").unwrap();
    daemon.wait_for_log("reload rejected", Duration::from_secs(10));
    let text = env.scrape(port);
    assert_eq!(
        metric(&text, "nodegate_reloads_total", &[("result", "failure")]),
        1
    );
    common::send_paced(&sender, &allowed_frame(), 5);
    env.wait_counted("allow-rule", 30);
}

/// A Kubernetes ConfigMap update (atomic `..data` symlink swap) reloads; `nodegate reload`
/// reloads and waits for the flip, or fails with the diagnostics of a rejected file; SIGHUP
/// reloads too.
#[test]
fn configmap_swap_and_reload_command_trigger_reloads() {
    let env = Env::new("cfm");
    // ConfigMap layout: rules.yaml -> ..data/rules.yaml, ..data -> ..v1
    let v1 = env.dir.join("..v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("rules.yaml"), FIXTURE).unwrap();
    std::os::unix::fs::symlink("..v1", env.dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rules.yaml", env.dir.join("rules.yaml")).unwrap();
    let daemon = env.start_daemon(&env.dir.join("rules.yaml"), &["--debounce-ms", "100"]);
    let sender = env.lab.peer_sender().unwrap();
    common::send_paced(&sender, &clients_frame(), 10);
    env.wait_counted("allow-rule", 10);

    let v2 = env.dir.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("rules.yaml"), fixture_without_clients()).unwrap();
    std::os::unix::fs::symlink("..v2", env.dir.join("..data_tmp")).unwrap();
    std::fs::rename(env.dir.join("..data_tmp"), env.dir.join("..data")).unwrap();
    daemon.wait_for_log("trigger=\"file change\"", Duration::from_secs(10));
    common::send_paced(&sender, &clients_frame(), 10);
    env.wait_counted("no-source-match", 10);
    assert_eq!(
        reason_total(&env.snapshot(), "allow-rule").0,
        10,
        "the clients set is gone after the swap"
    );

    // `nodegate reload` over the control socket: the file is unchanged, so the reload is a
    // no-op publish, but it must happen, flip, and be logged before the command returns.
    let control = || control_word(&env);
    let before = control();
    let out = env.run(&["reload"]);
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("active"));
    assert_ne!(
        control().active_gen,
        before.active_gen,
        "flipped before returning"
    );
    assert!(daemon.log_text().contains("trigger=\"nodegate reload\""));
    // SIGHUP still reloads.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("trigger=\"SIGHUP\"", Duration::from_secs(10));

    // A rejected file: non-zero exit with the diagnostic (file:line:column); nothing flips.
    std::fs::write(v2.join("rules.yaml"), "version: 1\nrules: [oops\n").unwrap();
    let before = control();
    let out = env.run(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a rejected file fails the command");
    assert!(
        stderr.contains("rules.yaml:") && stderr.contains("previous rules stay active"),
        "{stderr}"
    );
    assert_eq!(control(), before, "nothing was published");
    // `--no-wait` returns at once.
    let out = env.run(&["reload", "--no-wait"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued"));

    // A FIFO put at the config path is refused at once instead of hanging the daemon, and
    // a good file put back is read again.
    let file = v2.join("rules.yaml");
    std::fs::remove_file(&file).unwrap();
    let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: c is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let asked = std::time::Instant::now();
    let out = env.run(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered promptly"
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, FIXTURE).unwrap();
    common::daemon::assert_success(&env.run(&["reload"]));
}

/// Upgrade from a layout `run` cannot take over (1: LPM tries): a pin directory holding
/// another layout version's state is refused with a message naming both versions and how to
/// proceed, and the program that state belongs to keeps enforcing throughout: traffic sent
/// before, during and after the refused start is judged by it, none unfiltered. (The old
/// program is this build's, attached by the test, with its program pinned under `v1/`: the
/// refusal depends on the version directory alone, never on reading the old maps.)
#[test]
fn an_older_layout_is_refused_while_it_keeps_enforcing() {
    let previous = 1;
    assert!(!filter_user::loader::pins::ADOPTABLE_LAYOUTS.contains(&previous));
    let old_dir = format!("v{previous}");
    let env = Env::new("mig");
    let mut old = common::load_private();
    let slots = RuleSlots::new();
    old.maps_mut().publish(&tables(FIXTURE, &slots)).unwrap();
    let root = env.pins.version_dir().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(root.join(&old_dir)).unwrap();
    old.program().pin(root.join(&old_dir).join("prog")).unwrap();
    let link = common::attach_to_lab(&mut old, &env.lab);
    let traffic = Traffic::start(env.lab.peer_sender().unwrap(), 4);
    std::thread::sleep(Duration::from_millis(200));
    let config = env.write_config("rules.yaml", FIXTURE);
    let out = env.run_to_exit(&config, &[]);
    std::thread::sleep(Duration::from_millis(200));
    let (good, bad) = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "run must refuse layout {previous} state"
    );
    assert!(
        stderr.contains(&format!("layout version {previous}"))
            && stderr.contains(&format!("speaks version {}", filter_common::LAYOUT_VERSION)),
        "the message names both versions: {stderr}"
    );
    assert!(root.join(&old_dir).exists(), "the old state is left alone");
    assert!(
        !env.pins.version_dir().join("links").exists(),
        "nothing was attached"
    );
    let snap = old.maps().snapshot().unwrap();
    assert!(good > 0 && bad > 0, "traffic ran");
    assert_eq!(
        reason_total(&snap, "allow-rule").0,
        good,
        "every allowed packet was judged (and passed) by the old program"
    );
    assert_eq!(
        reason_total(&snap, "no-source-match").0,
        bad,
        "every disallowed packet was dropped by the old program"
    );
    old.program().detach(link).unwrap();
    let _ = std::fs::remove_dir_all(root.join(&old_dir));
}

/// Upgrade from layout 5, which `run` takes over in place: layout 5 is this layout without
/// inline IPv4 prefixes, and its program would take them for leaves of classes that do not
/// exist. So the new program goes live on the links first, judging the layout-5 generation
/// right, and publishes its first generation after one grace period (the log proves the
/// order).
#[test]
fn layout_5_is_taken_over_in_place_without_a_gap() {
    take_over_in_place(5, "takeover5");
}

/// Upgrade from layout 4, which `run` takes over in place: layout 4 is this layout with tail
/// records of one prefix, and its program would misread this layout's records of several.
/// So the new program goes live on the links first, judging the layout-4 generation right,
/// and publishes its first generation after one grace period (the log proves the order).
#[test]
fn layout_4_is_taken_over_in_place_without_a_gap() {
    take_over_in_place(4, "takeover4");
}

/// Upgrade from layout 3, which `run` takes over in place: layout 3 is layout 4 with a
/// 16-bit IPv4 root and no wide nodes, and its program would misread this layout's tables.
/// So the new program goes live on the links first, judging the layout-3 generation right
/// (its flags say 16-bit root), and publishes its first generation after one grace period
/// (the log proves the order).
#[test]
fn layout_3_is_taken_over_in_place_without_a_gap() {
    take_over_in_place(3, "takeover3");
}

/// Upgrade from layout 2, which `run` takes over in place: layout 2 also lacked
/// `NG_IFINDEX`, which the new loader creates and fills before its program goes live (an
/// index left empty would count every packet in slot 0).
#[test]
fn layout_2_is_taken_over_in_place_without_a_gap() {
    take_over_in_place(2, "takeover2");
}

/// The daemon's state after SIGTERM, renamed to `v{previous}` (and without `NG_IFINDEX` for
/// layout 2), stands in for a node of that layout. A start that fails gives the directory
/// its old name back; a start that succeeds renames it and swaps its program in on the same
/// link: every packet sent across the take-over is judged, counters carry over, and every
/// packet is counted on the lab interface's slot.
fn take_over_in_place(previous: u32, name: &str) {
    use filter_user::loader::pins::ADOPTABLE_LAYOUTS;
    assert!(ADOPTABLE_LAYOUTS.contains(&previous));
    let env = Env::new(name);
    let config = env.write_config("rules.yaml", FIXTURE);
    let sender = env.lab.peer_sender().unwrap();
    let mut daemon = env.start_daemon(&config, &[]);
    let old_prog = env.xdp_prog_id().expect("attached");
    common::send_paced(&sender, &disallowed_frame(), 20);
    env.wait_counted("no-source-match", 20);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());

    if previous >= 3 {
        // What a layout-3, -4 or -5 node has active (layout 3: an IPv4 table with the
        // 16-bit root, no wide nodes, the generation flag clear; 3 and 4: tail records of
        // one prefix; all: no inline IPv4 prefixes). The attached program reads it right.
        let mut maps = filter_user::loader::FilterMaps::open_pinned(&env.pins.maps_dir()).unwrap();
        let slots = RuleSlots::from_pairs(maps.pinned_rule_slots());
        let tables = tables(FIXTURE, &slots);
        maps.publish(&match previous {
            3 => tables.as_layout3(),
            4 => tables.as_layout4(),
            _ => tables.as_layout5(),
        })
        .unwrap();
        common::send_paced(&sender, &allowed_frame(), 10);
        common::send_paced(&sender, &disallowed_frame(), 10);
        env.wait_counted("no-source-match", 30);
        env.wait_counted("allow-rule", 10);
    }
    let judged_before = if previous >= 3 { 30 } else { 20 };
    let ours = env.pins.version_dir();
    let old_dir = ours.with_file_name(format!("v{previous}"));
    if previous == 2 {
        std::fs::remove_file(env.pins.maps_dir().join(filter_common::MAP_IFACE_INDEX)).unwrap();
    }
    std::fs::rename(&ours, &old_dir).unwrap();

    let failed = env.run_to_exit(&config, &["--iface", "ngmissing0"]);
    assert!(
        !failed.status.success(),
        "a start on a missing interface fails"
    );
    assert!(
        old_dir.is_dir() && !ours.exists(),
        "the failed start gave the layout-{previous} state its name back"
    );
    assert_eq!(
        env.xdp_prog_id(),
        Some(old_prog),
        "and changed nothing attached"
    );

    let (mut daemon, during) = start_under_traffic(&env, &config);
    daemon.wait_for_log("rule generation active", Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(log.contains("taking over the previous layout"), "{log}");
    let (swapped, published) = (
        log.find("attached").expect("attached"),
        log.find("rule generation active").expect("published"),
    );
    assert!(
        swapped < published && log.contains("off every CPU"),
        "the program went live on the links, then a grace period, then the first publish: {log}"
    );
    assert!(!old_dir.exists(), "the layout-{previous} directory is gone");
    assert!(env
        .pins
        .maps_dir()
        .join(filter_common::MAP_IFACE_INDEX)
        .exists());
    let new_prog = env.xdp_prog_id().expect("still attached");
    assert_ne!(new_prog, old_prog, "this build's program was swapped in");
    let snap = env.snapshot();
    assert_eq!(
        reason_total(&snap, "no-source-match").0,
        judged_before + during,
        "counters carried over and every packet sent across the take-over was judged"
    );
    let unregistered: u64 = snap
        .reasons
        .iter()
        .filter(|r| r.iface_slot == 0)
        .map(|r| r.packets)
        .sum();
    assert_eq!(
        unregistered, 0,
        "every packet counted on the lab interface's slot"
    );

    common::send_paced(&sender, &disallowed_frame(), 10);
    env.wait_counted("no-source-match", judged_before + 10 + during);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    common::daemon::assert_success(&env.run(&["detach", "--iface", &env.lab.node_if]));
}
