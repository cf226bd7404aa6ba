//! Per-interface settings on a real node with two interfaces: `nodegate run` attached to two
//! veth pairs, the config monitoring one and enforcing the other, then a reload that turns
//! it around. Real pings show what passes; the per-interface counters and `nodegate stats`
//! show why.
#![cfg(feature = "privileged-tests")]

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, Env};
use filter_user::loader::counters::Snapshot;

const NODE_A: &str = "192.0.2.1";
const NODE_B: &str = "198.51.100.1";
const PINGS: u64 = 3;

/// Neither peer is in an allow-list unless `rules` adds one: what decides their pings is the
/// interface's mode and default, and rules scoped to it.
fn config(rules: &str, interfaces: &str) -> String {
    format!(
        "version: 1
return_traffic: off
failsafe:
  - {{ name: admin-ssh, from: [203.0.113.0/24], protocol: tcp, ports: [22] }}
rules:
  - {{ name: web, from: [203.0.113.0/24], protocol: tcp, ports: [443] }}
{rules}interfaces:
{interfaces}"
    )
}

/// Whether `PINGS` pings from the peer namespace to `addr` all got answered.
fn ping_answered(env: &Env, addr: &str) -> bool {
    let count = PINGS.to_string();
    let out = env
        .lab
        .peer_cmd(
            "ping",
            &["-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", addr],
        )
        .output()
        .expect("run ping in the peer namespace");
    out.status.success()
}

/// `nodegate stats -o json`: the counters and each interface's settings.
fn stats(env: &Env) -> serde_json::Value {
    let out = env.run(&["stats", "-o", "json"]);
    assert!(
        out.status.success(),
        "stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats --json prints JSON")
}

/// Asserts how `nodegate stats` says interface `name` runs — (mode, default, whether
/// `interfaces:` set it) — and returns its counter slot.
#[track_caller]
fn expect_settings(stats: &serde_json::Value, name: &str, want: (&str, &str, bool)) -> u32 {
    let entry = stats["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|s| s["interface"] == name)
        .unwrap_or_else(|| panic!("{name} not in {stats}"));
    let got = (
        entry["mode"].as_str().expect("mode"),
        entry["default"].as_str().expect("default"),
        entry["overridden"].as_bool().expect("overridden"),
    );
    assert_eq!(got, want, "settings of {name}");
    entry["slot"].as_u64().expect("slot") as u32
}

/// Packets of `reason` counted on interface slot `slot` (decided, would-drop).
fn on_slot(snap: &Snapshot, slot: u32, reason: &str) -> (u64, u64) {
    snap.reasons
        .iter()
        .filter(|r| r.iface_slot == slot && r.reason == reason)
        .fold((0, 0), |(decided, would), r| {
            if r.would_drop {
                (decided, would + r.packets)
            } else {
                (decided + r.packets, would)
            }
        })
}

fn wait_for_generations(daemon: &Daemon, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.log_text().matches("rule generation active").count() < count {
        assert!(
            Instant::now() < deadline,
            "no reload:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_interface_gets_its_own_mode_and_default() {
    let env = Env::new("ifs");
    // B's index lies above the program's direct interface index: its entry is found in the
    // NG_IFACES hash, A's in the NG_IFINDEX array, and both must give their settings.
    let (node_b, _) = env
        .lab
        .add_link(
            &format!("{NODE_B}/24"),
            "198.51.100.9/24",
            Some(filter_common::DIRECT_IFINDEXES + 34_464),
        )
        .expect("second veth pair");
    let node_a = env.lab.node_if.clone();
    let index_of = |name: &str| {
        filter_user::lab::in_netns(&env.lab.node_ns, || {
            filter_user::loader::attach::ifindex(name)
        })
        .unwrap()
        .expect("interface exists")
    };
    assert!(
        index_of(&node_b) >= filter_common::DIRECT_IFINDEXES
            && index_of(&node_a) < filter_common::DIRECT_IFINDEXES,
        "one interface on each lookup path"
    );

    // A enforces (the file's mode); B only monitors. `ng-absent0` is not attached.
    let path = env.write_config(
        "node.yaml",
        &config(
            "",
            &format!("  {node_b}: {{ mode: monitor }}\n  ng-absent0: {{ default: pass }}\n"),
        ),
    );
    let daemon = env.start_daemon(&path, &["--iface", &node_b]);
    daemon.wait_for_log("ng-absent0", Duration::from_secs(5));
    assert!(
        daemon
            .log_text()
            .contains("nodegate runs on no interface of that name"),
        "the daemon warns about settings for an interface it does not run on:\n{}",
        daemon.log_text()
    );

    let s = stats(&env);
    let slot_a = expect_settings(&s, &node_a, ("enforce", "drop", false));
    let slot_b = expect_settings(&s, &node_b, ("monitor", "drop", true));
    assert_ne!(slot_a, slot_b);

    assert!(
        !ping_answered(&env, NODE_A),
        "A enforces: the ping is dropped"
    );
    assert!(ping_answered(&env, NODE_B), "B monitors: the ping passes");
    let snap = env.snapshot();
    let (dropped_a, would_a) = on_slot(&snap, slot_a, "no-source-match");
    let (dropped_b, would_b) = on_slot(&snap, slot_b, "no-source-match");
    assert!(
        dropped_a >= PINGS && would_a == 0,
        "A: {dropped_a} dropped, {would_a} would-drop"
    );
    assert!(
        would_b >= PINGS && dropped_b == 0,
        "B: {dropped_b} dropped, {would_b} would-drop"
    );

    // Turn it around: A passes unmatched traffic, B (no longer named) enforces.
    let a_passes = format!("  {node_a}: {{ default: pass }}\n");
    std::fs::write(&path, config("", &a_passes)).unwrap();
    wait_for_generations(&daemon, 2);

    let s = stats(&env);
    expect_settings(&s, &node_a, ("enforce", "pass", true));
    expect_settings(&s, &node_b, ("enforce", "drop", false));

    let before = env.snapshot();
    assert!(ping_answered(&env, NODE_A), "A now passes by default");
    assert!(!ping_answered(&env, NODE_B), "B now enforces");
    let after = env.snapshot();
    let moved = |slot, reason| {
        let (d0, w0) = on_slot(&before, slot, reason);
        let (d1, w1) = on_slot(&after, slot, reason);
        (d1 - d0, w1 - w0)
    };
    let (passed_a, _) = moved(slot_a, "default-pass");
    assert!(passed_a >= PINGS, "A counted {passed_a} default-pass");
    assert_eq!(
        moved(slot_a, "no-source-match"),
        (0, 0),
        "A drops nothing now"
    );
    let (dropped_b, would_b) = moved(slot_b, "no-source-match");
    assert!(
        dropped_b >= PINGS && would_b == 0,
        "B: {dropped_b} dropped, {would_b} would-drop"
    );

    // A rule scoped to B lets B's peer ping; on A it does not exist (A still passes only
    // by its default).
    let ping_b = format!(
        "  - {{ name: ping-b, from: [198.51.100.0/24, 192.0.2.0/24], protocol: icmp, types: [8], interfaces: [{node_b}] }}\n"
    );
    std::fs::write(&path, config(&ping_b, &a_passes)).unwrap();
    wait_for_generations(&daemon, 3);
    let before = env.snapshot();
    assert!(
        ping_answered(&env, NODE_B),
        "B's scoped rule allows the ping"
    );
    assert!(ping_answered(&env, NODE_A), "A still passes by default");
    let after = env.snapshot();
    let moved = |slot, reason| on_slot(&after, slot, reason).0 - on_slot(&before, slot, reason).0;
    assert!(moved(slot_b, "allow-rule") >= PINGS, "B: allowed by ping-b");
    assert!(moved(slot_a, "default-pass") >= PINGS, "A: default pass");
    assert_eq!(moved(slot_a, "allow-rule"), 0, "ping-b does not exist on A");
    let rules = &after.rules;
    let ping_b_count = rules
        .iter()
        .filter(|r| r.name == "ping-b" && !r.would_drop)
        .map(|r| r.packets)
        .sum::<u64>();
    assert!(ping_b_count >= PINGS, "the rule counter of ping-b moved");
}
