use std::sync::Mutex;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::exposition::VERSION;
use super::http::{serve_with_deadline, CONNECTION_DEADLINE, HEAD_DEADLINE, MAX_REQUEST_BYTES};
use super::*;
use crate::loader::counters::{ReasonCount, RuleCount};

/// A source whose counters the test moves.
struct Fake {
    snapshot: Mutex<Snapshot>,
    state: Mutex<DaemonState>,
}

impl MetricsSource for Fake {
    fn snapshot(&self) -> Result<Snapshot, LoaderError> {
        Ok(self.snapshot.lock().unwrap().clone())
    }
    fn daemon_state(&self) -> DaemonState {
        self.state.lock().unwrap().clone()
    }
}

fn fake() -> Arc<Fake> {
    let snapshot = Snapshot {
        reasons: vec![
            ReasonCount {
                iface_slot: 1,
                reason: "no-source-match",
                would_drop: false,
                packets: 7,
                bytes: 700,
            },
            ReasonCount {
                iface_slot: 1,
                reason: "allow-rule",
                would_drop: false,
                packets: 40,
                bytes: 6000,
            },
            ReasonCount {
                iface_slot: 2,
                reason: "deny-rule",
                would_drop: true,
                packets: 3,
                bytes: 180,
            },
            ReasonCount {
                iface_slot: 9,
                reason: "essential-arp",
                would_drop: false,
                packets: 1,
                bytes: 60,
            },
        ],
        rules: vec![
            RuleCount {
                slot: 1,
                name: "ssh-admins".into(),
                would_drop: false,
                packets: 40,
                bytes: 6000,
            },
            RuleCount {
                slot: 2,
                name: "block-bad".into(),
                would_drop: false,
                packets: 5,
                bytes: 300,
            },
            RuleCount {
                slot: 2,
                name: "block-bad".into(),
                would_drop: true,
                packets: 3,
                bytes: 180,
            },
            RuleCount {
                slot: 3,
                name: "gone".into(),
                would_drop: false,
                packets: 2,
                bytes: 120,
            },
        ],
        generations: [10, 46],
    };
    let state = DaemonState {
        interfaces: HashMap::from([(1, "eth0".to_owned()), (2, "eth1".to_owned())]),
        interface_settings: BTreeMap::from([
            ("eth0".to_owned(), (Mode::Enforce, DefaultAction::Drop)),
            ("eth1".to_owned(), (Mode::Monitor, DefaultAction::Pass)),
        ]),
        rule_kinds: HashMap::from([
            ("ssh-admins".to_owned(), RuleKind::Allow),
            ("block-bad".to_owned(), RuleKind::Deny),
        ]),
        reloads_succeeded: 3,
        reloads_failed: 1,
        active_generation: 4,
        prefixes_v4: 120,
        prefixes_v6: 8,
        tables: crate::loader::TableUsage {
            ipv4: crate::loader::FamilyTable {
                bytes_used: 1 << 20,
                bytes_per_generation: 4 << 20,
                kernel_bytes: 8 << 20,
            },
            ipv6: crate::loader::FamilyTable::default(),
        },
        samples_emitted: 11,
        samples_lost: 2,
        flows_inserted: 7,
        flow_entries: Some(5),
        flows_refreshed: 30,
        flows_closing: 5,
        last_reload: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)),
        program_variant: "native",
        not_ready: None,
        interfaces_attached: BTreeMap::from([
            ("eth0".to_owned(), Some("driver")),
            ("eth1".to_owned(), None),
        ]),
        flow_capacity: Some(65536),
        last_failure: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_100)),
        pins_restored: 21,
        links_restored: 2,
        publishes: BTreeMap::from([("nodegate apply".to_owned(), 2)]),
        rollouts: crate::daemon::rollout::RolloutCounts {
            confirmed: 4,
            rolled_back: BTreeMap::from([("probe", 3)]),
            pending: true,
        },
    };
    Arc::new(Fake {
        snapshot: Mutex::new(snapshot),
        state: Mutex::new(state),
    })
}

fn start(source: Arc<Fake>, deadline: Duration) -> (SocketAddr, JoinHandle<()>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = serve_with_deadline(listener, source, deadline).unwrap();
    (addr, handle)
}

/// Send `request` raw, return (status line, headers, body).
async fn exchange(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// The `Accept` header Prometheus 2.x/3.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Scrape as Prometheus does: OpenMetrics.
async fn scrape(addr: SocketAddr) -> String {
    scrape_accepting(addr, PROMETHEUS_ACCEPT, CONTENT_TYPE).await
}

/// Scrape with `accept`, expecting `content_type`.
async fn scrape_accepting(addr: SocketAddr, accept: &str, content_type: &str) -> String {
    let (status, headers, body) = exchange(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains(&format!("Content-Type: {content_type}")),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("Content-Length: {}", body.len())),
        "{headers}"
    );
    body
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line {line:?} in:\n{text}"
    );
}

#[tokio::test]
async fn scrape_exports_counters_and_state() {
    let (addr, server) = start(fake(), CONNECTION_DEADLINE);
    let text = scrape(addr).await;
    for line in [
        "# TYPE nodegate_packets counter",
        r#"nodegate_packets_total{interface="eth0",reason="no-source-match",verdict="drop",would_drop="false"} 7"#,
        r#"nodegate_packets_total{interface="eth0",reason="allow-rule",verdict="pass",would_drop="false"} 40"#,
        r#"nodegate_packets_total{interface="eth1",reason="deny-rule",verdict="pass",would_drop="true"} 3"#,
        r#"nodegate_packets_total{interface="slot9",reason="essential-arp",verdict="pass",would_drop="false"} 1"#,
        r#"nodegate_bytes_total{interface="eth0",reason="no-source-match",verdict="drop",would_drop="false"} 700"#,
        r#"nodegate_rule_packets_total{rule="ssh-admins",verdict="pass",would_drop="false"} 40"#,
        r#"nodegate_rule_packets_total{rule="block-bad",verdict="drop",would_drop="false"} 5"#,
        r#"nodegate_rule_packets_total{rule="block-bad",verdict="pass",would_drop="true"} 3"#,
        r#"nodegate_rule_packets_total{rule="gone",verdict="unknown",would_drop="false"} 2"#,
        r#"nodegate_interface_attached{interface="eth0",xdp_mode="driver",variant="native"} 1"#,
        r#"nodegate_interface_attached{interface="eth1",xdp_mode="none",variant="native"} 0"#,
        "nodegate_flow_table_capacity 65536",
        "nodegate_flow_table_entries 5",
        "nodegate_last_reload_failure_timestamp_seconds 1790000100.0",
        r#"nodegate_repairs_total{what="pin"} 21"#,
        r#"nodegate_repairs_total{what="attachment"} 2"#,
        r#"nodegate_rollbacks_total{cause="probe"} 3"#,
        r#"nodegate_rollbacks_total{cause="unconfirmed"} 0"#,
        "nodegate_confirmations_total 4",
        r#"nodegate_publishes_total{trigger="nodegate apply"} 2"#,
        "nodegate_rollout_pending 1",
        r#"nodegate_rule_bytes_total{rule="ssh-admins",verdict="pass",would_drop="false"} 6000"#,
        r#"nodegate_reloads_total{result="success"} 3"#,
        r#"nodegate_reloads_total{result="failure"} 1"#,
        r#"nodegate_drop_samples_total{outcome="emitted"} 11"#,
        r#"nodegate_drop_samples_total{outcome="lost"} 2"#,
        r#"nodegate_flow_events_total{event="inserted"} 7"#,
        r#"nodegate_flow_events_total{event="refreshed"} 30"#,
        r#"nodegate_flow_events_total{event="closing"} 5"#,
        "nodegate_active_generation 4",
        r#"nodegate_prefixes{family="ipv4"} 120"#,
        r#"nodegate_prefixes{family="ipv6"} 8"#,
        r#"nodegate_interface_monitor{interface="eth0"} 0"#,
        r#"nodegate_interface_monitor{interface="eth1"} 1"#,
        r#"nodegate_interface_default_pass{interface="eth0"} 0"#,
        r#"nodegate_interface_default_pass{interface="eth1"} 1"#,
        "# UNIT nodegate_last_reload_timestamp_seconds seconds",
        "nodegate_last_reload_timestamp_seconds 1790000000.0",
        &format!(r#"nodegate_info{{version="{VERSION}",program_variant="native"}} 1"#),
    ] {
        assert_line(&text, line);
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    server.abort();
}

#[tokio::test]
async fn counters_move_between_scrapes() {
    let source = fake();
    let (addr, server) = start(source.clone(), CONNECTION_DEADLINE);
    let line = r#"nodegate_packets_total{interface="eth0",reason="no-source-match",verdict="drop",would_drop="false"}"#;
    assert_line(&scrape(addr).await, &format!("{line} 7"));
    source.snapshot.lock().unwrap().reasons[0].packets = 19;
    source.state.lock().unwrap().reloads_succeeded = 4;
    let text = scrape(addr).await;
    assert_line(&text, &format!("{line} 19"));
    assert_line(&text, r#"nodegate_reloads_total{result="success"} 4"#);
    server.abort();
}

#[tokio::test]
async fn other_paths_and_methods() {
    let (addr, server) = start(fake(), CONNECTION_DEADLINE);
    let (status, _, _) = exchange(addr, "GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = exchange(addr, "GET /metricsx HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) =
        exchange(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET, HEAD"));
    let (status, _, _) = exchange(addr, "garbage\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let (status, _, body) = exchange(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_REQUEST_BYTES + 10)
    );
    let (status, _, _) = exchange(addr, &huge).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // Query strings are ignored.
    let (status, _, _) = exchange(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    server.abort();
}

#[tokio::test]
async fn slow_client_is_cut_off_and_does_not_block_others() {
    let (addr, server) = start(fake(), Duration::from_millis(300));
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /met").await.unwrap();
    // Another client is served while the first dawdles.
    scrape(addr).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "slow client not disconnected: {read:?}"
    );
    server.abort();
}

#[tokio::test]
async fn health_and_readiness_probes() {
    let source = fake();
    let (addr, server) = start(source.clone(), CONNECTION_DEADLINE);
    let (status, _, body) = exchange(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    let (status, _, body) = exchange(addr, "GET /readyz HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ready\n")
    );
    source.state.lock().unwrap().not_ready = Some("not attached on eth1".into());
    let (status, _, body) = exchange(addr, "GET /readyz HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, "not ready: not attached on eth1\n");
    let (status, _, body) = exchange(addr, "HEAD /readyz HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 503 Service Unavailable", "")
    );
    server.abort();
}

#[tokio::test]
async fn idle_connections_do_not_starve_a_scrape() {
    // The production deadlines and slots.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve_listener(listener, fake()).unwrap();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered = tokio::time::timeout(Duration::from_secs(1), scrape(addr)).await;
    assert!(
        answered.is_ok(),
        "a scrape waited behind 50 idle connections"
    );
    // And an idle connection is dropped once the head deadline passes.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        HEAD_DEADLINE + Duration::from_secs(2),
        idle[0].read_to_end(&mut rest),
    )
    .await;
    assert!(matches!(read, Ok(Ok(0))), "idle client kept: {read:?}");
    server.abort();
}

#[test]
fn bind_address_policy() {
    let loopback: SocketAddr = "127.0.0.1:9864".parse().unwrap();
    let loopback6: SocketAddr = "[::1]:9864".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:9864".parse().unwrap();
    let node: SocketAddr = "10.0.0.5:9864".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:9864".parse().unwrap();
    let any6: SocketAddr = "[::]:9864".parse().unwrap();
    assert_eq!(DEFAULT_METRICS_ADDR, loopback);
    for addr in [loopback, loopback6, mapped] {
        check_bind_addr(addr, false).unwrap();
        check_bind_addr(addr, true).unwrap();
    }
    for addr in [node, any, any6] {
        let err = check_bind_addr(addr, false).unwrap_err();
        assert!(matches!(err, MetricsError::NotLoopback { .. }));
        let text = err.to_string();
        assert!(
            text.contains("non-loopback") && text.contains(&format!("--metrics {addr}")),
            "{text}"
        );
        check_bind_addr(addr, true).unwrap();
    }
}

#[test]
fn render_without_reload_or_counters() {
    let text = render(&Snapshot::default(), &DaemonState::default());
    assert!(text.contains("# TYPE nodegate_packets counter"));
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("nodegate_last_reload_timestamp_seconds")),
        "{text}"
    );
    assert_line(&text, r#"nodegate_reloads_total{result="failure"} 0"#);
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn rule_names_are_escaped() {
    let snapshot = Snapshot {
        rules: vec![RuleCount {
            slot: 4,
            name: "we\"ird\\name".into(),
            would_drop: true,
            packets: 1,
            bytes: 2,
        }],
        ..Snapshot::default()
    };
    let text = render(&snapshot, &DaemonState::default());
    assert_line(
        &text,
        r#"nodegate_rule_packets_total{rule="we\"ird\\name",verdict="pass",would_drop="true"} 1"#,
    );
}

// ------------------------------------------------------------------ the formats, checked
// by a parser of their own (written from the two specifications, sharing nothing with the
// encoder): every sample belongs to a declared family of a known type, with a name that
// type allows; labels and values parse; OpenMetrics ends in `# EOF`, the classic format
// has neither `# EOF` nor `# UNIT`.

/// A family's declared type, by the name its declaration uses.
type Declared = BTreeMap<String, String>;

/// Samples as parsed: name and labels.
type Samples = Vec<(String, Vec<(String, String)>)>;

/// Parse `name{label="value",...} value`: the name and the labels.
fn parse_sample(line: &str) -> Result<(String, Vec<(String, String)>), String> {
    let bad = |what: &str| format!("{what} in {line:?}");
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad("bad metric name"));
    }
    let chars: Vec<char> = line[name_end..].chars().collect();
    let mut i = 0;
    let mut labels = Vec::new();
    if chars.first() == Some(&'{') {
        i = 1;
        loop {
            if chars.get(i) == Some(&'}') {
                i += 1;
                break;
            }
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            if key.is_empty() || chars.get(i) != Some(&'=') || chars.get(i + 1) != Some(&'"') {
                return Err(bad("bad label"));
            }
            i += 2;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None | Some('\n') => return Err(bad("unterminated label value")),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(*c),
                            _ => return Err(bad("bad escape")),
                        }
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            labels.push((key, value));
            if chars.get(i) == Some(&',') {
                i += 1;
            }
        }
    }
    let rest: String = chars[i..].iter().collect();
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| bad("no space before the value"))?
        .split(' ')
        .next()
        .unwrap_or_default();
    if value.parse::<f64>().is_err() && !matches!(value, "NaN" | "+Inf" | "-Inf") {
        return Err(bad("bad value"));
    }
    Ok((name.to_owned(), labels))
}

/// Check `text` against the classic text format 0.0.4; the samples by name.
fn parse_classic(text: &str) -> Result<Samples, String> {
    let mut declared = Declared::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE {line:?}"))?;
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(format!(
                    "type {kind:?} is not in the classic format: {line:?}"
                ));
            }
            if declared.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("{name} declared twice"));
            }
        } else if line.starts_with("# HELP ") {
        } else if line.starts_with('#') {
            return Err(format!("not in the classic format: {line:?}"));
        } else {
            let (name, labels) = parse_sample(line)?;
            // Counters and gauges: the sample's name is the declared name, or it is untyped.
            if !declared.contains_key(&name) {
                return Err(format!(
                    "sample {name} has no TYPE (a scraper types it unknown)"
                ));
            }
            samples.push((name, labels));
        }
    }
    Ok(samples)
}

/// Check `text` against OpenMetrics 1.0; the samples by name.
fn parse_openmetrics(text: &str) -> Result<Samples, String> {
    let mut declared = Declared::new();
    let mut samples = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        if ended {
            return Err(format!("text after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            ended = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE {line:?}"))?;
            if !matches!(
                kind,
                "counter"
                    | "gauge"
                    | "info"
                    | "stateset"
                    | "histogram"
                    | "gaugehistogram"
                    | "summary"
                    | "unknown"
            ) {
                return Err(format!("unknown type {kind:?}"));
            }
            declared.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').ok_or(format!("bad UNIT {line:?}"))?;
            if !name.ends_with(&format!("_{unit}")) {
                return Err(format!("family {name} does not end in its unit {unit}"));
            }
        } else if line.starts_with("# HELP ") {
        } else if line.starts_with('#') || line.is_empty() {
            return Err(format!("not OpenMetrics: {line:?}"));
        } else {
            let (name, labels) = parse_sample(line)?;
            let family = [
                ("_total", "counter"),
                ("_created", "counter"),
                ("_info", "info"),
                ("", "gauge"),
                ("", "unknown"),
            ]
            .iter()
            .find_map(|(suffix, kind)| {
                let family = name.strip_suffix(suffix)?;
                (declared.get(family).map(String::as_str) == Some(*kind)).then_some(family)
            });
            if family.is_none() {
                return Err(format!(
                    "sample {name} belongs to no declared family of a type that allows that name"
                ));
            }
            samples.push((name, labels));
        }
    }
    if !ended {
        return Err("no # EOF".into());
    }
    Ok(samples)
}

#[test]
fn accept_header_picks_the_format() {
    assert_eq!(
        Format::negotiate(Some(PROMETHEUS_ACCEPT)),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
        Format::OpenMetrics
    );
    assert_eq!(Format::negotiate(None), Format::Classic);
    assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
    assert_eq!(
        Format::negotiate(Some("text/plain;version=0.0.4")),
        Format::Classic
    );
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text;q=0,text/plain")),
        Format::Classic
    );
}

#[tokio::test]
async fn both_formats_parse_with_an_independent_parser_and_carry_the_same_samples() {
    let (addr, server) = start(fake(), CONNECTION_DEADLINE);
    let openmetrics = scrape(addr).await;
    let classic = scrape_accepting(addr, "text/plain;version=0.0.4", CLASSIC_CONTENT_TYPE).await;
    let no_header = exchange(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(
        no_header.1.contains(CLASSIC_CONTENT_TYPE),
        "{}",
        no_header.1
    );
    let om = parse_openmetrics(&openmetrics).unwrap_or_else(|e| panic!("{e}\n{openmetrics}"));
    let cl = parse_classic(&classic).unwrap_or_else(|e| panic!("{e}\n{classic}"));
    assert_eq!(om, cl, "the same samples in both formats");
    assert!(om.len() > 100, "{} samples", om.len());
    // A classic scraper sees counters typed as counters.
    assert_line(&classic, "# TYPE nodegate_packets_total counter");
    assert_line(&classic, "# TYPE nodegate_info gauge");
    server.abort();
}

#[test]
fn the_parsers_reject_what_a_scraper_would_mistype() {
    // The bug the classic format had: an OpenMetrics counter declaration under text/plain.
    let openmetrics_under_text = "# TYPE x counter\nx_total 1\n";
    assert!(parse_classic(openmetrics_under_text).is_err());
    assert!(
        parse_openmetrics("# TYPE x counter\nx_total 1\n").is_err(),
        "no # EOF"
    );
    assert!(parse_openmetrics("# TYPE x gauge\nx_total 1\n# EOF\n").is_err());
    assert!(
        parse_classic("# TYPE x counter\nx{a=\"b\\q\"} 1\n").is_err(),
        "bad escape"
    );
    assert!(parse_classic("# TYPE x counter\nx 1\n").is_ok());
}

#[tokio::test]
async fn every_rule_and_interface_has_series_from_the_first_scrape() {
    let source = fake();
    {
        let mut state = source.state.lock().unwrap();
        state
            .rule_kinds
            .insert("never-matched".into(), RuleKind::Allow);
    }
    let (addr, server) = start(source, CONNECTION_DEADLINE);
    let text = scrape(addr).await;
    assert_line(
        &text,
        r#"nodegate_rule_packets_total{rule="never-matched",verdict="pass",would_drop="false"} 0"#,
    );
    // eth0 counted no ARP, eth1 (monitor) no deny-rule drops as drops: zero series all the same.
    assert_line(
        &text,
        r#"nodegate_packets_total{interface="eth0",reason="essential-arp",verdict="pass",would_drop="false"} 0"#,
    );
    assert_line(
        &text,
        r#"nodegate_packets_total{interface="eth1",reason="no-rule-match",verdict="pass",would_drop="true"} 0"#,
    );
    assert_line(
        &text,
        r#"nodegate_packets_total{interface="eth0",reason="no-rule-match",verdict="drop",would_drop="false"} 0"#,
    );
    server.abort();
}

/// The Grafana dashboard shipped under `deploy/grafana/` may only query metrics this
/// exposition has: every `nodegate_…` name in a panel or variable query is a sample name of
/// a full scrape.
#[test]
fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/nodegate.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let fake = fake();
    let exposition = render_as(
        &fake.snapshot.lock().unwrap(),
        &fake.state.lock().unwrap(),
        Format::Classic,
    );
    let exported: std::collections::BTreeSet<String> = parse_classic(&exposition)
        .expect("classic exposition")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut queries = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query", serde_json::Value::String(q)) => queries.push(q.clone()),
                        _ => stack.push(value),
                    }
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");
    let mut used = 0;
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(at) = rest.find("nodegate_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            assert!(
                exported.contains(name),
                "the dashboard queries {name}, which nodegate does not export (query: {query})"
            );
            used += 1;
            rest = &tail[end..];
        }
    }
    assert!(used >= 10, "{used} metric references");
}
