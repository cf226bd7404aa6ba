//! The daemon notices the world changing under it (docs/OPERATIONS.md, "What the daemon
//! puts back"): pins removed by hand are pinned again while the filter never stops, and an
//! attachment lost to another tool or to a re-created interface is attached again, with a
//! log line, the `nodegate_interface_attached` and `nodegate_repairs_total` metrics and
//! `/readyz` telling the story; an XDP program someone else put there is never replaced.
#![cfg(feature = "privileged-tests")]

mod common;

use std::{net::IpAddr, time::Duration};

use common::daemon::{assert_success, metric, reason_total, Daemon, Env};
use filter_user::{craft::Frame, loader::link_ref::LinkRef};

const FIXTURE: &str = include_str!("fixtures/testcases.yaml");

/// A source no rule of the fixture allows: dropped (no-source-match) while the filter is
/// attached, and not counted at all while it is not.
fn disallowed_frame() -> Vec<u8> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Frame::tcp(ip("198.51.100.9"), ip("203.0.113.1"), 40000, 10250)
        .syn()
        .build()
}

/// Send `count` disallowed frames from the peer and check that every one was dropped by the
/// filter (which only counts what it judged).
fn dropped_by_the_filter(env: &Env, count: u64) {
    let before = reason_total(&env.snapshot(), "no-source-match").0;
    let sender = env.lab.peer_sender().unwrap();
    common::send_paced(&sender, &disallowed_frame(), count as usize);
    env.wait_counted("no-source-match", before + count);
}

fn start(env: &Env, port: u16, extra: &[&str]) -> Daemon {
    let config = env.write_config("rules.yaml", FIXTURE);
    let addr = format!("127.0.0.1:{port}");
    env.start_daemon(&config, &[&["--metrics", addr.as_str()], extra].concat())
}

fn log_count(daemon: &Daemon, needle: &str) -> usize {
    daemon.log_text().matches(needle).count()
}

/// Wait until `needle` appears in the log more than `before` times.
fn wait_for_another(daemon: &Daemon, needle: &str, before: usize) {
    let deadline = std::time::Instant::now() + common::patience(Duration::from_secs(10));
    while log_count(daemon, needle) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no new {needle:?} in the daemon log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `/readyz` answers `status` (e.g. "200"): the daemon logs a repair first and
/// refreshes what the endpoint serves right after, so the answer can lag the log line.
fn wait_for_readyz(env: &Env, port: u16, status: &str) -> String {
    let deadline = std::time::Instant::now() + common::patience(Duration::from_secs(10));
    let wanted = format!("HTTP/1.1 {status}");
    loop {
        let answer = env.get(port, "/readyz");
        if answer.starts_with(&wanted) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never answered {status}; last answer:\n{answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removing the link's pin, then the whole pin directory, never stops the filter: the
/// daemon holds its own references and pins everything again within seconds.
#[test]
fn pins_removed_by_hand_are_pinned_again_and_the_filter_never_stops() {
    let env = Env::new("repin");
    let port = 20000 + (std::process::id() % 20000) as u16 + 11;
    let daemon = start(&env, port, &[]);
    let link = env.pins.link_path(&env.lab.node_if);
    dropped_by_the_filter(&env, 10);

    std::fs::remove_file(&link).unwrap();
    // Still attached through the daemon's own reference, before it even noticed.
    dropped_by_the_filter(&env, 10);
    wait_for_another(&daemon, "pinned it again", 0);
    assert!(link.exists(), "the link is pinned again");

    let status = std::process::Command::new("rm")
        .arg("-r")
        .arg(env.pins.root())
        .status()
        .unwrap();
    assert!(status.success());
    let before = log_count(&daemon, "pinned it again");
    wait_for_another(&daemon, "pinned it again", before);
    // Every map, the link and the program are back (a tick may report them in two rounds).
    let deadline = std::time::Instant::now() + common::patience(Duration::from_secs(5));
    while !(link.exists()
        && env.pins.prog_path().exists()
        && filter_user::loader::PINNED_MAPS
            .iter()
            .all(|m| env.pins.maps_dir().join(m).exists()))
    {
        assert!(std::time::Instant::now() < deadline, "pins not restored");
        std::thread::sleep(Duration::from_millis(50));
    }
    dropped_by_the_filter(&env, 10);
    // Every map, the link and the program at least; the metrics are refreshed right after
    // the pass that pinned them, so they may lag the files by a moment.
    let pins = filter_user::loader::PINNED_MAPS.len() as u64;
    let deadline = std::time::Instant::now() + common::patience(Duration::from_secs(5));
    let text = loop {
        let text = env.scrape(port);
        if metric(&text, "nodegate_repairs_total", &[("what", "pin")]) > pins {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "repairs not counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        metric(&text, "nodegate_repairs_total", &[("what", "attachment")]),
        0
    );
    // `status` reads the restored pins.
    assert_success(&env.run(&["status"]));
}

/// A link detached by another tool is attached again; while an XDP program someone else
/// attached holds the interface the daemon is not ready and leaves it alone, and attaches
/// once it is gone; an interface deleted and created again is filtered again. With the
/// egress recorder this kernel chooses (TCX from 6.6).
#[test]
fn a_lost_attachment_is_put_back_never_over_a_foreign_program() {
    lost_attachments_are_put_back("relink", 13, &[]);
}

/// The same with the clsact egress recorder (kernels before 6.6; here forced), whose
/// qdisc goes with a deleted interface.
#[test]
fn a_lost_attachment_is_put_back_with_a_clsact_recorder() {
    lost_attachments_are_put_back("relinkc", 15, &["--egress-attach", "clsact"]);
}

/// Detach the daemon's XDP link as another tool would (`BPF_LINK_DETACH`).
fn detach_with_bpftool(env: &Env) {
    let link = LinkRef::open(&env.pins.link_path(&env.lab.node_if)).unwrap();
    let id = link.state().unwrap().id.to_string();
    assert_success(
        &env.lab
            .node_cmd("bpftool", &["link", "detach", "id", &id])
            .output()
            .unwrap(),
    );
}

fn lost_attachments_are_put_back(tag: &str, port_offset: u16, extra: &[&str]) {
    let env = Env::new(tag);
    let port = 20000 + (std::process::id() % 20000) as u16 + port_offset;
    let daemon = start(&env, port, extra);
    let iface = [("interface", env.lab.node_if.as_str())];
    dropped_by_the_filter(&env, 10);
    assert_eq!(
        metric(&env.scrape(port), "nodegate_interface_attached", &iface),
        1
    );

    // Another tool detaches the link.
    detach_with_bpftool(&env);
    wait_for_another(&daemon, "attached again", 0);
    assert!(env.xdp_prog_id().is_some());
    dropped_by_the_filter(&env, 10);

    // Someone attaches their own program in the instant the link is gone (the daemon is
    // stopped meanwhile, so the race is certain).
    daemon.signal(libc::SIGSTOP);
    detach_with_bpftool(&env);
    let mut foreign = common::load_private();
    let foreign_link = common::attach_to_lab(&mut foreign, &env.lab);
    let foreign_id = env.xdp_prog_id().expect("foreign program attached");
    daemon.signal(libc::SIGCONT);
    wait_for_another(&daemon, "not filtering", 0);
    let ready = wait_for_readyz(&env, port, "503");
    assert!(ready.contains("did not attach"), "{ready}");
    assert_eq!(
        metric(&env.scrape(port), "nodegate_interface_attached", &iface),
        0
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(env.xdp_prog_id(), Some(foreign_id), "never replaced");
    assert_eq!(
        log_count(&daemon, "not filtering"),
        1,
        "logged once, not every retry"
    );
    foreign.program().detach(foreign_link).unwrap();
    wait_for_another(&daemon, "attached again", 1);
    wait_for_readyz(&env, port, "200");
    dropped_by_the_filter(&env, 10);

    // The interface is deleted and created again (a new ifindex, no XDP program).
    let old_index = env.lab.node_ifindex().unwrap();
    env.lab.recreate_pair().unwrap();
    assert_ne!(env.lab.node_ifindex().unwrap(), old_index);
    wait_for_another(&daemon, "attached again", 2);
    dropped_by_the_filter(&env, 10);
    // Ready again, and so the metrics below are the ones refreshed after the repair.
    wait_for_readyz(&env, port, "200");
    let text = env.scrape(port);
    assert_eq!(metric(&text, "nodegate_interface_attached", &iface), 1);
    // Attached again in driver mode (veth has native XDP), by the program variant that runs.
    let driver = [
        ("interface", env.lab.node_if.as_str()),
        ("xdp_mode", "driver"),
        ("variant", "native"),
    ];
    assert_eq!(
        metric(&text, "nodegate_interface_attached", &driver),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "nodegate_repairs_total", &[("what", "attachment")]),
        3,
        "{text}"
    );
}

/// A pin root another user created is refused before anything is written: its owner could
/// remove or replace the filter's pins.
#[test]
fn a_pin_root_owned_by_another_user_is_refused() {
    let env = Env::new("pinown");
    std::fs::create_dir_all(env.pins.root()).unwrap();
    std::os::unix::fs::chown(env.pins.root(), Some(65534), Some(65534)).unwrap();
    let config = env.write_config("rules.yaml", FIXTURE);
    let out = env.run_to_exit(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("owned by uid 65534") && stderr.contains("choose another"),
        "{stderr}"
    );
    assert!(!env.pins.version_dir().exists(), "nothing written");
    assert_eq!(env.xdp_prog_id(), None, "nothing attached");
}

/// An interface nodegate already filters from another pin directory is refused like any
/// other program's: the second start writes nothing, the first goes on.
#[test]
fn an_interface_another_pin_directory_filters_is_refused() {
    let env = Env::new("otherpins");
    let port = 20000 + (std::process::id() % 20000) as u16 + 17;
    let _daemon = start(&env, port, &[]);
    let prog = env.xdp_prog_id();
    let other = filter_user::loader::pins::PinLayout::new(format!(
        "/sys/fs/bpf/ngtest-otherpins-{}",
        std::process::id()
    ));
    let config = env.dir.join("rules.yaml");
    let pid_before = std::fs::read_to_string(env.pid_file()).unwrap();
    // Its own default PID file (beside its owner lock), not the first daemon's.
    let out = env
        .nodegate(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--iface",
            &env.lab.node_if,
            "--no-metrics",
            "--pin-dir",
            other.root().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = other.remove_foreign();
    let run_dir = std::path::Path::new(filter_user::daemon::owner::RUN_DIR);
    let _ = std::fs::remove_file(filter_user::daemon::owner::OwnerLock::path_for(
        run_dir, &other,
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must refuse");
    assert!(stderr.contains("did not attach"), "{stderr}");
    assert_eq!(env.xdp_prog_id(), prog, "the first daemon's program stays");
    assert_eq!(
        std::fs::read_to_string(env.pid_file()).unwrap(),
        pid_before,
        "the first daemon's PID file is untouched"
    );
    assert!(
        !filter_user::daemon::run::pid_path(run_dir, &other).exists(),
        "the refused start removed its own PID file"
    );
    dropped_by_the_filter(&env, 10);
}
