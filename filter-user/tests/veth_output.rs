//! The output contract (docs/OUTPUT.md) of the commands that need the kernel, on a real
//! veth attach: `stats`, `status`, the daemon's answers, `observe` (relayed by the daemon,
//! and read from the pinned ring without one), `detach`/`uninstall` and `mount-bpffs`, each
//! against its schema; errors as JSON.
#![cfg(feature = "privileged-tests")]

mod common;
#[path = "schema/mod.rs"]
mod schema;

use std::{
    net::IpAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::daemon::{Daemon, Env};
use filter_user::{craft::Frame, lab::RawSender};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/testcases.yaml");
const NODE: &str = "203.0.113.1";

/// A SYN from outside every set: dropped as `no-source-match`, so it is sampled.
fn stranger_frame() -> Vec<u8> {
    let from: IpAddr = "198.51.100.7".parse().unwrap();
    Frame::tcp(from, NODE.parse().unwrap(), 40000, 10250)
        .syn()
        .build()
}

/// `nodegate ARGS` in JSON mode, to completion: (exit code, stdout, stderr).
fn json(env: &Env, args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = env.run(&all);
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

/// Start `nodegate observe ARGS` and keep sending stranger frames until it has shown what
/// it was asked to (`--count`) and exited; its stdout and stderr.
fn observe_while_sending(env: &Env, sender: &RawSender, args: &[&str]) -> (String, String) {
    let mut cmd = env.nodegate(&[&["observe"][..], args].concat());
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start observe");
    let deadline = Instant::now() + common::patience(Duration::from_secs(20));
    let frame = stranger_frame();
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        common::send_paced(sender, &frame, 4);
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "observe {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

/// The samples `observe -o json` printed, each checked against its schema.
fn samples(stdout: &str) -> Vec<Value> {
    schema::lines("observe", stdout.as_bytes())
        .into_iter()
        .filter(|line| line.get("lost").is_none())
        .collect()
}

#[test]
fn daemon_commands_print_their_schemas() {
    let env = Env::new("outd");
    let config = env.write_config("rules.yaml", FIXTURE);
    let _daemon = env.start_daemon(&config, &[]);
    let sender = env.lab.peer_sender().unwrap();
    common::send_paced(&sender, &stranger_frame(), 10);
    env.wait_counted("no-source-match", 10);

    let (code, out, err) = json(&env, &["stats"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let stats = schema::document("stats", &out);
    let dropped = stats["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "no-source-match" && r["interface"] == env.lab.node_if.as_str())
        .unwrap_or_else(|| panic!("no-source-match on {}: {stats:#}", env.lab.node_if));
    assert_eq!(
        (&dropped["verdict"], &dropped["would_drop"]),
        (&"drop".into(), &false.into())
    );
    assert!(dropped["packets"].as_u64() >= Some(10), "{dropped}");

    let (code, out, _) = json(&env, &["status"]);
    assert_eq!(code, 0);
    let status = schema::document("status", &out);
    assert!(status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "control-plane-api"));

    let (code, out, err) = json(&env, &["reload"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    schema::document("answer", &out);
    // Nothing on probation: the daemon refuses, as a JSON error on stderr.
    let (code, out, err) = json(&env, &["confirm"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    schema::error(&err);

    // `stats --watch` is a stream: one object a line.
    let mut watch = env
        .nodegate(&["stats", "--watch", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(common::patience(Duration::from_millis(1500)));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let snapshots = schema::lines("stats", &out.stdout);
    assert!(!snapshots.is_empty(), "no snapshot in 1.5 s");
}

/// `observe` follows a lab's drops live: relayed by the daemon (whose own log misses none
/// of them), filtered, text or JSON; and from the pinned ring once the daemon is gone.
#[test]
fn observe_follows_drops_with_and_without_the_daemon() {
    let env = Env::new("outo");
    let config = env.write_config("rules.yaml", FIXTURE);
    let mut daemon: Daemon = env.start_daemon(&config, &[]);
    let sender = env.lab.peer_sender().unwrap();

    let (stdout, _) = observe_while_sending(
        &env,
        &sender,
        &[
            "-o",
            "json",
            "--count",
            "3",
            "--reason",
            "no-source-match",
            "--from",
            "198.51.100.0/24",
        ],
    );
    let seen = samples(&stdout);
    assert_eq!(seen.len(), 3, "{stdout}");
    for s in &seen {
        assert_eq!(s["src"], "198.51.100.7");
        assert_eq!(s["dst"], NODE);
        assert_eq!(s["dport"], 10250);
        assert_eq!(s["proto"], "tcp");
        assert_eq!(s["interface"], env.lab.node_if.as_str());
        assert_eq!(
            (&s["verdict"], &s["would_drop"]),
            (&"drop".into(), &false.into())
        );
    }
    // The daemon, the ring's only reader, logged at least what it relayed.
    let logged = daemon.log_text().matches("drop sample").count();
    assert!(
        logged >= 3,
        "daemon logged {logged} samples:\n{}",
        daemon.log_text()
    );
    // A filter nothing matches shows nothing.
    let (stdout, _) = observe_while_sending(
        &env,
        &sender,
        &["-o", "json", "--duration", "2", "--from", "10.0.0.0/8"],
    );
    assert!(samples(&stdout).is_empty(), "{stdout}");

    // SIGTERM leaves the filter enforcing; observe reads the pinned ring itself.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());
    let (stdout, stderr) = observe_while_sending(&env, &sender, &["--count", "2"]);
    assert!(stderr.contains("from the pinned ring"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        assert!(
            line.contains(" reason=no-source-match src=198.51.100.7 ")
                && line.ends_with(&format!("interface={} would_drop=false", env.lab.node_if)),
            "{line}"
        );
    }
}

/// `detach`, `uninstall` and `mount-bpffs` say what they did in JSON; a missing interface
/// is a JSON error.
#[test]
fn removal_commands_print_their_schemas() {
    let env = Env::new("outr");
    let config = env.write_config("rules.yaml", FIXTURE);
    let mut daemon = env.start_daemon(&config, &[]);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(10)).success());

    let (code, _, err) = json(&env, &["detach", "--iface", "nosuchif0"]);
    assert_eq!(code, 1);
    schema::error(&err);
    let (code, out, err) = json(&env, &["detach", "--iface", &env.lab.node_if]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let v = schema::document("detach", &out);
    assert_eq!(v["detached"][0], env.lab.node_if.as_str());
    assert!(
        v["removed"].is_string(),
        "the last interface takes the pins: {v}"
    );
    let (code, out, _) = json(&env, &["uninstall"]);
    assert_eq!(code, 0);
    let v = schema::document("detach", &out);
    assert_eq!(v, serde_json::json!({"detached": [], "removed": null}));

    let (code, out, _) = json(&env, &["mount-bpffs", "/sys/fs/bpf"]);
    assert_eq!(code, 0);
    let v = schema::document("mount-bpffs", &out);
    assert_eq!(v["mounted"], false, "already mounted");
}

/// `replay --live -o json` (its own private lab): the one `{"live":{…}}` document matches
/// its schema and names what sent the frames: the live-frames generator, or the AF_PACKET
/// socket where the kernel refuses live-frames mode (this machine kind's 6.18 sandbox
/// kernel does).
#[test]
fn live_replay_prints_its_schema_and_names_the_sender() {
    let env = Env::new("outl");
    let pcap = env.dir.join("traffic.pcap");
    let pcap = pcap.to_str().unwrap();
    common::daemon::assert_success(&env.run(&["gen-traffic", pcap, "--count", "200"]));
    let config = env.write_config("rules.yaml", FIXTURE);
    let (code, out, err) = json(
        &env,
        &[
            "replay",
            pcap,
            "--config",
            config.to_str().unwrap(),
            "--live",
        ],
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let v = schema::document("replay", &out);
    let live = &v["live"];
    let n = |k: &str| live[k].as_u64().unwrap();
    assert!(
        ["xdp-live-frames", "af-packet"].contains(&live["generator"].as_str().unwrap()),
        "{v}"
    );
    assert!(n("sent") > 0 && n("delivered") >= n("sent") * 9 / 10, "{v}");
    assert_eq!(n("passed") + n("dropped"), n("delivered"), "{v}");
}
