//! The exposition of one scrape: the kernel counters of a [`Snapshot`] and the daemon's
//! [`DaemonState`], encoded with `prometheus-client`'s const metrics through a per-scrape
//! [`Collector`] as OpenMetrics text, and rewritten into the classic Prometheus text format
//! (0.0.4) for a scraper that does not ask for OpenMetrics ([`Format::negotiate`]).
//!
//! Every rule of the active rule set and every interface has its series from the first
//! scrape, at zero until something is counted: a rule that never matches is visible, and
//! `rate()` has a first sample to start from.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use filter_common::Reason;

use super::DaemonState;
use crate::loader::counters::Snapshot;
use crate::policy::{DefaultAction, Mode, RuleKind};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// `Content-Type` of an OpenMetrics scrape (what `prometheus-client`'s text encoder produces).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of a scrape in the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (Prometheus asks for it first).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (older scrapers, curl).
    Classic,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a non-zero quality, the classic format otherwise
    /// (no header, `text/plain`, `*/*`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let zero_quality = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !zero_quality
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// The `Content-Type` of a scrape in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => CONTENT_TYPE,
            Format::Classic => CLASSIC_CONTENT_TYPE,
        }
    }
}

/// [`render`] in `format`.
pub fn render_as(snapshot: &Snapshot, state: &DaemonState, format: Format) -> String {
    let openmetrics = render(snapshot, state);
    match format {
        Format::OpenMetrics => openmetrics,
        Format::Classic => to_classic(&openmetrics),
    }
}

/// OpenMetrics text → the classic text format: a counter family `x` is declared as
/// `x_total` (its samples' name), an info family `x` as the gauge `x_info`, `# UNIT` lines
/// and the `# EOF` marker go. Samples are the same lines.
fn to_classic(openmetrics: &str) -> String {
    let mut renamed: BTreeMap<&str, (String, &str)> = BTreeMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                let classic = match kind {
                    "counter" => (format!("{name}_total"), "counter"),
                    "info" => (format!("{name}_info"), "gauge"),
                    other => (name.to_owned(), other),
                };
                renamed.insert(name, classic);
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let declared = line
            .strip_prefix("# HELP ")
            .map(|rest| ("HELP", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("TYPE", rest)));
        match declared {
            Some((what, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let (classic, kind) = renamed
                    .get(name)
                    .map_or((name, None), |(n, k)| (n.as_str(), Some(*k)));
                let tail = if what == "TYPE" {
                    kind.unwrap_or(tail)
                } else {
                    tail
                };
                out.push_str(&format!("# {what} {classic} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

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

/// What happened to the packets: a monitor-mode would-drop passed (its `would_drop` label
/// says what enforcing would do, docs/OUTPUT.md).
fn verdict_of_reason(reason: &str, would_drop: bool) -> &'static str {
    if would_drop {
        "pass"
    } else if Reason::from_name(reason).is_some_and(Reason::is_drop) {
        "drop"
    } else {
        "pass"
    }
}

fn verdict_of_rule(kind: Option<&RuleKind>, would_drop: bool) -> &'static str {
    match (would_drop, kind) {
        (true, _) => "pass",
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
        let mut reasons: BTreeMap<(String, &'static str, &'static str, bool), (u64, u64)> =
            BTreeMap::new();
        // Every interface and reason from the first scrape (would-drop too where the
        // interface monitors), at zero until counted.
        for name in state.interfaces.values() {
            let monitors = state
                .interface_settings
                .get(name)
                .is_some_and(|(mode, _)| *mode == Mode::Monitor);
            for reason in Reason::ALL {
                let reason_name = reason.name();
                reasons
                    .entry((
                        name.clone(),
                        reason_name,
                        verdict_of_reason(reason_name, false),
                        false,
                    ))
                    .or_default();
                if monitors && reason.is_drop() {
                    reasons
                        .entry((
                            name.clone(),
                            reason_name,
                            verdict_of_reason(reason_name, true),
                            true,
                        ))
                        .or_default();
                }
            }
        }
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
                    count.would_drop,
                ))
                .or_default();
            entry.0 += count.packets;
            entry.1 += count.bytes;
        }
        let mut rules: BTreeMap<(String, &'static str, bool), (u64, u64)> = BTreeMap::new();
        // Every rule of the active rule set from the first scrape: one that never matches
        // shows as 0 instead of not at all.
        for (name, kind) in &state.rule_kinds {
            rules
                .entry((name.clone(), verdict_of_rule(Some(kind), false), false))
                .or_default();
        }
        for count in &snap.rules {
            let name = if count.name.is_empty() {
                format!("slot{}", count.slot)
            } else {
                count.name.clone()
            };
            let verdict = verdict_of_rule(state.rule_kinds.get(&count.name), count.would_drop);
            let entry = rules.entry((name, verdict, count.would_drop)).or_default();
            entry.0 += count.packets;
            entry.1 += count.bytes;
        }
        let reason_labels = |(iface, reason, verdict, would_drop): &(
            String,
            &'static str,
            &'static str,
            bool,
        )|
         -> Labels {
            vec![
                ("interface", iface.clone()),
                ("reason", (*reason).to_owned()),
                ("verdict", (*verdict).to_owned()),
                ("would_drop", would_drop.to_string()),
            ]
        };
        let rule_labels = |(rule, verdict, would_drop): &(String, &'static str, bool)| -> Labels {
            vec![
                ("rule", rule.clone()),
                ("verdict", (*verdict).to_owned()),
                ("would_drop", would_drop.to_string()),
            ]
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
            "1 when the filter is attached to the interface `--iface` asked for, 0 while it is not (interface missing, detached by another tool, or held by another XDP program); with the XDP mode it runs in and the program variant.",
            state.interfaces_attached.iter().map(|(name, mode)| {
                (
                    vec![
                        ("interface", name.clone()),
                        ("xdp_mode", mode.unwrap_or("none").to_owned()),
                        ("variant", state.program_variant.to_owned()),
                    ],
                    i64::from(mode.is_some()),
                )
            }),
        )?;
        single_gauge(
            &mut encoder,
            "nodegate_flow_table_capacity",
            "Entries the flow table of stateful return traffic holds (the least recently used go first when it is full).",
            None,
            state.flow_capacity.map(i64::from),
        )?;
        single_gauge(
            &mut encoder,
            "nodegate_flow_table_entries",
            "Entries in the flow table of stateful return traffic (counted by walking the table, at most every 30 s).",
            None,
            state.flow_entries.and_then(|n| i64::try_from(n).ok()),
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
        let last_failure = state.last_failure.map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        });
        single_gauge(
            &mut encoder,
            "nodegate_last_reload_failure_timestamp",
            "Unix time of the last rejected reload (the previous rules stayed).",
            Some(&Unit::Seconds),
            last_failure,
        )?;
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
