//! Per-interface settings (the config's `interfaces:` section; VERDICTS.md §0) through the
//! real XDP program with `BPF_PROG_TEST_RUN`.
//!
//! Test runs arrive on the loopback device; `FilterMaps::test_runs_arrive_on` makes it stand
//! in for a named interface, so one loaded program can be asked how each interface judges a
//! frame. Every expectation is written out here (not derived from the model), and the model
//! (`Model::on_interface`) must agree with each.
#![cfg(feature = "privileged-tests")]

mod common;

use std::net::IpAddr;

use filter_common::{iface_override, Reason};
use filter_user::compiler::{compile, RuleSlots};
use filter_user::config::{parse_str_with, LoadOptions};
use filter_user::craft::Frame;
use filter_user::loader::testrun::{KernelJudge, XdpAction};
use filter_user::loader::Filter;
use filter_user::model::Model;
use filter_user::policy::Policy;

const RULES: &str = "version: 1
return_traffic: off
failsafe:
  - {name: admin-ssh, from: [192.0.2.0/24], protocol: tcp, ports: [22]}
rules:
  - {name: https, from: [10.0.0.0/24], protocol: tcp, ports: [443]}
  - {name: no-telnet, from: [10.0.0.0/24], protocol: tcp, ports: [23], action: deny}
";

fn policy(extra: &str) -> Policy {
    let text = format!("{RULES}{extra}");
    parse_str_with(
        "ifaces.yaml",
        &text,
        &LoadOptions::fixed_ephemeral(32768..=60999),
    )
    .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- text ---\n{text}"))
    .policy
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The three packets whose verdict the settings can change.
fn allowed() -> Vec<u8> {
    Frame::tcp(ip("10.0.0.5"), ip("10.9.9.9"), 40000, 443)
        .syn()
        .build()
}
fn denied() -> Vec<u8> {
    Frame::tcp(ip("10.0.0.5"), ip("10.9.9.9"), 40000, 23)
        .syn()
        .build()
}
fn unmatched() -> Vec<u8> {
    Frame::tcp(ip("198.51.100.7"), ip("10.9.9.9"), 40000, 443)
        .syn()
        .build()
}

/// What one interface must do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Want {
    action: XdpAction,
    reason: Reason,
    would_drop: bool,
}

const fn pass(reason: Reason) -> Want {
    Want {
        action: XdpAction::Pass,
        reason,
        would_drop: false,
    }
}
const fn drop(reason: Reason) -> Want {
    Want {
        action: XdpAction::Drop,
        reason,
        would_drop: false,
    }
}
const fn would_drop(reason: Reason) -> Want {
    Want {
        action: XdpAction::Pass,
        reason,
        would_drop: true,
    }
}

/// Judge `frame` as arriving on `ifname` in the kernel and in the model; both must give
/// `want`. Returns a description of every mismatch.
fn check(
    filter: &mut Filter,
    policy: &Policy,
    ifname: &str,
    what: &str,
    frame: &[u8],
    want: Want,
) -> Vec<String> {
    let mut failures = Vec::new();
    filter
        .maps_mut()
        .test_runs_arrive_on(ifname)
        .expect("the loopback stands in for the interface");
    let j = Model::on_interface(policy, ifname).judge(frame);
    let model = Want {
        action: if j.pass {
            XdpAction::Pass
        } else {
            XdpAction::Drop
        },
        reason: j.reason,
        would_drop: j.would_drop,
    };
    if model != want {
        failures.push(format!("{ifname} {what}: model {model:?}, want {want:?}"));
    }
    let mut judge = KernelJudge::new(filter).expect("read the counters");
    let v = judge
        .judge(frame, Some(want.reason.stat_slot(want.would_drop)), None)
        .expect("test run");
    let kernel = Want {
        action: v.action,
        reason: v.reason,
        would_drop: v.would_drop,
    };
    if kernel != want {
        failures.push(format!("{ifname} {what}: kernel {kernel:?}, want {want:?}"));
    }
    failures
}

/// Load the program and publish `policy` once; then ask each interface about each frame.
fn run_table(policy: &Policy, table: &[(&str, [Want; 3])]) {
    let mut filter = common::load_private();
    let tables = compile(policy, &RuleSlots::new()).expect("compile");
    filter.maps_mut().publish(&tables).expect("publish");
    let frames = [
        ("allowed", allowed()),
        ("denied", denied()),
        ("unmatched", unmatched()),
    ];
    let mut failures = Vec::new();
    for (ifname, wants) in table {
        for ((what, frame), want) in frames.iter().zip(wants) {
            failures.extend(check(&mut filter, policy, ifname, what, frame, *want));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn interfaces_get_their_own_mode_and_default() {
    use Reason::*;
    let policy = policy(
        "interfaces:
  ng-mon0: {mode: monitor}
  ng-open0: {default: pass}
  ng-both0: {mode: monitor, default: pass}
",
    );
    run_table(
        &policy,
        &[
            // Not named: the file's enforce + default drop.
            (
                "ng-none0",
                [pass(AllowRule), drop(DenyRule), drop(NoSourceMatch)],
            ),
            (
                "ng-mon0",
                [
                    pass(AllowRule),
                    would_drop(DenyRule),
                    would_drop(NoSourceMatch),
                ],
            ),
            (
                "ng-open0",
                [pass(AllowRule), drop(DenyRule), pass(DefaultPass)],
            ),
            (
                "ng-both0",
                [pass(AllowRule), would_drop(DenyRule), pass(DefaultPass)],
            ),
        ],
    );
}

#[test]
fn an_interface_can_enforce_while_the_file_monitors() {
    use Reason::*;
    let policy = policy(
        "mode: monitor
default: pass
interfaces:
  ng-strict0: {mode: enforce, default: drop}
",
    );
    run_table(
        &policy,
        &[
            (
                "ng-none0",
                [pass(AllowRule), would_drop(DenyRule), pass(DefaultPass)],
            ),
            (
                "ng-strict0",
                [pass(AllowRule), drop(DenyRule), drop(NoSourceMatch)],
            ),
        ],
    );
}

#[test]
fn rules_that_name_interfaces_apply_only_there() {
    use Reason::*;
    let policy = policy(
        "  - {name: strangers, from: [198.51.100.0/24], protocol: tcp, ports: [443], interfaces: [ng-in0, ng-in1]}
  - {name: no-https-here, from: [10.0.0.0/24], protocol: tcp, ports: [443], action: deny, interfaces: [ng-in1]}
interfaces:
  ng-in0: {mode: monitor}
",
    );
    run_table(
        &policy,
        &[
            // The scoped rules do not exist here, the strangers' source included.
            (
                "ng-none0",
                [pass(AllowRule), drop(DenyRule), drop(NoSourceMatch)],
            ),
            (
                "ng-in0",
                [pass(AllowRule), would_drop(DenyRule), pass(AllowRule)],
            ),
            // Its own deny rule beats the allow rule every interface has.
            ("ng-in1", [drop(DenyRule), drop(DenyRule), pass(AllowRule)]),
        ],
    );
}

#[test]
fn interface_settings_flip_with_their_generation() {
    let monitored = policy("interfaces:\n  ng-flip0: {mode: monitor}\n");
    let plain = policy("");
    let mut filter = common::load_private();
    let mut slots = RuleSlots::new();
    let mut publish = |filter: &mut Filter, p: &Policy| {
        let tables = compile(p, &slots).expect("compile");
        filter.maps_mut().publish(&tables).expect("publish");
        slots.commit(&tables);
        filter.maps().control().expect("control word").active_gen
    };
    let bits = |filter: &Filter, generation: u32| {
        let lo = filter.maps().test_run_slot();
        let (_, entry) = filter
            .maps()
            .interfaces()
            .into_iter()
            .find(|(_, e)| e.slot == lo)
            .expect("the loopback is registered");
        iface_override::of_gen(entry.overrides, generation)
    };
    let monitor_bits = iface_override::MODE | iface_override::MONITOR;

    let first = publish(&mut filter, &monitored);
    filter
        .maps_mut()
        .test_runs_arrive_on("ng-flip0")
        .expect("stand-in");
    assert_eq!(
        bits(&filter, first),
        monitor_bits,
        "registered after the publish, it gets the active generation's settings"
    );
    let mut failures = check(
        &mut filter,
        &monitored,
        "ng-flip0",
        "denied",
        &denied(),
        would_drop(Reason::DenyRule),
    );

    let second = publish(&mut filter, &plain);
    assert_ne!(first, second, "a publish flips to the other slot");
    assert_eq!(
        bits(&filter, second),
        0,
        "the new generation has no settings for it"
    );
    assert_eq!(
        bits(&filter, first),
        monitor_bits,
        "the old generation's byte is left alone until it is rewritten"
    );
    failures.extend(check(
        &mut filter,
        &plain,
        "ng-flip0",
        "denied",
        &denied(),
        drop(Reason::DenyRule),
    ));

    let third = publish(&mut filter, &monitored);
    assert_eq!(third, first);
    assert_eq!(bits(&filter, third), monitor_bits);
    failures.extend(check(
        &mut filter,
        &monitored,
        "ng-flip0",
        "denied",
        &denied(),
        would_drop(Reason::DenyRule),
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
