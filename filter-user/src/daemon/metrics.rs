//! Prometheus metrics: the kernel counters and the daemon's state in the OpenMetrics text
//! format, served at `GET /metrics` on loopback unless another address is asked for.
//!
//! The counters live in per-CPU kernel maps and are absolute, so nothing is accumulated here:
//! every scrape takes a fresh [`Snapshot`] from the [`MetricsSource`] and encodes it with
//! `prometheus-client`'s const metrics through a per-scrape [`Collector`]. Counters therefore
//! survive a daemon restart exactly as the pinned maps do.
//!
//! Exposed families (`_total` is the OpenMetrics counter sample suffix):
//!
//! | metric | labels |
//! | --- | --- |
//! | `nodegate_packets_total`, `nodegate_bytes_total` | `interface`, `reason`, `verdict` = `pass`/`drop`/`would_drop` |
//! | `nodegate_rule_packets_total`, `nodegate_rule_bytes_total` | `rule`, `verdict` = `pass`/`drop`/`would_drop` (`unknown` for a rule not in the active rule set) |
//! | `nodegate_reloads_total` | `result` = `success`/`failure` |
//! | `nodegate_publishes_total` | `trigger` = `start`/`file change`/`SIGHUP`/`nodegate reload`/`nodegate apply`/`rollback (CAUSE)` |
//! | `nodegate_drop_samples_total` | `outcome` = `emitted`/`lost` |
//! | `nodegate_flow_events_total` | `event` = `inserted`/`refreshed`/`closing` (stateful return traffic: flows the TC egress program learned) |
//! | `nodegate_active_generation` | — (the epoch of the active rule generation) |
//! | `nodegate_prefixes` | `family` = `ipv4`/`ipv6` |
//! | `nodegate_lookup_table_kernel_bytes` | `family` (kernel memory of the source lookup table map, both generations) |
//! | `nodegate_lookup_table_fill_ratio` | `family` (share of one generation's table the active rules use) |
//! | `nodegate_interface_monitor` | `interface` (1: monitor mode on it, 0: enforce; `interfaces:` in the rule file may differ from the file's `mode`) |
//! | `nodegate_interface_default_pass` | `interface` (1: default pass on it, 0: default drop) |
//! | `nodegate_interface_attached` | `interface` (1: attached to an interface `--iface` asked for, 0: not, see `/readyz`) |
//! | `nodegate_repairs_total` | `what` = `pin`/`attachment` (put back after someone else removed it) |
//! | `nodegate_rollbacks_total` | `cause` = `probe`/`unconfirmed`/`established_connection`/`operator` (confirmed changes flipped back) |
//! | `nodegate_confirmations_total` | — (confirmed changes kept) |
//! | `nodegate_rollout_pending` | — (1 while a change is on probation) |
//! | `nodegate_last_reload_timestamp_seconds` | — (absent until the first successful reload) |
//! | `nodegate_info` | `version`, `program_variant` = `native`/`spectre-hardened` (loaded without CAP_PERFMON) |
//!
//! The HTTP side is a small hand-written HTTP/1.1 responder on tokio's `TcpListener`: one
//! request per connection, request line parsed, headers read and ignored, a response with
//! `Connection: close`. A scrape endpoint needs nothing more, and this keeps hyper, http,
//! http-body and hyper-util (and their parsing surface) out of a privileged daemon. Slow or
//! malformed clients are bounded by a per-connection deadline, a request size limit and a
//! cap on concurrent connections.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use filter_common::Reason;

use crate::loader::counters::Snapshot;
use crate::loader::LoaderError;
use crate::policy::{DefaultAction, Mode, RuleKind};

/// Where `/metrics` is served unless `--metrics ADDR` says otherwise: loopback only.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9864));

/// `Content-Type` of a successful scrape (what `prometheus-client`'s text encoder produces).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A whole connection (read request, build response, write it) must finish within this.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// The request head must arrive within this: a client that connects and dawdles (or a
/// slowloris) holds a slot for two seconds, not ten.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Request line plus headers larger than this get `431`.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Connections handled at once; further ones wait in the accept queue. Enough that a local
/// process holding dozens of idle connections leaves the scraper a free one.
const MAX_CONNECTIONS: usize = 256;

/// Errors from setting up the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A non-loopback address that nobody asked for explicitly.
    #[error(
        "refusing to serve metrics on non-loopback address {addr}: it was not given explicitly, and \
         anyone who can reach that address would read the node's counters and rule names; pass \
         `--metrics {addr}` to expose it deliberately, or use a 127.0.0.1/::1 address"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listening socket could not be set up.
    #[error("cannot listen for metrics on {addr}: {source}{hint}")]
    Bind {
        /// The address (or `0.0.0.0:0` when unknown).
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// Refuse a non-loopback metrics address unless it was given explicitly (`--metrics ADDR`).
/// Loopback includes IPv4-mapped `::ffff:127.0.0.0/104`.
pub fn check_bind_addr(addr: SocketAddr, explicitly_given: bool) -> Result<(), MetricsError> {
    if addr.ip().to_canonical().is_loopback() || explicitly_given {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback { addr })
    }
}

/// The daemon's own state, as exported next to the kernel counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonState {
    /// Interface name per counter slot; slots without a name are labelled `slot<N>`.
    pub interfaces: HashMap<u32, String>,
    /// Mode and default of the active rule set on each attached interface, by name.
    pub interface_settings: BTreeMap<String, (Mode, DefaultAction)>,
    /// Kind of each rule of the active rule set, by name: gives a rule counter its verdict.
    pub rule_kinds: HashMap<String, RuleKind>,
    /// Reloads that published a new generation.
    pub reloads_succeeded: u64,
    /// Reloads that were rejected (bad file, map error); the previous generation stayed.
    pub reloads_failed: u64,
    /// Epoch of the active generation.
    pub active_generation: u64,
    /// IPv4 source prefixes in the active generation.
    pub prefixes_v4: u64,
    /// IPv6 source prefixes in the active generation.
    pub prefixes_v6: u64,
    /// Size and fill of the source lookup tables.
    pub tables: crate::loader::TableUsage,
    /// Drop samples the XDP program put in the ring.
    pub samples_emitted: u64,
    /// Drop samples lost to a full ring.
    pub samples_lost: u64,
    /// Flow table events (stateful return traffic): entries the TC egress program created.
    pub flows_inserted: u64,
    /// Egress packets that refreshed a flow entry.
    pub flows_refreshed: u64,
    /// Flow entries that entered the closing state (FIN/RST).
    pub flows_closing: u64,
    /// When the last successful reload happened, if any.
    pub last_reload: Option<SystemTime>,
    /// How the kernel runs the XDP program (`ProgramVariant::name`); empty before the load.
    pub program_variant: &'static str,
    /// Why the daemon is not ready (`/readyz` answers 503 with it); `None` when it is.
    pub not_ready: Option<String>,
    /// Each interface `--iface` asked for, and whether the filter is attached to it now.
    pub interfaces_attached: BTreeMap<String, bool>,
    /// Pins put back after they were removed by hand.
    pub pins_restored: u64,
    /// Interfaces attached again after their attachment was lost.
    pub links_restored: u64,
    /// Confirmed changes: confirmations, rollbacks by cause, one pending now.
    pub rollouts: super::rollout::RolloutCounts,
    /// Generations published, by what asked (the audit trail's `trigger`).
    pub publishes: BTreeMap<String, u64>,
}

/// What the metrics endpoint reads on every scrape; the daemon implements it.
pub trait MetricsSource {
    /// The kernel counters now. Called on a blocking thread (it may issue many syscalls).
    fn snapshot(&self) -> Result<Snapshot, LoaderError>;
    /// The daemon's state now.
    fn daemon_state(&self) -> DaemonState;
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Encode one scrape: the counters in `snapshot` and `state`, OpenMetrics text ending in
/// `# EOF`.
pub fn render(snapshot: &Snapshot, state: &DaemonState) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        snapshot: snapshot.clone(),
        state: state.clone(),
    }));
    let mut out = String::new();
    // NB: writing to a String cannot fail, and our collector only fails when the writer does.
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encoding to a String");
    out
}

/// One scrape's data, encoded by [`Collector::encode`].
#[derive(Debug)]
struct Scrape {
    snapshot: Snapshot,
    state: DaemonState,
}

type Labels = Vec<(&'static str, String)>;

fn verdict_of_reason(reason: &str, would_drop: bool) -> &'static str {
    if would_drop {
        "would_drop"
    } else if Reason::from_name(reason).is_some_and(Reason::is_drop) {
        "drop"
    } else {
        "pass"
    }
}

fn verdict_of_rule(kind: Option<&RuleKind>, would_drop: bool) -> &'static str {
    match (would_drop, kind) {
        (true, _) => "would_drop",
        (false, Some(RuleKind::Deny)) => "drop",
        (false, Some(RuleKind::Allow | RuleKind::Failsafe)) => "pass",
        (false, None) => "unknown",
    }
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels; no sample at all when `value` is `None`.
fn single_gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: Option<V>,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    match value {
        Some(value) => ConstGauge::new(value).encode(metric),
        None => Ok(()),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (snap, state) = (&self.snapshot, &self.state);

        // Aggregate by label set (sorted, and never a duplicate series).
        let mut reasons: BTreeMap<(String, &'static str, &'static str), (u64, u64)> =
            BTreeMap::new();
        for count in &snap.reasons {
            let iface = state
                .interfaces
                .get(&count.iface_slot)
                .cloned()
                .unwrap_or_else(|| format!("slot{}", count.iface_slot));
            let entry = reasons
                .entry((
                    iface,
                    count.reason,
                    verdict_of_reason(count.reason, count.would_drop),
                ))
                .or_default();
            entry.0 += count.packets;
            entry.1 += count.bytes;
        }
        let mut rules: BTreeMap<(String, &'static str), (u64, u64)> = BTreeMap::new();
        for count in &snap.rules {
            let name = if count.name.is_empty() {
                format!("slot{}", count.slot)
            } else {
                count.name.clone()
            };
            let verdict = verdict_of_rule(state.rule_kinds.get(&count.name), count.would_drop);
            let entry = rules.entry((name, verdict)).or_default();
            entry.0 += count.packets;
            entry.1 += count.bytes;
        }
        let reason_labels =
            |(iface, reason, verdict): &(String, &'static str, &'static str)| -> Labels {
                vec![
                    ("interface", iface.clone()),
                    ("reason", (*reason).to_owned()),
                    ("verdict", (*verdict).to_owned()),
                ]
            };
        let rule_labels = |(rule, verdict): &(String, &'static str)| -> Labels {
            vec![("rule", rule.clone()), ("verdict", (*verdict).to_owned())]
        };

        counter_family(
            &mut encoder,
            "nodegate_packets",
            "Packets judged by the XDP program, by interface, verdict reason and verdict.",
            reasons.iter().map(|(k, v)| (reason_labels(k), v.0)),
        )?;
        counter_family(
            &mut encoder,
            "nodegate_bytes",
            "Bytes (frame length at XDP) judged by the XDP program, by interface, verdict reason and verdict.",
            reasons.iter().map(|(k, v)| (reason_labels(k), v.1)),
        )?;
        counter_family(
            &mut encoder,
            "nodegate_rule_packets",
            "Packets decided by each rule.",
            rules.iter().map(|(k, v)| (rule_labels(k), v.0)),
        )?;
        counter_family(
            &mut encoder,
            "nodegate_rule_bytes",
            "Bytes decided by each rule.",
            rules.iter().map(|(k, v)| (rule_labels(k), v.1)),
        )?;
        counter_family(
            &mut encoder,
            "nodegate_reloads",
            "Rule reloads, by result; a failed reload leaves the previous rules active.",
            [
                (
                    vec![("result", "success".to_owned())],
                    state.reloads_succeeded,
                ),
                (vec![("result", "failure".to_owned())], state.reloads_failed),
            ],
        )?;
        counter_family(
            &mut encoder,
            "nodegate_publishes",
            "Rule generations published, by what asked: start, file change, SIGHUP, nodegate reload, nodegate apply, rollback (cause).",
            state
                .publishes
                .iter()
                .map(|(trigger, n)| (vec![("trigger", trigger.clone())], *n)),
        )?;
        counter_family(
            &mut encoder,
            "nodegate_drop_samples",
            "Drop samples sent by the XDP program to the daemon, by outcome.",
            [
                (
                    vec![("outcome", "emitted".to_owned())],
                    state.samples_emitted,
                ),
                (vec![("outcome", "lost".to_owned())], state.samples_lost),
            ],
        )?;
        counter_family(
            &mut encoder,
            "nodegate_flow_events",
            "Flow table events of stateful return traffic (flows the node opened, learned on egress), by event.",
            [
                (
                    vec![("event", "inserted".to_owned())],
                    state.flows_inserted,
                ),
                (
                    vec![("event", "refreshed".to_owned())],
                    state.flows_refreshed,
                ),
                (vec![("event", "closing".to_owned())], state.flows_closing),
            ],
        )?;
        single_gauge(
            &mut encoder,
            "nodegate_active_generation",
            "Epoch of the active rule generation.",
            None,
            Some(state.active_generation),
        )?;
        gauge_family(
            &mut encoder,
            "nodegate_prefixes",
            "Source prefixes loaded in the active rule generation, by address family.",
            [
                (vec![("family", "ipv4".to_owned())], state.prefixes_v4),
                (vec![("family", "ipv6".to_owned())], state.prefixes_v6),
            ],
        )?;
        let families = [("ipv4", state.tables.ipv4), ("ipv6", state.tables.ipv6)];
        gauge_family(
            &mut encoder,
            "nodegate_lookup_table_kernel_bytes",
            "Kernel memory of the source lookup table maps (both generations), by address family.",
            families.map(|(f, t)| (vec![("family", f.to_owned())], t.kernel_bytes as i64)),
        )?;
        gauge_family(
            &mut encoder,
            "nodegate_lookup_table_fill_ratio",
            "Share of a generation's source lookup table the active rules use (1 = full: a larger table needs a higher `capacity`), by address family.",
            families.map(|(f, t)| (vec![("family", f.to_owned())], t.fill())),
        )?;
        let per_interface = |f: fn(&(Mode, DefaultAction)) -> bool| {
            state
                .interface_settings
                .iter()
                .map(move |(name, settings)| {
                    (vec![("interface", name.clone())], i64::from(f(settings)))
                })
        };
        gauge_family(
            &mut encoder,
            "nodegate_interface_monitor",
            "1 when the active rule set runs the interface in monitor mode (would-drops pass), 0 when it enforces.",
            per_interface(|(mode, _)| *mode == Mode::Monitor),
        )?;
        gauge_family(
            &mut encoder,
            "nodegate_interface_default_pass",
            "1 when the interface's default verdict for unmatched IP traffic is pass, 0 when drop.",
            per_interface(|(_, default)| *default == DefaultAction::Pass),
        )?;
        gauge_family(
            &mut encoder,
            "nodegate_interface_attached",
            "1 when the filter is attached to the interface `--iface` asked for, 0 while it is not (interface missing, detached by another tool, or held by another XDP program).",
            state
                .interfaces_attached
                .iter()
                .map(|(name, up)| (vec![("interface", name.clone())], i64::from(*up))),
        )?;
        counter_family(
            &mut encoder,
            "nodegate_repairs",
            "What the daemon put back after someone else removed it: pins removed by hand, attachments lost (interface re-created, link detached or updated).",
            [
                (vec![("what", "pin".to_owned())], state.pins_restored),
                (vec![("what", "attachment".to_owned())], state.links_restored),
            ],
        )?;
        counter_family(
            &mut encoder,
            "nodegate_rollbacks",
            "Confirmed changes flipped back, by cause: a probe failed, nobody confirmed in time, the new rules dropped packets of a connection established before the change, or `nodegate rollback`.",
            ["probe", "unconfirmed", "established_connection", "operator"].map(|cause| {
                (
                    vec![("cause", cause.to_owned())],
                    state.rollouts.rolled_back.get(cause).copied().unwrap_or(0),
                )
            }),
        )?;
        let confirmations = encoder.encode_descriptor(
            "nodegate_confirmations",
            "Confirmed changes kept: by `nodegate confirm`, or by probes that passed through the window.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(state.rollouts.confirmed).encode(confirmations)?;
        single_gauge(
            &mut encoder,
            "nodegate_rollout_pending",
            "1 while a change is on probation (rolls back unless confirmed or its probes pass), else 0.",
            None,
            Some(i64::from(state.rollouts.pending)),
        )?;
        let last_reload = state.last_reload.map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        });
        single_gauge(
            &mut encoder,
            "nodegate_last_reload_timestamp",
            "Unix time of the last successful reload.",
            Some(&Unit::Seconds),
            last_reload,
        )?;
        let mut info = encoder.encode_descriptor(
            "nodegate",
            "nodegate build information.",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[
            ("version", VERSION),
            ("program_variant", state.program_variant),
        ])?;
        Ok(())
    }
}

fn bind_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            " (hint: another process, perhaps another `nodegate run`, holds that port; choose another with --metrics ADDR)"
        }
        Some(libc::EADDRNOTAVAIL) => " (hint: no interface of this host has that address)",
        Some(libc::EACCES) => " (hint: ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port)",
        _ => "",
    }
}

/// Listen on `addr` and serve `GET /metrics` from `source` until the task is aborted. Binds
/// before returning, so a taken port is an error here, not in the background. Call
/// [`check_bind_addr`] first. Must be called inside a tokio runtime.
pub fn serve(
    addr: SocketAddr,
    source: Arc<dyn MetricsSource + Send + Sync>,
) -> Result<JoinHandle<()>, MetricsError> {
    serve_listener(bind(addr)?, source)
}

/// Bind `addr` for [`serve_listener`]: `run` binds before it changes anything, so a taken
/// port fails the start while the kernel is as it was.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    std::net::TcpListener::bind(addr).map_err(|source| MetricsError::Bind {
        addr,
        hint: bind_hint(&source),
        source,
    })
}

/// [`serve`] on a socket that is already bound (an ephemeral port in tests, or one handed
/// over by a service manager).
pub fn serve_listener(
    listener: std::net::TcpListener,
    source: Arc<dyn MetricsSource + Send + Sync>,
) -> Result<JoinHandle<()>, MetricsError> {
    serve_with_deadline(listener, source, CONNECTION_DEADLINE)
}

fn serve_with_deadline(
    listener: std::net::TcpListener,
    source: Arc<dyn MetricsSource + Send + Sync>,
    deadline: Duration,
) -> Result<JoinHandle<()>, MetricsError> {
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let bind_error = |source: io::Error| MetricsError::Bind {
        addr,
        hint: bind_hint(&source),
        source,
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = TcpListener::from_std(listener).map_err(bind_error)?;
    tracing::debug!(%addr, "metrics endpoint listening");
    Ok(tokio::spawn(accept_loop(listener, source, deadline)))
}

async fn accept_loop(
    listener: TcpListener,
    source: Arc<dyn MetricsSource + Send + Sync>,
    deadline: Duration,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(deadline, handle(stream, source)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "metrics request failed"),
                Err(_elapsed) => tracing::debug!(%peer, "metrics request timed out"),
            }
            drop(permit);
        });
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    extra_headers: &'static str,
    /// HEAD: send the headers (with the length GET would have) but not the body.
    head_only: bool,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            extra_headers: "",
            head_only: false,
        }
    }
}

/// Read the request head: everything up to the blank line, at most [`MAX_REQUEST_BYTES`].
/// `None` when it is too large.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // Peer closed early: answer what we have (a request line without headers is
            // still a request for HTTP/1.0-style clients).
            return Ok(Some(head));
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(
    mut stream: TcpStream,
    source: Arc<dyn MetricsSource + Send + Sync>,
) -> io::Result<()> {
    let head = tokio::time::timeout(HEAD_DEADLINE, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request head in time"))??;
    let response = match head {
        None => Response::text("431 Request Header Fields Too Large", "request too large\n"),
        Some(head) => respond(&head, source).await,
    };
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        response.extra_headers,
    );
    stream.write_all(header.as_bytes()).await?;
    if !response.head_only {
        stream.write_all(response.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

async fn respond(head: &[u8], source: Arc<dyn MetricsSource + Send + Sync>) -> Response {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text("400 Bad Request", "bad request\n");
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return Response::text(
            "404 Not Found",
            "not found; metrics are at /metrics, health at /healthz and /readyz\n",
        );
    }
    let head_request = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response = Response::text("405 Method Not Allowed", "method not allowed\n");
            response.extra_headers = "Allow: GET, HEAD\r\n";
            return response;
        }
    };
    let mut probe = match path {
        // Alive and serving: the process answers.
        "/healthz" => Response::text("200 OK", "ok\n"),
        "/readyz" => {
            match tokio::task::spawn_blocking(move || source.daemon_state().not_ready).await {
                Ok(None) => Response::text("200 OK", "ready\n"),
                Ok(Some(why)) => {
                    Response::text("503 Service Unavailable", format!("not ready: {why}\n"))
                }
                Err(_) => Response::text("500 Internal Server Error", "state unavailable\n"),
            }
        }
        _ => return scrape(source, head_request).await,
    };
    probe.head_only = head_request;
    probe
}

/// `GET /metrics`.
async fn scrape(source: Arc<dyn MetricsSource + Send + Sync>, head_request: bool) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let snapshot = source.snapshot()?;
        Ok::<_, LoaderError>(render(&snapshot, &source.daemon_state()))
    })
    .await;
    match rendered {
        Ok(Ok(body)) => Response {
            status: "200 OK",
            content_type: CONTENT_TYPE,
            body,
            extra_headers: "",
            head_only: head_request,
        },
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "metrics scrape: cannot read the counters");
            Response::text(
                "500 Internal Server Error",
                format!("cannot read the counters: {err}\n"),
            )
        }
        Err(join) => {
            tracing::warn!(error = %join, "metrics scrape: renderer failed");
            Response::text("500 Internal Server Error", "internal error\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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
            flows_refreshed: 30,
            flows_closing: 5,
            last_reload: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)),
            program_variant: "native",
            not_ready: None,
            interfaces_attached: BTreeMap::from([
                ("eth0".to_owned(), true),
                ("eth1".to_owned(), false),
            ]),
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

    async fn scrape(addr: SocketAddr) -> String {
        let (status, headers, body) = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains(&format!("Content-Type: {CONTENT_TYPE}")),
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
            r#"nodegate_packets_total{interface="eth0",reason="no-source-match",verdict="drop"} 7"#,
            r#"nodegate_packets_total{interface="eth0",reason="allow-rule",verdict="pass"} 40"#,
            r#"nodegate_packets_total{interface="eth1",reason="deny-rule",verdict="would_drop"} 3"#,
            r#"nodegate_packets_total{interface="slot9",reason="essential-arp",verdict="pass"} 1"#,
            r#"nodegate_bytes_total{interface="eth0",reason="no-source-match",verdict="drop"} 700"#,
            r#"nodegate_rule_packets_total{rule="ssh-admins",verdict="pass"} 40"#,
            r#"nodegate_rule_packets_total{rule="block-bad",verdict="drop"} 5"#,
            r#"nodegate_rule_packets_total{rule="block-bad",verdict="would_drop"} 3"#,
            r#"nodegate_rule_packets_total{rule="gone",verdict="unknown"} 2"#,
            r#"nodegate_interface_attached{interface="eth0"} 1"#,
            r#"nodegate_interface_attached{interface="eth1"} 0"#,
            r#"nodegate_repairs_total{what="pin"} 21"#,
            r#"nodegate_repairs_total{what="attachment"} 2"#,
            r#"nodegate_rollbacks_total{cause="probe"} 3"#,
            r#"nodegate_rollbacks_total{cause="unconfirmed"} 0"#,
            "nodegate_confirmations_total 4",
            r#"nodegate_publishes_total{trigger="nodegate apply"} 2"#,
            "nodegate_rollout_pending 1",
            r#"nodegate_rule_bytes_total{rule="ssh-admins",verdict="pass"} 6000"#,
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
        let line =
            r#"nodegate_packets_total{interface="eth0",reason="no-source-match",verdict="drop"}"#;
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
            r#"nodegate_rule_packets_total{rule="we\"ird\\name",verdict="would_drop"} 1"#,
        );
    }
}
