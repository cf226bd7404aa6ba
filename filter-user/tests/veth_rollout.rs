//! Confirmed changes in the lab (docs/OPERATIONS.md, "Changing rules without fear"): a
//! change that breaks a probe is rolled back within its window, one confirmed in time stays
//! and is written into the rule file, a probation survives the daemon being SIGKILLed, a
//! `rollout:` section makes a file edit a confirmed change that a restart does not re-apply,
//! a change that drops an established session rolls back, and `diff` names the sessions a
//! change would cut.
//!
//! The lab's "API server" is a TCP listener in the peer namespace (192.0.2.9:6443); the
//! node reaches it while its SYN-ACKs pass the filter (`return_traffic: ephemeral`), and a
//! change to `return_traffic: off` cuts it off.
#![cfg(feature = "privileged-tests")]

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::daemon::{assert_success, metric, Daemon, Env};
use filter_user::lab::in_netns;

const API_SERVER: &str = "192.0.2.9:6443";
const PROBE: &str = "tcp:192.0.2.9:6443";

/// The running rules: the peer may reach the node's port 2222, and replies to the node's
/// own connections pass.
const OLD: &str = "version: 1
default: drop
return_traffic:
  mode: ephemeral
  ports: \"32768-60999\"
sets:
  lab-peer: [192.0.2.9/32]
rules:
  - {name: lab-session, from: [lab-peer], protocol: tcp, ports: [2222]}
";

/// A harmless change: one more rule.
fn harmless() -> String {
    format!("{OLD}  - {{name: extra, from: [198.51.100.0/24], protocol: tcp, ports: [443]}}\n")
}

/// A change that cuts the node off from the API server: replies no longer pass.
fn breaking() -> String {
    OLD.replace(
        "return_traffic:\n  mode: ephemeral\n  ports: \"32768-60999\"\n",
        "return_traffic: off\n",
    )
}

/// The lab's API server: accepts and closes connections until the test ends.
fn api_server(env: &Env) {
    let listener = in_netns(&env.lab.peer_ns, || TcpListener::bind(API_SERVER))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
}

/// Whether the node reaches the API server now (a TCP handshake within a second).
fn node_reaches_api_server(env: &Env) -> bool {
    in_netns(&env.lab.node_ns, || {
        TcpStream::connect_timeout(&API_SERVER.parse().unwrap(), Duration::from_secs(1)).is_ok()
    })
    .unwrap()
}

fn start(env: &Env, port: Option<u16>) -> Daemon {
    let config = env.dir.join("rules.yaml");
    if !config.exists() {
        env.write_config("rules.yaml", OLD);
    }
    match port {
        Some(port) => env.start_daemon(&config, &["--metrics", &format!("127.0.0.1:{port}")]),
        None => env.start_daemon(&config, &[]),
    }
}

fn status_json(env: &Env) -> serde_json::Value {
    let out = env.run(&["status", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Names of the rules the daemon has active.
fn active_rules(env: &Env) -> Vec<String> {
    status_json(env)["daemon"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::patience(within);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn port_for(offset: u16) -> u16 {
    20000 + (std::process::id() % 20000) as u16 + offset
}

#[test]
fn a_change_that_breaks_a_probe_is_rolled_back_within_the_window() {
    let env = Env::new("rb-probe");
    api_server(&env);
    let port = port_for(31);
    let daemon = start(&env, Some(port));
    assert!(node_reaches_api_server(&env), "reachable before the change");
    let next = env.write_config("next.yaml", &breaking());

    let applied = Instant::now();
    let out = env.run(&[
        "apply",
        next.to_str().unwrap(),
        "--confirm-within",
        "60s",
        "--probe",
        PROBE,
    ]);
    assert_success(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("on probation for 60 s"), "{said}");
    assert!(said.contains(PROBE), "the probe is in use: {said}");

    daemon.wait_for_log("rolled back: ", Duration::from_secs(20));
    let took = applied.elapsed();
    eprintln!("apply → rollback: {took:?}");
    assert!(
        took < common::patience(Duration::from_secs(20)),
        "rolled back within the window, not at its end: {took:?}"
    );
    let log = daemon.log_text();
    for line in log
        .lines()
        .filter(|l| l.contains("probation") || l.contains("rolled back"))
    {
        eprintln!("{line}");
    }
    assert!(log.contains("cause=\"probe\""), "{log}");
    assert!(log.contains("probe tcp:192.0.2.9:6443 failed"), "{log}");
    assert!(node_reaches_api_server(&env), "the old rules are back");

    let text = daemon_metrics(&env, port);
    assert_eq!(
        metric(&text, "nodegate_rollbacks_total", &[("cause", "probe")]),
        1
    );
    assert!(text.contains("nodegate_rollout_pending 0"), "{text}");
    for trigger in ["start", "nodegate apply", "rollback (probe)"] {
        assert_eq!(
            metric(&text, "nodegate_publishes_total", &[("trigger", trigger)]),
            1,
            "{text}"
        );
    }
    let status = status_json(&env);
    let history = status["daemon"]["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["trigger"], "rollback (probe)", "{history:?}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("probe tcp:192.0.2.9:6443 failed"),
        "{last}"
    );
    assert_eq!(
        std::fs::read_to_string(env.dir.join("rules.yaml")).unwrap(),
        OLD,
        "the rule file is untouched"
    );
    assert!(status["daemon"]["not_ready"].is_null(), "{status}");
    // Nothing is left on probation.
    let out = env.run(&["confirm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no change is on probation"));
}

fn daemon_metrics(env: &Env, port: u16) -> String {
    env.scrape(port)
}

#[test]
fn a_change_confirmed_in_time_stays_and_rollback_flips_back_at_once() {
    let env = Env::new("rb-confirm");
    let _daemon = start(&env, None);
    let next = env.write_config("next.yaml", &harmless());
    let out = env.run(&["apply", next.to_str().unwrap(), "--confirm-within", "30s"]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unless `nodegate confirm` comes first"));
    assert!(active_rules(&env).contains(&"extra".to_string()));
    let status = status_json(&env);
    assert_eq!(status["daemon"]["rollout"]["phase"], "pending", "{status}");
    assert!(
        status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("on probation")),
        "{status}"
    );

    let out = env.run(&["confirm"]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("written into"));
    assert_eq!(
        std::fs::read_to_string(env.dir.join("rules.yaml")).unwrap(),
        harmless(),
        "the confirmed rules are the daemon's rule file now"
    );
    // The file event of that write publishes nothing new and starts no probation.
    std::thread::sleep(Duration::from_secs(1));
    assert!(status_json(&env)["daemon"]["rollout"].is_null());
    assert!(active_rules(&env).contains(&"extra".to_string()));

    // `rollback` flips back at once.
    let out = env.run(&[
        "apply",
        env.write_config("third.yaml", OLD).to_str().unwrap(),
        "--confirm-within",
        "30s",
    ]);
    assert_success(&out);
    assert!(!active_rules(&env).contains(&"extra".to_string()));
    let out = env.run(&["rollback"]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rolled back"),
        "{out:?}"
    );
    assert!(active_rules(&env).contains(&"extra".to_string()));
    assert_eq!(
        std::fs::read_to_string(env.dir.join("rules.yaml")).unwrap(),
        harmless()
    );
}

#[test]
fn a_probation_survives_the_daemon_being_killed() {
    let env = Env::new("rb-kill");
    let mut daemon = start(&env, None);
    let next = env.write_config("next.yaml", &harmless());
    let window = 12;
    let applied = Instant::now();
    let out = env.run(&[
        "apply",
        next.to_str().unwrap(),
        "--confirm-within",
        &format!("{window}s"),
    ]);
    assert_success(&out);

    // Killed in the window and started again: the probation resumes, and the unconfirmed
    // change is rolled back on time.
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    let daemon = start(&env, None);
    assert!(daemon.log_text().contains("resuming a confirmed change"));
    assert!(active_rules(&env).contains(&"extra".to_string()));
    daemon.wait_for_log("rolled back: ", Duration::from_secs(window + 10));
    let took = applied.elapsed();
    eprintln!("apply → rollback across a SIGKILL: {took:?} (window {window} s)");
    assert!(
        took >= Duration::from_secs(window),
        "not before the deadline: {took:?}"
    );
    assert!(daemon.log_text().contains("not confirmed within 12 s"));
    assert!(!active_rules(&env).contains(&"extra".to_string()));

    // Killed, and down past the deadline: rolled back as it starts.
    let mut daemon = daemon;
    let out = env.run(&["apply", next.to_str().unwrap(), "--confirm-within", "5s"]);
    assert_success(&out);
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(6));
    let daemon = start(&env, None);
    assert!(
        daemon.log_text().contains("rolling back at start"),
        "{}",
        daemon.log_text()
    );
    assert!(!active_rules(&env).contains(&"extra".to_string()));

    // And a confirmation after a restart is honoured.
    let mut daemon = daemon;
    assert_success(&env.run(&["apply", next.to_str().unwrap(), "--confirm-within", "30s"]));
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    let _daemon = start(&env, None);
    assert_success(&env.run(&["confirm"]));
    assert!(active_rules(&env).contains(&"extra".to_string()));
}

#[test]
fn a_rollout_section_makes_a_file_edit_a_confirmed_change_a_restart_does_not_reapply() {
    let env = Env::new("rb-file");
    api_server(&env);
    let daemon = start(&env, None);
    let bad = format!(
        "{}rollout:\n  confirm_within: 60s\n  probes: [{PROBE}]\n",
        breaking()
    );
    // An edit as a ConfigMap update lands: a new file renamed over the old one.
    let tmp = env.write_config("rules.yaml.new", &bad);
    std::fs::rename(&tmp, env.dir.join("rules.yaml")).unwrap();
    daemon.wait_for_log("rolled back: ", Duration::from_secs(20));
    assert!(node_reaches_api_server(&env));
    let status = status_json(&env);
    let not_ready = status["daemon"]["not_ready"].as_str().unwrap_or("");
    assert!(not_ready.contains("was rolled back"), "{status}");
    drop(daemon);

    // A restart keeps to the rules the refused change replaced.
    let daemon = start(&env, None);
    assert!(
        daemon
            .log_text()
            .contains("still holds a change that was rolled back"),
        "{}",
        daemon.log_text()
    );
    assert!(node_reaches_api_server(&env));
    // Fixing the file lets the next change through (and clears readiness).
    let good = format!(
        "{}rollout:\n  confirm_within: 5s\n  probes: [{PROBE}]\n",
        harmless()
    );
    let tmp = env.write_config("rules.yaml.new", &good);
    std::fs::rename(&tmp, env.dir.join("rules.yaml")).unwrap();
    daemon.wait_for_log("probes passed through the window", Duration::from_secs(30));
    assert!(active_rules(&env).contains(&"extra".to_string()));
    wait_until("ready again", Duration::from_secs(5), || {
        status_json(&env)["daemon"]["not_ready"].is_null()
    });
}

/// A TCP session from the peer to the node's port 2222, established under the old rules.
fn session(env: &Env) -> (TcpStream, TcpStream) {
    let listener = in_netns(&env.lab.node_ns, || TcpListener::bind("192.0.2.1:2222"))
        .unwrap()
        .unwrap();
    let client = in_netns(&env.lab.peer_ns, || {
        TcpStream::connect_timeout(&"192.0.2.1:2222".parse().unwrap(), Duration::from_secs(5))
    })
    .unwrap()
    .unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn a_change_that_drops_an_established_session_is_rolled_back() {
    let env = Env::new("rb-session");
    let daemon = start(&env, None);
    let (mut client, mut server) = session(&env);
    let without_session = OLD.replace(
        "  - {name: lab-session, from: [lab-peer], protocol: tcp, ports: [2222]}\n",
        "  - {name: other, from: [198.51.100.0/24], protocol: tcp, ports: [2222]}\n",
    );
    let next = env.write_config("next.yaml", &without_session);
    let out = env.run(&["apply", next.to_str().unwrap(), "--confirm-within", "60s"]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("watching"),
        "{out:?}"
    );
    // The peer talks on its session: dropped, sampled, rolled back; TCP retransmits it.
    client.write_all(b"still there?").unwrap();
    daemon.wait_for_log("rolled back: ", Duration::from_secs(20));
    assert!(
        daemon
            .log_text()
            .contains("established before the change (192.0.2.9:"),
        "{}",
        daemon.log_text()
    );
    server
        .set_read_timeout(Some(common::patience(Duration::from_secs(10))))
        .unwrap();
    let mut got = [0u8; 12];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still there?", "the session survived the change");
}

#[test]
fn diff_names_the_set_and_the_sessions_a_change_cuts() {
    let env = Env::new("rb-diff");
    let (_client, _server) = session(&env);
    let old = env.write_config("old.yaml", OLD);
    let without_set = "version: 1\ndefault: drop\nreturn_traffic:\n  mode: ephemeral\n  ports: \"32768-60999\"\nrules:\n  - {name: other, from: [198.51.100.0/24], protocol: tcp, ports: [2222]}\n";
    let new = env.write_config("new.yaml", without_set);
    let out = env.run(&[
        "diff",
        new.to_str().unwrap(),
        "--against",
        old.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("set -     lab-peer"), "{text}");
    assert!(
        text.contains("session   TCP from 192.0.2.9 to local port 2222: pass (lab-session) → drop"),
        "{text}"
    );
    let same = env.run(&[
        "diff",
        old.to_str().unwrap(),
        "--against",
        old.to_str().unwrap(),
    ]);
    assert_eq!(same.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&same.stdout).contains("no change"));
}

#[test]
fn diff_names_the_open_flows_a_change_away_from_stateful_return_traffic_cuts() {
    let env = Env::new("rb-flows");
    api_server(&env);
    let stateful = OLD.replace(
        "return_traffic:\n  mode: ephemeral\n  ports: \"32768-60999\"\n",
        "return_traffic: stateful\n",
    );
    let config = env.write_config("rules.yaml", &stateful);
    let _daemon = env.start_daemon(&config, &[]);
    // The node opens a connection to the API server and keeps it: the egress recorder
    // learns its flow.
    let conn = in_netns(&env.lab.node_ns, || {
        TcpStream::connect_timeout(&API_SERVER.parse().unwrap(), Duration::from_secs(5))
    })
    .unwrap()
    .expect("the node reaches the API server under stateful return traffic");
    let local_port = conn.local_addr().unwrap().port();
    let off = env.write_config("off.yaml", &breaking());
    let out = env.run(&["diff", off.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "flow      tcp from 192.0.2.9 to port/type {local_port} (an open flow): pass (return-traffic) → drop"
        )),
        "{text}"
    );
    // A change that keeps stateful return traffic cuts no flow.
    let out = env.run(&["diff", env.write_config("same-mode.yaml", &format!("{stateful}  - {{name: extra, from: [198.51.100.0/24], protocol: tcp, ports: [443]}}\n")).to_str().unwrap()]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("flow  "),
        "{out:?}"
    );
}

#[test]
fn diff_judges_the_packets_the_daemon_dropped_lately() {
    let env = Env::new("rb-seen");
    let _daemon = start(&env, None);
    // The peer tries the node's port 443: dropped, and sampled.
    let tried = in_netns(&env.lab.peer_ns, || {
        TcpStream::connect_timeout(
            &"192.0.2.1:443".parse().unwrap(),
            Duration::from_millis(300),
        )
    })
    .unwrap();
    assert!(tried.is_err(), "dropped under the running rules");
    let opened =
        format!("{OLD}  - {{name: peer-https, from: [lab-peer], protocol: tcp, ports: [443]}}\n");
    let next = env.write_config("next.yaml", &opened);
    let mut text = String::new();
    wait_until(
        "the drop sample reaches diff",
        Duration::from_secs(10),
        || {
            text = String::from_utf8_lossy(&env.run(&["diff", next.to_str().unwrap()]).stdout)
                .into_owned();
            text.contains("seen      tcp from 192.0.2.9 to port/type 443 (dropped lately)")
        },
    );
    assert!(text.contains("→ pass (peer-https)"), "{text}");
}
