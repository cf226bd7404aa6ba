//! What loading one rule set instead of another changes (`nodegate diff`): settings, rules
//! added, removed and changed (down to the source prefixes each gained or lost), and the
//! concrete consequence — packets whose verdict the change flips, judged by the reference
//! model under both: the operator's probes, and one sample packet from every prefix a rule
//! gained or lost (its first address, on the rule's first port or type).

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    config::Loaded,
    model::{Model, Outcome, ProbeProtocol},
    policy::{Policy, Protocol, Rule},
};

/// A packet to judge under both rule sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Source address.
    pub src: IpAddr,
    /// Protocol.
    #[serde(serialize_with = "protocol_name")]
    pub proto: ProbeProtocol,
    /// Destination port, or ICMP type.
    pub port: u16,
}

fn protocol_name<S: serde::Serializer>(p: &ProbeProtocol, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&probe_protocol_name(*p))
}

fn probe_protocol_name(p: ProbeProtocol) -> String {
    match p {
        ProbeProtocol::Tcp => "tcp".into(),
        ProbeProtocol::Udp => "udp".into(),
        ProbeProtocol::Icmp => "icmp".into(),
        ProbeProtocol::Icmpv6 => "icmpv6".into(),
        ProbeProtocol::Ip(n) => n.to_string(),
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from {} to port/type {}",
            probe_protocol_name(self.proto),
            self.src,
            self.port
        )
    }
}

/// A probe's verdict before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerdictChange {
    /// The packet.
    pub probe: Probe,
    /// The verdict under the running rules.
    pub before: Outcome,
    /// The same under the new file.
    pub after: Outcome,
}

/// A probe whose verdict the change keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SameVerdict {
    /// The packet.
    pub probe: Probe,
    /// Its verdict under both.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One rule present in both, changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    /// Its name (`rule`, as everywhere in JSON output).
    #[serde(rename = "rule")]
    pub name: String,
    /// Which of kind, protocol, ports/types, interfaces changed, as "field: old → new".
    pub fields: Vec<String>,
    /// Source prefixes it gained.
    pub sources_added: Vec<IpNet>,
    /// Source prefixes it lost.
    pub sources_removed: Vec<IpNet>,
}

/// One named set present in both files, changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetChange {
    /// Its name.
    pub name: String,
    /// Prefixes it gained.
    pub added: Vec<IpNet>,
    /// Prefixes it lost.
    pub removed: Vec<IpNet>,
}

/// Everything that differs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Settings as "name: old → new".
    pub settings: Vec<String>,
    /// Sets only in the new file.
    pub sets_added: Vec<String>,
    /// Sets only in the running one.
    pub sets_removed: Vec<String>,
    /// Sets in both, changed.
    pub sets_changed: Vec<SetChange>,
    /// Rules only in the new file.
    pub rules_added: Vec<String>,
    /// Rules only in the running set.
    pub rules_removed: Vec<String>,
    /// Rules in both, changed.
    pub rules_changed: Vec<RuleChange>,
    /// Packets whose verdict flips.
    pub verdicts: Vec<VerdictChange>,
    /// Probes given whose verdict stays (with it), so a probe is never silently ignored.
    pub unchanged_probes: Vec<SameVerdict>,
    /// What the new rules would cut off ([`lockout_risks`]).
    pub lockout: Vec<String>,
    /// TCP connections established on this node now whose packets' verdict flips (see
    /// [`connections_cut`]).
    pub connections: Vec<VerdictChange>,
    /// Flows the node has open (stateful return traffic) whose replies the change would
    /// drop (see [`flows_cut`]).
    pub flows: Vec<VerdictChange>,
    /// Packets the running daemon dropped lately whose verdict flips (see
    /// [`recent_drops_flipped`]).
    pub recent_drops: Vec<VerdictChange>,
}

impl Diff {
    /// Whether loading the new rules changes anything.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
            && self.sets_added.is_empty()
            && self.sets_removed.is_empty()
            && self.sets_changed.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
            && self.rules_changed.is_empty()
    }
}

/// `key: old → new` when they differ, in the rule file's words.
fn setting(out: &mut Vec<String>, key: &str, old: impl ToString, new: impl ToString) {
    let (old, new) = (old.to_string(), new.to_string());
    if old != new {
        out.push(format!("{key}: {old} → {new}"));
    }
}

/// An interface's `interfaces:` entry as the file writes it; `-` when it has none.
fn interface_entry(settings: Option<&crate::policy::InterfaceSettings>) -> String {
    let Some(s) = settings else {
        return "-".into();
    };
    let mut parts = Vec::new();
    if let Some(mode) = s.mode {
        parts.push(format!("mode: {}", mode.name()));
    }
    if let Some(default) = s.default {
        parts.push(format!("default: {}", default.name()));
    }
    format!("{{{}}}", parts.join(", "))
}

fn compare_settings(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let on_off = |allow: bool, yes: &'static str, no: &'static str| if allow { yes } else { no };
    setting(&mut out, "mode", old.mode.name(), new.mode.name());
    setting(&mut out, "default", old.default.name(), new.default.name());
    for (key, a, b) in [
        ("essentials.arp", old.essentials.arp, new.essentials.arp),
        (
            "essentials.neighbor_discovery",
            old.essentials.neighbor_discovery,
            new.essentials.neighbor_discovery,
        ),
        (
            "essentials.icmp_errors",
            old.essentials.icmp_errors,
            new.essentials.icmp_errors,
        ),
    ] {
        setting(&mut out, key, a, b);
    }
    setting(
        &mut out,
        "return_traffic",
        old.return_traffic.describe(),
        new.return_traffic.describe(),
    );
    for (key, a, b) in [
        (
            "return_traffic.timeouts.tcp",
            old.flows.tcp_secs,
            new.flows.tcp_secs,
        ),
        (
            "return_traffic.timeouts.tcp_closing",
            old.flows.tcp_closing_secs,
            new.flows.tcp_closing_secs,
        ),
        (
            "return_traffic.timeouts.udp",
            old.flows.udp_secs,
            new.flows.udp_secs,
        ),
        (
            "return_traffic.timeouts.icmp",
            old.flows.icmp_secs,
            new.flows.icmp_secs,
        ),
        (
            "return_traffic.capacity",
            old.flows.capacity,
            new.flows.capacity,
        ),
        (
            "drop_samples_per_sec",
            old.samples_per_sec,
            new.samples_per_sec,
        ),
        (
            "capacity.ipv4_prefixes",
            old.capacity.ipv4,
            new.capacity.ipv4,
        ),
        (
            "capacity.ipv6_prefixes",
            old.capacity.ipv6,
            new.capacity.ipv6,
        ),
    ] {
        setting(&mut out, key, a, b);
    }
    setting(
        &mut out,
        "fragments",
        old.fragments.name(),
        new.fragments.name(),
    );
    setting(
        &mut out,
        "ipv4_options",
        on_off(old.ipv4_options_allow, "allow", "drop"),
        on_off(new.ipv4_options_allow, "allow", "drop"),
    );
    setting(
        &mut out,
        "unknown_ethertypes",
        on_off(old.unknown_ethertypes_pass, "pass", "drop"),
        on_off(new.unknown_ethertypes_pass, "pass", "drop"),
    );
    let names: BTreeSet<&String> = old.interfaces.keys().chain(new.interfaces.keys()).collect();
    for name in names {
        setting(
            &mut out,
            &format!("interfaces.{name}"),
            interface_entry(old.interfaces.get(name)),
            interface_entry(new.interfaces.get(name)),
        );
    }
    out
}

fn compare_rule(old: &Rule, new: &Rule) -> Option<RuleChange> {
    let mut fields = Vec::new();
    setting(&mut fields, "kind", old.kind.name(), new.kind.name());
    setting(
        &mut fields,
        "protocol",
        old.protocol.name(),
        new.protocol.name(),
    );
    if old.keys != new.keys {
        fields.push(format!(
            "ports/types: {} → {}",
            old.keys_text(),
            new.keys_text()
        ));
    }
    setting(
        &mut fields,
        "interfaces",
        format!("[{}]", old.interfaces.join(", ")),
        format!("[{}]", new.interfaces.join(", ")),
    );
    let before: BTreeSet<&IpNet> = old.sources.iter().collect();
    let after: BTreeSet<&IpNet> = new.sources.iter().collect();
    let sources_added: Vec<IpNet> = after.difference(&before).map(|n| **n).collect();
    let sources_removed: Vec<IpNet> = before.difference(&after).map(|n| **n).collect();
    (!fields.is_empty() || !sources_added.is_empty() || !sources_removed.is_empty()).then(|| {
        RuleChange {
            name: new.name.clone(),
            fields,
            sources_added,
            sources_removed,
        }
    })
}

/// A packet the rule would match from `src` (its first port or type).
fn sample(rule: &Rule, src: IpAddr) -> Probe {
    let key = rule.keys.first().map_or(0, |r| *r.start());
    let proto = match (rule.protocol, src) {
        (Protocol::Tcp, _) | (Protocol::Any, _) => ProbeProtocol::Tcp,
        (Protocol::Udp, _) => ProbeProtocol::Udp,
        (Protocol::Icmp, _) => ProbeProtocol::Icmp,
        (Protocol::Icmpv6, _) => ProbeProtocol::Icmpv6,
    };
    // A port-less TCP sample would be port 0, which nothing listens on but every rule
    // without ports matches; fine for judging.
    Probe {
        src,
        proto,
        port: key,
    }
}

/// A one-line account of what `new` changes against `old`, cheap enough for every reload
/// (rules compared whole, no packets judged): what the audit trail records.
pub fn summary(old: &Policy, new: &Policy) -> String {
    let settings = compare_settings(old, new).len();
    let added = new
        .rules
        .iter()
        .filter(|r| !old.rules.iter().any(|o| o.name == r.name))
        .count();
    let removed = old
        .rules
        .iter()
        .filter(|r| !new.rules.iter().any(|n| n.name == r.name))
        .count();
    let changed = new
        .rules
        .iter()
        .filter(|r| old.rules.iter().any(|o| o.name == r.name && o != *r))
        .count();
    if settings + added + removed + changed == 0 {
        return "no change".into();
    }
    format!("{added} rule(s) added, {removed} removed, {changed} changed, {settings} setting(s) changed")
}

/// A packet that must keep passing for the operator or the node, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    /// The packet.
    pub probe: Probe,
    /// What it is, for the warning ("your SSH session").
    pub what: String,
}

/// The SSH session a command runs in, from `SSH_CONNECTION` (`client port server port`):
/// the packet that must keep passing for the operator to stay connected.
pub fn ssh_session(var: Option<&str>) -> Option<Probe> {
    let mut words = var?.split_whitespace();
    let client: IpAddr = words.next()?.parse().ok()?;
    let _client_port = words.next()?;
    let _server = words.next()?;
    let port: u16 = words.next()?.parse().ok()?;
    Some(Probe {
        src: client,
        proto: ProbeProtocol::Tcp,
        port,
    })
}

/// A port of Linux's default ephemeral range, where the node's own DNS queries get their
/// replies.
const EPHEMERAL_PORT: u16 = 40000;

/// What this host needs to keep receiving: the SSH session a command runs in
/// (`SSH_CONNECTION`), and DNS replies from every non-loopback `nameserver` of
/// `resolv_conf` (a local stub resolver's upstream traffic is not visible here).
pub fn needed_here(ssh_connection: Option<&str>, resolv_conf: Option<&str>) -> Vec<Needed> {
    let mut needed: Vec<Needed> = ssh_session(ssh_connection)
        .map(|probe| Needed {
            probe,
            what: "your SSH session".into(),
        })
        .into_iter()
        .collect();
    needed.extend(
        resolv_conf
            .unwrap_or("")
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|addr| addr.trim().parse::<IpAddr>().ok())
            .filter(|addr| !addr.is_loopback())
            .map(|ns| Needed {
                probe: Probe {
                    src: ns,
                    proto: ProbeProtocol::Udp,
                    port: EPHEMERAL_PORT,
                },
                what: format!("DNS replies from {ns}"),
            }),
    );
    needed
}

/// The default gateways of `/proc/net/route` (IPv4) and `/proc/net/ipv6_route` texts.
pub fn default_gateways(route: &str, ipv6_route: &str) -> Vec<IpAddr> {
    let v4 = route.lines().skip(1).filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (dest, gateway) = (words.get(1)?, words.get(2)?);
        if *dest != "00000000" {
            return None;
        }
        // The kernel prints the address as its in-memory word in hex.
        let word = u32::from_str_radix(gateway, 16).ok()?;
        let addr = std::net::Ipv4Addr::from(word.to_ne_bytes());
        (!addr.is_unspecified()).then_some(IpAddr::V4(addr))
    });
    let v6 = ipv6_route.lines().filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (dest, plen, next_hop) = (words.first()?, words.get(1)?, words.get(4)?);
        if dest.chars().any(|c| c != '0') || *plen != "00" {
            return None;
        }
        let addr = std::net::Ipv6Addr::from(u128::from_str_radix(next_hop, 16).ok()?);
        (!addr.is_unspecified()).then_some(IpAddr::V6(addr))
    });
    let mut all: Vec<IpAddr> = v4.chain(v6).collect();
    all.sort();
    all.dedup();
    all
}

/// What the node needs from its default gateways: their ICMP echo replies (the first
/// thing anyone checks when a node looks unreachable, and what keepalive pings get).
pub fn gateway_needs(gateways: &[IpAddr]) -> Vec<Needed> {
    gateways
        .iter()
        .map(|gw| Needed {
            probe: Probe {
                src: *gw,
                proto: if gw.is_ipv4() {
                    ProbeProtocol::Icmp
                } else {
                    ProbeProtocol::Icmpv6
                },
                port: if gw.is_ipv4() { 0 } else { 129 },
            },
            what: format!("echo replies from the default gateway {gw}"),
        })
        .collect()
}

/// Names of the set that holds the control plane's addresses, as the examples spell it.
const CONTROL_PLANE_SETS: [&str; 2] = ["control-plane", "control_plane"];

/// What the node needs from the control plane: the API server's connections to the
/// kubelet (tcp 10250) and to webhooks and the API on the node (tcp 443), from the first
/// address of every prefix of a `control-plane` set in any of `files`.
pub fn control_plane_needs(files: &[&Loaded]) -> Vec<Needed> {
    let mut prefixes: Vec<IpNet> = files
        .iter()
        .flat_map(|f| {
            CONTROL_PLANE_SETS
                .iter()
                .filter_map(|name| f.sets.get(*name))
                .flatten()
                .copied()
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
        .iter()
        .flat_map(|net| {
            [443, 10250].map(|port| Needed {
                probe: Probe {
                    src: net.network(),
                    proto: ProbeProtocol::Tcp,
                    port,
                },
                what: format!("the control plane ({net}) on tcp {port}"),
            })
        })
        .collect()
}

/// Everything [`lockout_risks`] checks on this node: the SSH session this runs in, the
/// resolvers of `resolv_conf`, the default gateways (`route` and `ipv6_route` under
/// `proc_net`), and the control-plane sets of `files`.
pub fn needed_on_this_node(
    resolv_conf: &std::path::Path,
    proc_net: &std::path::Path,
    files: &[&Loaded],
) -> Vec<Needed> {
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let mut needed = needed_here(
        std::env::var("SSH_CONNECTION").ok().as_deref(),
        Some(&read(resolv_conf)),
    );
    needed.extend(gateway_needs(&default_gateways(
        &read(&proc_net.join("route")),
        &read(&proc_net.join("ipv6_route")),
    )));
    needed.extend(control_plane_needs(files));
    needed
}

/// Lockout risks of `policy`: each `needed` packet it drops, or would drop once enforced,
/// with what drops it. A reply the stateful flow table would let in is no risk.
pub fn lockout_risks(policy: &Policy, needed: &[Needed]) -> Vec<String> {
    let model = Model::new(policy);
    needed
        .iter()
        .filter_map(|n| {
            let p = &n.probe;
            let j = model.explain(p.src, p.proto, p.port);
            ((!j.pass || j.would_drop) && !j.stateful_unknown).then(|| {
                let by = match &j.rule {
                    Some(rule) => format!("rule `{rule}`"),
                    None => format!("reason {}", j.reason.name()),
                };
                let when = if j.would_drop {
                    "would be dropped once enforced"
                } else {
                    "would be dropped"
                };
                format!(
                    "lockout risk: {} ({p}) {when}, by {by}; add a failsafe rule for it",
                    n.what
                )
            })
        })
        .collect()
}

/// The most sample packets judged; each probe given is judged anyway.
const MAX_SAMPLES: usize = 256;

/// Compare the running rules `old` with `new`, judging `probes` and sampled packets.
pub fn diff(old: &Policy, new: &Policy, probes: &[Probe]) -> Diff {
    let mut d = Diff {
        settings: compare_settings(old, new),
        ..Diff::default()
    };
    let mut samples = Vec::new();
    for rule in &new.rules {
        match old.rules.iter().find(|r| r.name == rule.name) {
            None => {
                d.rules_added.push(rule.name.clone());
                samples.extend(rule.sources.iter().map(|n| sample(rule, n.network())));
            }
            Some(before) => {
                if let Some(change) = compare_rule(before, rule) {
                    samples.extend(
                        change
                            .sources_added
                            .iter()
                            .map(|n| sample(rule, n.network())),
                    );
                    samples.extend(
                        change
                            .sources_removed
                            .iter()
                            .map(|n| sample(before, n.network())),
                    );
                    d.rules_changed.push(change);
                }
            }
        }
    }
    for rule in &old.rules {
        if !new.rules.iter().any(|r| r.name == rule.name) {
            d.rules_removed.push(rule.name.clone());
            samples.extend(rule.sources.iter().map(|n| sample(rule, n.network())));
        }
    }
    let (before, after) = (Model::new(old), Model::new(new));
    let judge = |m: &Model, p: &Probe| m.explain(p.src, p.proto, p.port).outcome();
    for probe in probes {
        let (b, a) = (judge(&before, probe), judge(&after, probe));
        if b != a {
            d.verdicts.push(VerdictChange {
                probe: *probe,
                before: b,
                after: a,
            });
        } else {
            d.unchanged_probes.push(SameVerdict {
                probe: *probe,
                outcome: a,
            });
        }
    }
    samples.dedup();
    for probe in samples.iter().take(MAX_SAMPLES) {
        let (b, a) = (judge(&before, probe), judge(&after, probe));
        // Only a flipped verdict is a consequence worth showing for a sample.
        if b.stopped() != a.stopped() {
            d.verdicts.push(VerdictChange {
                probe: *probe,
                before: b,
                after: a,
            });
        }
    }
    d
}

/// Two whole files: [`diff`] of their policies, their named sets compared, and the new
/// rules' [`lockout_risks`] for `needed`.
pub fn diff_files(old: &Loaded, new: &Loaded, probes: &[Probe], needed: &[Needed]) -> Diff {
    let mut d = diff(&old.policy, &new.policy, probes);
    for (name, nets) in &new.sets {
        match old.sets.get(name) {
            None => d.sets_added.push(name.clone()),
            Some(before) => {
                let (b, a): (BTreeSet<&IpNet>, BTreeSet<&IpNet>) =
                    (before.iter().collect(), nets.iter().collect());
                let added: Vec<IpNet> = a.difference(&b).map(|n| **n).collect();
                let removed: Vec<IpNet> = b.difference(&a).map(|n| **n).collect();
                if !added.is_empty() || !removed.is_empty() {
                    d.sets_changed.push(SetChange {
                        name: name.clone(),
                        added,
                        removed,
                    });
                }
            }
        }
    }
    d.sets_removed = old
        .sets
        .keys()
        .filter(|name| !new.sets.contains_key(*name))
        .cloned()
        .collect();
    d.lockout = lockout_risks(&new.policy, needed);
    d
}

/// Of the flows the node has open in the stateful flow table (`flows`: one reply packet
/// each, from the remote to the node's port), those whose replies `new` would drop: only a
/// change away from `return_traffic: stateful` can (a reload keeps the table), and then the
/// new mode and rules decide.
pub fn flows_cut(old: &Policy, new: &Policy, flows: &[Probe]) -> Vec<VerdictChange> {
    use crate::policy::ReturnTraffic::Stateful;
    if old.return_traffic != Stateful || new.return_traffic == Stateful {
        return Vec::new();
    }
    let after = Model::new(new);
    let mut out: Vec<VerdictChange> = Vec::new();
    for p in flows {
        let j = after.explain_ongoing(p.src, p.proto, p.port);
        if (j.pass && !j.would_drop) || out.iter().any(|c| c.probe == *p) {
            continue;
        }
        out.push(VerdictChange {
            probe: *p,
            // An open flow's replies pass as return traffic while the table is in use.
            before: Outcome {
                verdict: "pass",
                reason: filter_common::Reason::ReturnTraffic.name(),
                rule: None,
                would_drop: false,
            },
            after: j.outcome(),
        });
    }
    out
}

/// Of the connections this node has established (`seen`: one inbound packet each, from the
/// peer to our port), those whose verdict flips from pass to drop or back: the concrete
/// sessions a change cuts or lets in. Each distinct packet is judged once, as a segment of
/// a connection under way.
pub fn connections_cut(old: &Policy, new: &Policy, seen: &[Probe]) -> Vec<VerdictChange> {
    flipped(old, new, seen, Model::explain_ongoing)
}

/// Of packets the daemon dropped lately (its drop samples, each judged as a new
/// connection's first packet), those whose verdict flips: what the change does to traffic
/// the node actually sees.
pub fn recent_drops_flipped(old: &Policy, new: &Policy, seen: &[Probe]) -> Vec<VerdictChange> {
    flipped(old, new, seen, Model::explain)
}

type Judge = fn(&Model, IpAddr, ProbeProtocol, u16) -> crate::model::Judgement;

fn flipped(old: &Policy, new: &Policy, seen: &[Probe], judge: Judge) -> Vec<VerdictChange> {
    let (before, after) = (Model::new(old), Model::new(new));
    let verdict = |m: &Model, p: &Probe| {
        let outcome = judge(m, p.src, p.proto, p.port).outcome();
        (!outcome.stopped(), outcome)
    };
    let mut out: Vec<VerdictChange> = Vec::new();
    for p in seen {
        if out.iter().any(|c| c.probe == *p) {
            continue;
        }
        let ((pass_before, b), (pass_after, a)) = (verdict(&before, p), verdict(&after, p));
        if pass_before != pass_after {
            out.push(VerdictChange {
                probe: *p,
                before: b,
                after: a,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str_with, LoadOptions};

    const BASE: &str = "version: 1\nreturn_traffic: off\nsets:\n  cp: [10.0.0.0/24, 10.0.1.0/24]\nfailsafe:\n  - {name: ssh, from: [192.0.2.0/28], protocol: tcp, ports: [22]}\nrules:\n  - {name: api, from: [cp], protocol: tcp, ports: [443]}\n";

    fn policy(text: &str) -> Policy {
        parse_str_with("t.yaml", text, &LoadOptions::fixed_ephemeral(32768..=60999))
            .expect("valid")
            .policy
    }

    #[test]
    fn gateways_and_control_plane_ranges_are_needed() {
        // A little-endian host's tables: default via 192.0.2.254 and via 2001:db8::1.
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\tFE0200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                default_gateways(route, v6),
                vec![
                    "192.0.2.254".parse::<IpAddr>().unwrap(),
                    "2001:db8::1".parse().unwrap()
                ]
            );
        }
        let needs = gateway_needs(&["192.0.2.254".parse().unwrap()]);
        let p = policy(BASE);
        let risks = lockout_risks(&p, &needs);
        assert_eq!(
            risks.len(),
            1,
            "return traffic off drops the gateway's echo replies"
        );
        assert!(
            risks[0].contains("default gateway 192.0.2.254"),
            "{}",
            risks[0]
        );

        let load = |text: &str| {
            parse_str_with("t.yaml", text, &LoadOptions::fixed_ephemeral(32768..=60999)).unwrap()
        };
        let with_set = load(
            &BASE
                .replace("  cp:", "  control-plane:")
                .replace("[cp]", "[control-plane]"),
        );
        let needs = control_plane_needs(&[&with_set]);
        assert_eq!(needs.len(), 4, "two prefixes, two ports");
        let risks = lockout_risks(&with_set.policy, &needs);
        assert_eq!(risks.len(), 2, "443 passes, 10250 does not: {risks:?}");
        assert!(
            risks.iter().all(|r| r.contains("on tcp 10250")),
            "{risks:?}"
        );
    }

    #[test]
    fn open_flows_are_cut_only_by_leaving_stateful_return_traffic() {
        let stateful = policy(&BASE.replace("return_traffic: off", "return_traffic: stateful"));
        let off = policy(BASE);
        let flow = Probe {
            src: "203.0.113.7".parse().unwrap(),
            proto: ProbeProtocol::Tcp,
            port: 40000,
        };
        assert!(
            flows_cut(&stateful, &stateful, &[flow]).is_empty(),
            "a reload keeps the table"
        );
        assert!(
            flows_cut(&off, &stateful, &[flow]).is_empty(),
            "there was no table"
        );
        let cut = flows_cut(&stateful, &off, &[flow, flow]);
        assert_eq!(cut.len(), 1);
        assert!(
            cut[0].after.to_string().starts_with("drop"),
            "{}",
            cut[0].after
        );
        let ephemeral = policy(&BASE.replace(
            "return_traffic: off",
            "return_traffic:\n  mode: ephemeral\n  ports: \"32768-60999\"",
        ));
        assert!(
            flows_cut(&stateful, &ephemeral, &[flow]).is_empty(),
            "the ephemeral range still passes it"
        );
    }

    #[test]
    fn connections_whose_verdict_flips_are_listed_once() {
        let old = policy(BASE);
        let new = policy(&BASE.replace("cp: [10.0.0.0/24, 10.0.1.0/24]", "cp: [10.0.0.0/24]"));
        let conn = |src: &str, port| Probe {
            src: src.parse().unwrap(),
            proto: ProbeProtocol::Tcp,
            port,
        };
        let seen = [
            conn("10.0.1.7", 443),
            conn("10.0.1.7", 443),
            conn("10.0.0.7", 443),
            conn("192.0.2.3", 22),
        ];
        let cut = connections_cut(&old, &new, &seen);
        assert_eq!(cut.len(), 1, "{cut:?}");
        assert_eq!(cut[0].probe, conn("10.0.1.7", 443));
        assert!(
            cut[0].before.to_string().starts_with("pass (api)"),
            "{}",
            cut[0].before
        );
        assert!(
            cut[0].after.to_string().starts_with("drop"),
            "{}",
            cut[0].after
        );
    }

    #[test]
    fn an_identical_file_changes_nothing_and_probes_are_still_reported() {
        let p = policy(BASE);
        let probe = Probe {
            src: "10.0.0.5".parse().unwrap(),
            proto: ProbeProtocol::Tcp,
            port: 443,
        };
        let d = diff(&p, &p, &[probe]);
        assert!(d.is_empty() && d.verdicts.is_empty(), "{d:?}");
        assert_eq!(d.unchanged_probes.len(), 1);
        assert_eq!(d.unchanged_probes[0].probe, probe);
        assert_eq!(d.unchanged_probes[0].outcome.to_string(), "pass (api)");
    }

    #[test]
    fn a_prefix_removed_from_a_set_shows_in_the_rule_and_flips_its_sample() {
        let new = policy(&BASE.replace(", 10.0.1.0/24", ""));
        let d = diff(&policy(BASE), &new, &[]);
        assert_eq!(d.rules_changed.len(), 1);
        assert_eq!(d.rules_changed[0].name, "api");
        assert_eq!(
            d.rules_changed[0].sources_removed,
            vec!["10.0.1.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(d.verdicts.len(), 1, "{d:?}");
        assert_eq!(
            d.verdicts[0].probe.src,
            "10.0.1.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(d.verdicts[0].before.to_string(), "pass (api)");
        assert!(d.verdicts[0].after.to_string().starts_with("drop"), "{d:?}");
    }

    #[test]
    fn an_ssh_session_the_rules_drop_is_a_lockout_risk_naming_the_cause() {
        let admin = needed_here(Some("192.0.2.5 51000 10.1.1.1 22"), None);
        assert_eq!(admin[0].probe.port, 22);
        assert!(
            lockout_risks(&policy(BASE), &admin).is_empty(),
            "failsafe ssh"
        );
        let outside = needed_here(Some("198.51.100.7 51000 10.1.1.1 22"), None);
        let risks = lockout_risks(&policy(BASE), &outside);
        assert_eq!(risks.len(), 1);
        assert!(
            risks[0].contains("your SSH session")
                && risks[0].contains("198.51.100.7")
                && risks[0].contains("no-source-match"),
            "{risks:?}"
        );
        assert_eq!(ssh_session(Some("garbage")), None);
        assert_eq!(ssh_session(None), None);
    }

    #[test]
    fn dns_replies_are_a_risk_without_return_traffic_only() {
        let resolv = "# comment\nnameserver 127.0.0.53\nnameserver 10.9.0.2\nsearch x\n";
        let needed = needed_here(None, Some(resolv));
        assert_eq!(needed.len(), 1, "the loopback stub is skipped: {needed:?}");
        let risks = lockout_risks(&policy(BASE), &needed);
        assert_eq!(risks.len(), 1, "return_traffic: off drops them");
        assert!(risks[0].contains("DNS replies from 10.9.0.2"), "{risks:?}");
        let stateful = policy(&BASE.replace("return_traffic: off", "return_traffic: stateful"));
        assert!(
            lockout_risks(&stateful, &needed).is_empty(),
            "the flow table lets replies in"
        );
    }

    #[test]
    fn sets_are_compared_by_name() {
        let load = |text: &str| {
            parse_str_with("t.yaml", text, &LoadOptions::fixed_ephemeral(32768..=60999)).unwrap()
        };
        let old = load(BASE);
        let new = load(&BASE.replace(", 10.0.1.0/24]", ", 10.0.2.0/24]\n  spare: [10.7.0.0/16]"));
        let d = diff_files(&old, &new, &[], &[]);
        assert_eq!(d.sets_added, vec!["spare".to_string()]);
        assert_eq!(d.sets_changed.len(), 1);
        assert_eq!(d.sets_changed[0].name, "cp");
        assert_eq!(
            d.sets_changed[0].added,
            vec!["10.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            d.sets_changed[0].removed,
            vec!["10.0.1.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            diff_files(&new, &old, &[], &[]).sets_removed,
            vec!["spare".to_string()]
        );
        assert!(diff_files(&old, &old, &[], &[]).is_empty());
    }

    #[test]
    fn settings_and_rules_added_or_removed_are_listed() {
        let new = policy(&format!(
            "{}  - {{name: dns, from: [10.9.0.0/16], protocol: udp, ports: [53]}}\n",
            BASE.replace("return_traffic: off", "return_traffic: off\nmode: monitor")
                .replace("ports: [443]", "ports: [443, 6443]")
        ));
        let d = diff(&policy(BASE), &new, &[]);
        assert_eq!(d.settings, vec!["mode: enforce → monitor".to_string()]);
        assert_eq!(d.rules_added, vec!["dns".to_string()]);
        assert_eq!(
            d.rules_changed[0].fields,
            vec!["ports/types: 443 → 443,6443".to_string()]
        );
        let gone = diff(&new, &policy(BASE), &[]);
        assert_eq!(gone.rules_removed, vec!["dns".to_string()]);
        // Every setting in the rule file's own words and keys.
        let other = policy(
            &BASE.replace(
                "return_traffic: off",
                "return_traffic: stateful\nfragments: drop\nessentials: {arp: false}\ninterfaces:\n  eth1: {mode: monitor}",
            ),
        );
        assert_eq!(
            diff(&policy(BASE), &other, &[]).settings,
            [
                "essentials.arp: true → false",
                "return_traffic: off → stateful",
                "fragments: track → drop",
                "interfaces.eth1: - → {mode: monitor}",
            ]
        );
        assert_eq!(
            summary(&policy(BASE), &new),
            "1 rule(s) added, 0 removed, 1 changed, 1 setting(s) changed"
        );
        assert_eq!(summary(&new, &new), "no change");
    }
}
