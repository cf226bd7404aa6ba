//! Prometheus metrics: the kernel counters and the daemon's state, served at `GET /metrics`
//! on loopback unless another address is asked for, in OpenMetrics text when the scraper's
//! `Accept` header asks for it (Prometheus does) and in the classic text format 0.0.4
//! otherwise. Every active rule and attached interface has its series from the first
//! scrape, at zero until counted.
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
//! | `nodegate_packets_total`, `nodegate_bytes_total` | `interface`, `reason`, `verdict` = `pass`/`drop`, `would_drop` = `true` for a monitor-mode would-drop (which passed) |
//! | `nodegate_rule_packets_total`, `nodegate_rule_bytes_total` | `rule`, `verdict` = `pass`/`drop` (`unknown` for a rule not in the active rule set), `would_drop` |
//! | `nodegate_reloads_total` | `result` = `success`/`failure` (the start is a load, not a reload: `nodegate_publishes_total{trigger="start"}`) |
//! | `nodegate_publishes_total` | `trigger` = `start`/`file change`/`SIGHUP`/`nodegate reload`/`nodegate apply`/`rollback (CAUSE)` |
//! | `nodegate_drop_samples_total` | `outcome` = `emitted`/`lost` |
//! | `nodegate_flow_events_total` | `event` = `inserted`/`refreshed`/`closing` (stateful return traffic: flows the TC egress program learned) |
//! | `nodegate_active_generation` | — (the epoch of the active rule generation) |
//! | `nodegate_prefixes` | `family` = `ipv4`/`ipv6` |
//! | `nodegate_lookup_table_kernel_bytes` | `family` (kernel memory of the source lookup table map, both generations) |
//! | `nodegate_lookup_table_fill_ratio` | `family` (share of one generation's table the active rules use) |
//! | `nodegate_interface_monitor` | `interface` (1: monitor mode on it, 0: enforce; `interfaces:` in the rule file may differ from the file's `mode`) |
//! | `nodegate_interface_default_pass` | `interface` (1: default pass on it, 0: default drop) |
//! | `nodegate_interface_attached` | `interface`, `xdp_mode` = `driver`/`generic`/`none`, `variant` = `native`/`spectre-hardened` (1: attached to an interface `--iface` asked for, 0: not, see `/readyz`) |
//! | `nodegate_flow_table_capacity` | — (entries the flow table of stateful return traffic holds) |
//! | `nodegate_flow_table_entries` | — (entries it holds now; counted by a walk at most every 30 s) |
//! | `nodegate_last_reload_failure_timestamp_seconds` | — (absent until a reload is rejected) |
//! | `nodegate_repairs_total` | `what` = `pin`/`attachment` (put back after someone else removed it) |
//! | `nodegate_rollbacks_total` | `cause` = `probe`/`unconfirmed`/`established_connection`/`operator` (confirmed changes flipped back) |
//! | `nodegate_confirmations_total` | — (confirmed changes kept) |
//! | `nodegate_rollout_pending` | — (1 while a change is on probation) |
//! | `nodegate_last_reload_timestamp_seconds` | — (absent until the first successful reload) |
//! | `nodegate_info` | `version`, `program_variant` = `native`/`spectre-hardened` (loaded without CAP_PERFMON) |
//!
//!
//! [`exposition`] encodes one scrape; [`http`] serves it and the health probes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::SystemTime;

use crate::loader::counters::Snapshot;
use crate::loader::LoaderError;
use crate::policy::{DefaultAction, Mode, RuleKind};

pub mod exposition;
pub mod http;

pub use exposition::{render, render_as, Format, CLASSIC_CONTENT_TYPE, CONTENT_TYPE};
pub use http::{bind, bind_error, serve, serve_listener};

/// Where `/metrics` is served unless `--metrics ADDR` says otherwise: loopback only.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9864));

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
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address (or `0.0.0.0:0` when unknown).
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

impl crate::hint::Hint for MetricsError {
    fn hint(&self) -> Option<&str> {
        match self {
            MetricsError::Bind { hint, .. } => crate::hint::non_empty(hint),
            MetricsError::NotLoopback { .. } => None,
        }
    }
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
    /// Each interface `--iface` asked for, and the XDP mode the filter runs in there (`None`:
    /// not attached now).
    pub interfaces_attached: BTreeMap<String, Option<&'static str>>,
    /// Capacity of the flow table (stateful return traffic), when it could be read.
    pub flow_capacity: Option<u32>,
    /// Entries in the flow table, when counted (a walk of the table, so not every scrape).
    pub flow_entries: Option<u64>,
    /// When the last reload was rejected, if one was.
    pub last_failure: Option<SystemTime>,
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

#[cfg(test)]
mod tests;
