//! TESTCASES 28, stateful return traffic on a veth pair through the real `nodegate run`: the
//! TC egress program learns the flows the node opens, the XDP program passes their replies
//! as `return-traffic`, a new inbound connection is dropped, an idle flow expires; `detach`
//! removes both programs and a restart adopts both links.
//!
//! The peer (192.0.2.9) is not allowed by any rule: whatever of its traffic reaches the node
//! does so as return traffic (or essentials: ARP).
#![cfg(feature = "privileged-tests")]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::daemon::{reason_total, Env};
use filter_user::{
    lab::in_netns,
    loader::{
        attach::egress_programs,
        features::{EgressHook, KernelFeatures},
    },
};

const NODE: &str = "192.0.2.1";
const PEER: &str = "192.0.2.9";
const UDP_TIMEOUT_SECS: u64 = 2;

const CONFIG: &str = "version: 1
mode: enforce
default: drop
return_traffic:
  mode: stateful
  timeouts: { tcp: 60, tcp_closing: 5, udp: 2, icmp: 10 }
  capacity: 4096
rules:
  - name: https-elsewhere
    from: [203.0.113.0/24]
    protocol: tcp
    ports: [443]
";

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// Packets counted under `reason` so far.
fn count(env: &Env, reason: &str) -> u64 {
    reason_total(&env.snapshot(), reason).0
}

/// The egress programs on the node interface, with the form each is hooked by (TCX link or
/// clsact filter: kernels without TCX get the latter).
///
/// NB: Debian's bpftool 7.1 predates TCX (`bpftool net show` lists no tcx links), so this
/// asks the kernel directly (BPF_PROG_QUERY) and iproute2's `tc` for clsact filters.
fn egress_hooks(env: &Env) -> Vec<(EgressHook, String)> {
    let ifname = env.lab.node_if.clone();
    in_netns(&env.lab.node_ns, move || egress_programs(&ifname)).unwrap()
}

/// Names of the egress programs on the node interface, whatever their form.
fn egress_programs_on(env: &Env) -> Vec<String> {
    egress_hooks(env)
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// The form new attachments take here: TCX where the kernel has it.
fn native_hook() -> EgressHook {
    if KernelFeatures::probe().tcx.present() {
        EgressHook::Tcx
    } else {
        EgressHook::Clsact
    }
}

/// `nodegate detach` on the node interface takes the XDP program and the egress recorder
/// away, whatever form the recorder had.
fn detach_removes_both(env: &Env) {
    let out = env.run(&["detach", "--iface", &env.lab.node_if]);
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        egress_hooks(env).is_empty(),
        "detach removed the egress recorder"
    );
    assert_eq!(env.xdp_prog_id(), None, "detach removed the XDP program");
}

/// A TCP echo server in the peer namespace on `port`, serving one connection per entry of
/// `conns`; returns once it listens.
fn peer_tcp_echo(env: &Env, port: u16, conns: usize) -> std::thread::JoinHandle<()> {
    let ns = env.lab.peer_ns.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        in_netns(&ns, || {
            let l = TcpListener::bind(addr(PEER, port)).expect("bind peer listener");
            ready_tx.send(()).unwrap();
            for _ in 0..conns {
                let (mut s, _) = l.accept().expect("accept");
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap_or(0);
                let _ = s.write_all(&buf[..n]);
            }
        })
        .expect("enter peer netns");
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    handle
}

#[test]
fn stateful_replies_pass_new_inbound_drops_idle_flows_expire() {
    let env = Env::new("rt28");
    let config = env.write_config("rules.yaml", CONFIG);
    let port = 20000 + (std::process::id() % 20000) as u16 + 7;
    let daemon = env.start_daemon(&config, &["--metrics", &format!("127.0.0.1:{port}")]);
    daemon.wait_for_log("serving Prometheus metrics", Duration::from_secs(10));
    assert_eq!(
        egress_hooks(&env),
        [(native_hook(), "nodegate_egress".to_string())],
        "the TC egress program is attached, through TCX where the kernel has it, else clsact"
    );

    // (1) The node opens TCP connections to the peer on a port no rule mentions.
    let before = count(&env, "return-traffic");
    let server = peer_tcp_echo(&env, 7000, 2);
    let node_ns = env.lab.node_ns.clone();
    for round in 0..2u8 {
        let echoed = in_netns(&node_ns, || {
            let mut s = TcpStream::connect_timeout(&addr(PEER, 7000), Duration::from_secs(5))
                .expect("connect to the peer");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&[b'x', round]).unwrap();
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).expect("echo arrives");
            buf
        })
        .unwrap();
        assert_eq!(echoed, [b'x', round]);
    }
    server.join().unwrap();
    let after_tcp = count(&env, "return-traffic");
    assert!(
        after_tcp >= before + 4,
        "SYN-ACKs and data came back as return traffic ({before} → {after_tcp})"
    );

    // (2) The peer opening a connection inward, to a node listener no rule allows: dropped.
    let no_source = count(&env, "no-source-match");
    let (ready_tx, ready_rx) = mpsc::channel();
    let listener = {
        let ns = env.lab.node_ns.clone();
        std::thread::spawn(move || {
            in_netns(&ns, || {
                let l = TcpListener::bind(addr(NODE, 7001)).unwrap();
                l.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(4);
                while Instant::now() < deadline {
                    if l.accept().is_ok() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                false
            })
            .unwrap()
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let inbound = in_netns(&env.lab.peer_ns, || {
        TcpStream::connect_timeout(&addr(NODE, 7001), Duration::from_secs(2)).is_ok()
    })
    .unwrap();
    assert!(!inbound, "a new inbound connection must not get through");
    assert!(!listener.join().unwrap(), "the node never accepted it");
    assert!(
        count(&env, "no-source-match") > no_source,
        "the SYN was dropped as no-source-match"
    );

    // (3) UDP query node → peer:5353 and its reply.
    let peer_ns = env.lab.peer_ns.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (port_tx, port_rx) = mpsc::channel::<SocketAddr>();
    let responder = std::thread::spawn(move || {
        in_netns(&peer_ns, || {
            let s = UdpSocket::bind(addr(PEER, 5353)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf).expect("query arrives");
            s.send_to(&buf[..n], from).unwrap();
            port_tx.send(from).unwrap();
            // (4) After the flow's idle timeout, a late datagram to the same port.
            std::thread::sleep(Duration::from_secs(UDP_TIMEOUT_SECS + 2));
            s.send_to(b"late", from).unwrap();
        })
        .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let before_udp = count(&env, "return-traffic");
    let dropped_before = count(&env, "no-source-match");
    let (reply, late) = in_netns(&env.lab.node_ns, || {
        let s = UdpSocket::bind(addr(NODE, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"query", addr(PEER, 5353)).unwrap();
        let mut buf = [0u8; 64];
        let reply = s.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec()).ok();
        s.set_read_timeout(Some(Duration::from_secs(UDP_TIMEOUT_SECS + 4)))
            .unwrap();
        let late = s.recv_from(&mut buf).is_ok();
        (reply, late)
    })
    .unwrap();
    let _ = port_rx.recv_timeout(Duration::from_secs(1));
    responder.join().unwrap();
    assert_eq!(
        reply.as_deref(),
        Some(&b"query"[..]),
        "the UDP reply arrived"
    );
    assert!(
        count(&env, "return-traffic") > before_udp,
        "the reply counted as return traffic"
    );
    assert!(!late, "a datagram after the idle timeout is dropped");
    assert!(
        count(&env, "no-source-match") > dropped_before,
        "the late datagram counted as no-source-match"
    );

    // (5) ping node → peer: echo replies pass by identifier.
    let before_ping = count(&env, "return-traffic");
    let ping = env
        .lab
        .node_cmd("ping", &["-c", "2", "-i", "0.2", "-W", "2", PEER])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping from the node gets its replies: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(count(&env, "return-traffic") >= before_ping + 2);
    // ... but the peer's own pings are no flow of the node's.
    let ping_in = env
        .lab
        .peer_cmd("ping", &["-c", "1", "-W", "1", NODE])
        .output()
        .unwrap();
    assert!(
        !ping_in.status.success(),
        "inbound echo requests stay dropped"
    );

    let flows = filter_user::loader::FilterMaps::open_pinned(&env.pins.maps_dir())
        .unwrap()
        .flow_counts()
        .unwrap();
    assert!(flows.inserts >= 4, "flows were learned: {flows:?}");
    assert_eq!(flows.evictions, 0, "nothing evicted: {flows:?}");
    // `nodegate stats --json` reports the flow table.
    let out = env.run(&["stats", "-o", "json"]);
    assert!(
        out.status.success(),
        "stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    assert!(
        json["flows"]["inserted"].as_u64() >= Some(4),
        "stats shows the learned flows: {}",
        json["flows"]
    );
    assert!(json["flows"]["entries"].as_u64() >= Some(4));
    // ... and so do the metrics, entries and capacity.
    let text = env.scrape(port);
    assert!(
        common::daemon::metric(&text, "nodegate_flow_table_entries", &[]) >= 4,
        "{text}"
    );
    assert_eq!(
        common::daemon::metric(&text, "nodegate_flow_table_capacity", &[]),
        4096,
        "CONFIG's return_traffic.capacity"
    );
}

#[test]
fn restart_adopts_the_egress_link_and_detach_removes_both() {
    let env = Env::new("rt28b");
    let config = env.write_config("rules.yaml", CONFIG);
    let mut daemon = env.start_daemon(&config, &[]);
    assert_eq!(
        egress_programs_on(&env),
        ["nodegate_egress"],
        "egress attached"
    );
    assert_eq!(env.pins.egress_hook(&env.lab.node_if), Some(native_hook()));
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(5));

    let daemon = env.start_daemon(&config, &[]);
    daemon.wait_for_log("attached", Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(
        log.contains("egress=\"adopted\"") || log.contains("egress=adopted"),
        "the restart adopted the egress link:\n{log}"
    );
    assert_eq!(
        egress_programs_on(&env),
        ["nodegate_egress"],
        "exactly one egress program after the restart"
    );
    // Still learning after adoption: a ping from the node gets its replies.
    let ping = env
        .lab
        .node_cmd("ping", &["-c", "1", "-W", "2", PEER])
        .output()
        .unwrap();
    assert!(ping.status.success(), "replies pass after adoption");
    drop(daemon);

    detach_removes_both(&env);
}

/// The clsact form, on every kernel (it is what kernels without TCX get): attached on
/// request, learning flows, adopted in place by a restart that would choose otherwise for a
/// new interface (a pinned form is never doubled by the other), shown by `stats`, removed by
/// `detach`. Where the kernel has TCX, a TCX-pinned state is adopted as TCX by a daemon told
/// `--egress-attach clsact` too: a node moved between forms keeps exactly one recorder.
#[test]
fn clsact_form_attaches_records_is_adopted_and_detaches() {
    let env = Env::new("rt28c");
    let config = env.write_config("rules.yaml", CONFIG);
    let ifname = env.lab.node_if.clone();
    let mut daemon = env.start_daemon(&config, &["--egress-attach", "clsact"]);
    assert_eq!(
        egress_hooks(&env),
        [(EgressHook::Clsact, "nodegate_egress".to_string())],
        "one clsact filter, no TCX link"
    );
    assert_eq!(env.pins.egress_hook(&ifname), Some(EgressHook::Clsact));
    let ping = |what: &str| {
        let out = env
            .lab
            .node_cmd("ping", &["-c", "1", "-W", "2", PEER])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: the node's ping gets its reply"
        );
    };
    let before = count(&env, "return-traffic");
    ping("clsact");
    assert!(
        count(&env, "return-traffic") > before,
        "the reply passed as return traffic"
    );

    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(5));
    let before = count(&env, "return-traffic");
    ping("daemon killed, filter stays");
    assert!(count(&env, "return-traffic") > before);

    // Restart with the default (auto): the clsact filter is adopted, not joined by TCX.
    let daemon = env.start_daemon(&config, &[]);
    daemon.wait_for_log("attached", Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(
        log.contains("egress=\"adopted\"") || log.contains("egress=adopted"),
        "the restart adopted the clsact filter:\n{log}"
    );
    assert!(
        log.contains("egress_hook=clsact"),
        "the log names the form:\n{log}"
    );
    assert!(
        log.contains("kernel features"),
        "the log names the kernel features:\n{log}"
    );
    assert_eq!(
        egress_hooks(&env),
        [(EgressHook::Clsact, "nodegate_egress".to_string())],
        "still exactly one recorder, in its pinned form"
    );
    ping("adopted clsact");
    let out = env.run(&["stats", "-o", "json"]);
    assert!(
        out.status.success(),
        "stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["attachments"][0]["interface"], ifname.as_str());
    assert_eq!(json["attachments"][0]["egress"], "clsact");
    assert_eq!(json["attachments"][0]["egress_present"], true);
    assert!(json["kernel"]["release"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    let text = env.run(&["stats"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "attached {ifname}: XDP via bpf_link, egress recorder via clsact"
        )),
        "stats text names the mechanisms:\n{text}"
    );
    drop(daemon);

    detach_removes_both(&env);

    if native_hook() == EgressHook::Tcx {
        // The other way round: TCX pinned, restarted with --egress-attach clsact.
        let mut daemon = env.start_daemon(&config, &[]);
        assert_eq!(env.pins.egress_hook(&ifname), Some(EgressHook::Tcx));
        daemon.signal(libc::SIGKILL);
        daemon.wait(Duration::from_secs(5));
        let daemon = env.start_daemon(&config, &["--egress-attach", "clsact"]);
        daemon.wait_for_log("attached", Duration::from_secs(10));
        assert_eq!(
            egress_hooks(&env),
            [(EgressHook::Tcx, "nodegate_egress".to_string())],
            "the pinned TCX link was adopted, no clsact filter beside it"
        );
        ping("adopted tcx");
    }
}

/// A mechanism the kernel lacks is refused before anything changes: on a kernel without TCX,
/// `--egress-attach tcx` exits with an error naming TCX, the kernel and 6.6, and leaves no
/// XDP program and no pins. On a kernel with TCX, the same request attaches through TCX.
#[test]
fn an_egress_mechanism_the_kernel_lacks_is_refused_before_any_change() {
    let env = Env::new("rt28d");
    let config = env.write_config("rules.yaml", CONFIG);
    if native_hook() == EgressHook::Tcx {
        let _daemon = env.start_daemon(&config, &["--egress-attach", "tcx"]);
        assert_eq!(
            egress_hooks(&env),
            [(EgressHook::Tcx, "nodegate_egress".to_string())],
            "this kernel has TCX: the request is granted"
        );
        return;
    }
    let out = env.run_to_exit(&config, &["--egress-attach", "tcx"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused");
    for needle in [
        "TCX",
        "6.6",
        &filter_user::loader::features::kernel_release(),
    ] {
        assert!(err.contains(needle), "{needle:?} named in: {err}");
    }
    assert_eq!(env.xdp_prog_id(), None, "no XDP program was attached");
    assert!(!env.pins.has_state(), "nothing was pinned");
    assert!(egress_hooks(&env).is_empty(), "no egress program either");
}

/// The flagship example as shipped (examples/eks-node.yaml, `return_traffic: stateful`) on
/// whatever kernel this runs on: the node's own TCP connection to an address no rule names
/// (an image registry, say) gets its replies as return traffic, while that address cannot
/// open anything towards the node.
#[test]
fn eks_example_passes_replies_to_the_nodes_own_connections() {
    let env = Env::new("rt28e");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/eks-node.yaml");
    let config = env.write_config("eks-node.yaml", &std::fs::read_to_string(example).unwrap());
    let daemon = env.start_daemon(&config, &[]);
    daemon.wait_for_log("attached", Duration::from_secs(10));
    assert_eq!(egress_programs_on(&env), ["nodegate_egress"]);

    let before = count(&env, "return-traffic");
    let server = peer_tcp_echo(&env, 7443, 1);
    let echoed = in_netns(&env.lab.node_ns, || {
        let mut s = TcpStream::connect_timeout(&addr(PEER, 7443), Duration::from_secs(5))
            .expect("the node's connection is answered");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"pull").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("the echo arrives");
        buf
    })
    .unwrap();
    server.join().unwrap();
    assert_eq!(&echoed, b"pull");
    assert!(
        count(&env, "return-traffic") >= before + 2,
        "SYN-ACK and data passed as return traffic"
    );
    let dropped = count(&env, "no-source-match");
    let ping_in = env
        .lab
        .peer_cmd("ping", &["-c", "1", "-W", "1", NODE])
        .output()
        .unwrap();
    assert!(
        !ping_in.status.success(),
        "the outside address cannot ping the node"
    );
    assert!(count(&env, "no-source-match") > dropped);
}
