//! The document: the top-level keys, `essentials`, `return_traffic`, `capacity` and `sets`
//! decoded into a [`Document`] that still holds the rules as written ([`RawRule`], decoded
//! by `config::rules`). Cross-entry checks come after, in `config::resolve`.

use std::{collections::BTreeMap, ops::RangeInclusive, rc::Rc};

use ipnet::IpNet;

use super::interfaces::{decode_interfaces, InterfaceEntry};
use super::node::{
    boolean, decode_default, decode_mode, fields, integer, list, map_entries, scalar, word, Cx,
    Fields,
};
use super::rules::{decode_rule_list, RawRule, RuleSink, WrittenCidrs, RULE_KEYS};
use super::values::{cidr_node, is_set_name, key_item, KeyKind};
use super::yaml::{Node, NodeKind, Pos};
use super::LoadOptions;
use crate::policy::{
    DefaultAction, Essentials, FlowTable, Fragments, Mode, PrefixCapacity, ReturnTraffic, RuleKind,
};

/// The only config version this loader reads.
pub(crate) const VERSION: u64 = 1;
/// Linux's default `ip_local_port_range`, used when the system cannot be read.
pub(super) const LINUX_DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

pub(super) const TOP_KEYS: &[&str] = &[
    "version",
    "mode",
    "default",
    "allow_empty",
    "allow_any_source",
    "acknowledge_failsafe_change",
    "essentials",
    "return_traffic",
    "fragments",
    "ipv4_options",
    "unknown_ethertypes",
    "drop_samples_per_sec",
    "capacity",
    "rollout",
    "interfaces",
    "sets",
    "failsafe",
    "rules",
];
pub(super) const ESSENTIAL_KEYS: &[&str] = &["arp", "neighbor_discovery", "icmp_errors"];
pub(super) const RETURN_KEYS: &[&str] = &["mode", "ports", "timeouts", "capacity"];
pub(super) const CAPACITY_KEYS: &[&str] = &["ipv4_prefixes", "ipv6_prefixes"];
pub(super) const TIMEOUT_KEYS: &[&str] = &["tcp", "tcp_closing", "udp", "icmp"];
/// Every key the decoder accepts, as the dotted path docs/CONFIG.md documents it under
/// (`rules[].KEY` covers `failsafe[]` too; `interfaces.NAME.KEY` any interface name).
pub fn key_paths() -> Vec<String> {
    let under = |prefix: &str, keys: &[&str]| -> Vec<String> {
        keys.iter().map(|k| format!("{prefix}{k}")).collect()
    };
    let mut paths = under("", TOP_KEYS);
    paths.extend(under("essentials.", ESSENTIAL_KEYS));
    paths.extend(under("return_traffic.", RETURN_KEYS));
    paths.extend(under("return_traffic.timeouts.", TIMEOUT_KEYS));
    paths.extend(under("capacity.", CAPACITY_KEYS));
    paths.extend(under("rollout.", super::rollout::ROLLOUT_KEYS));
    paths.extend(under("interfaces.NAME.", super::interfaces::INTERFACE_KEYS));
    paths.extend(under("rules[].", RULE_KEYS));
    paths.push("sets.NAME".into());
    paths
}

/// Longest flow timeout: a week, in seconds.
pub(super) const MAX_FLOW_TIMEOUT: u64 = 7 * 24 * 3600;
/// Flow table capacity bounds (the map is preallocated: ~100 bytes an entry).
pub(super) const MIN_FLOW_CAPACITY: u64 = 64;
pub(super) const MAX_FLOW_CAPACITY: u64 = 1 << 20;

pub(super) struct Document {
    pub(super) root_pos: Pos,
    pub(super) mode: Mode,
    pub(super) default: DefaultAction,
    pub(super) allow_empty: bool,
    pub(super) allow_any_source: bool,
    pub(super) acknowledge_failsafe_change: bool,
    pub(super) essentials: Essentials,
    pub(super) return_traffic: ReturnTraffic,
    pub(super) flows: FlowTable,
    pub(super) capacity: PrefixCapacity,
    pub(super) fragments: Fragments,
    pub(super) ipv4_options_allow: bool,
    pub(super) unknown_ethertypes_pass: bool,
    pub(super) samples_per_sec: u32,
    pub(super) sets: Vec<SetDef>,
    pub(super) rules: Vec<RawRule>,
    pub(super) rules_pos: Option<Pos>,
    pub(super) failsafe_pos: Option<Pos>,
    /// Every CIDR written in the file: (prefix, position, owner) for overlap warnings. The
    /// owner is shared: a set of 100k entries names itself once, not 100k times.
    pub(super) cidrs: WrittenCidrs,
    /// `rollout:`, when the file makes its changes confirmed ones.
    pub(super) rollout: Option<crate::policy::Rollout>,
    pub(super) interfaces: BTreeMap<String, InterfaceEntry>,
}

impl Document {
    /// Where the default verdict is drop: `Some(None)` for the file's own `default` (every
    /// interface not named under `interfaces:`), `Some(Some(name))` when only interfaces
    /// that override it drop, `None` when the default is pass everywhere.
    pub(super) fn default_drop_on(&self) -> Option<Option<&str>> {
        if self.default == DefaultAction::Drop {
            return Some(None);
        }
        self.interfaces
            .iter()
            .find(|(_, i)| i.settings.default == Some(DefaultAction::Drop))
            .map(|(name, _)| Some(name.as_str()))
    }
}

pub(super) struct SetDef {
    pub(super) name: String,
    pub(super) pos: Pos,
    pub(super) entries: Vec<(IpNet, Pos)>,
}

// Document

pub(super) fn decode_document(cx: &mut Cx, root: &Node, opts: &LoadOptions) -> Option<Document> {
    if !matches!(root.kind, NodeKind::Map(_)) {
        cx.error(
            root.pos,
            format!(
                "the config file must be a mapping of settings, found {}",
                root.describe()
            ),
            "start with `version: 1`, then `rules:`",
        );
        return None;
    }
    let f = fields(cx, root, "the config file", TOP_KEYS)?;
    let mut doc = Document {
        root_pos: root.pos,
        mode: Mode::Enforce,
        default: DefaultAction::Drop,
        allow_empty: false,
        allow_any_source: false,
        acknowledge_failsafe_change: false,
        essentials: Essentials::default(),
        return_traffic: ReturnTraffic::Stateful,
        flows: FlowTable::default(),
        capacity: PrefixCapacity::default(),
        fragments: Fragments::Track,
        ipv4_options_allow: false,
        unknown_ethertypes_pass: false,
        samples_per_sec: 10,
        sets: Vec::new(),
        rules: Vec::new(),
        rules_pos: f.key_pos("rules"),
        failsafe_pos: f.key_pos("failsafe"),
        cidrs: Vec::new(),
        interfaces: BTreeMap::new(),
        rollout: None,
    };

    match f.get("version") {
        None => cx.error(
            root.pos,
            "missing `version`",
            "add `version: 1` at the top of the file",
        ),
        Some(n) => {
            if let Some(v) = integer(cx, n, "`version`", u64::from(u32::MAX)) {
                if v != VERSION {
                    cx.error(
                        n.pos,
                        format!("unsupported config version {v}"),
                        format!("this nodegate reads `version: {VERSION}`"),
                    );
                }
            }
        }
    }
    if let Some(n) = f.get("mode") {
        doc.mode = decode_mode(cx, n, "`mode`").unwrap_or(doc.mode);
    }
    if let Some(n) = f.get("default") {
        doc.default = decode_default(cx, n, "`default`").unwrap_or(doc.default);
    }
    if let Some(n) = f.get("interfaces") {
        doc.interfaces = decode_interfaces(cx, n);
    }
    if let Some(n) = f.get("allow_empty") {
        doc.allow_empty = boolean(cx, n, "`allow_empty`").unwrap_or(false);
    }
    if let Some(n) = f.get("allow_any_source") {
        doc.allow_any_source = boolean(cx, n, "`allow_any_source`").unwrap_or(false);
    }
    if let Some(n) = f.get("acknowledge_failsafe_change") {
        doc.acknowledge_failsafe_change =
            boolean(cx, n, "`acknowledge_failsafe_change`").unwrap_or(false);
    }
    if let Some(n) = f.get("essentials") {
        if let Some(e) = fields(cx, n, "`essentials`", ESSENTIAL_KEYS) {
            let mut get = |key: &str, dflt: bool| {
                e.get(key)
                    .and_then(|v| boolean(cx, v, &format!("`essentials.{key}`")))
                    .unwrap_or(dflt)
            };
            doc.essentials = Essentials {
                arp: get("arp", true),
                neighbor_discovery: get("neighbor_discovery", true),
                icmp_errors: get("icmp_errors", true),
            };
        }
    }
    if let Some(n) = f.get("return_traffic") {
        if let Some(rt) = decode_return_traffic(cx, n, opts, &mut doc.flows) {
            doc.return_traffic = rt;
        }
    }
    if let Some(n) = f.get("fragments") {
        doc.fragments = word(
            cx,
            n,
            "`fragments`",
            &[("track", Fragments::Track), ("drop", Fragments::Drop)],
        )
        .unwrap_or(doc.fragments);
    }
    if let Some(n) = f.get("ipv4_options") {
        doc.ipv4_options_allow =
            word(cx, n, "`ipv4_options`", &[("drop", false), ("allow", true)]).unwrap_or(false);
    }
    if let Some(n) = f.get("unknown_ethertypes") {
        doc.unknown_ethertypes_pass = word(
            cx,
            n,
            "`unknown_ethertypes`",
            &[("drop", false), ("pass", true)],
        )
        .unwrap_or(false);
    }
    if let Some(n) = f.get("capacity") {
        decode_capacity(cx, n, &mut doc.capacity);
    }
    if let Some(v) = opts.capacity.ipv4 {
        doc.capacity.ipv4 = v;
    }
    if let Some(v) = opts.capacity.ipv6 {
        doc.capacity.ipv6 = v;
    }
    if let Some(n) = f.get("rollout") {
        doc.rollout = super::rollout::decode_rollout(cx, n);
    }
    if let Some(n) = f.get("drop_samples_per_sec") {
        if let Some(v) = integer(cx, n, "`drop_samples_per_sec`", 1_000_000) {
            doc.samples_per_sec = v as u32;
        }
    }
    let empty_ok = doc.allow_empty || doc.default_drop_on().is_none();
    if let Some(n) = f.get("sets") {
        decode_sets(cx, n, &mut doc, empty_ok);
    }
    let mut sink = RuleSink {
        rules: &mut doc.rules,
        cidrs: &mut doc.cidrs,
        allow_any_source: doc.allow_any_source,
    };
    if let Some(n) = f.get("failsafe") {
        decode_rule_list(cx, n, &mut sink, RuleKind::Failsafe, empty_ok);
    }
    if let Some(n) = f.get("rules") {
        decode_rule_list(cx, n, &mut sink, RuleKind::Allow, empty_ok);
    }
    Some(doc)
}

/// `capacity.ipv4_prefixes` / `.ipv6_prefixes`.
pub(super) fn decode_capacity(cx: &mut Cx, node: &Node, capacity: &mut PrefixCapacity) {
    let Some(f) = fields(cx, node, "`capacity`", CAPACITY_KEYS) else {
        return;
    };
    for (key, slot, max) in [
        (
            "ipv4_prefixes",
            &mut capacity.ipv4,
            PrefixCapacity::MAX_IPV4,
        ),
        (
            "ipv6_prefixes",
            &mut capacity.ipv6,
            PrefixCapacity::MAX_IPV6,
        ),
    ] {
        let Some(n) = f.get(key) else { continue };
        let what = format!("`capacity.{key}`");
        match integer(cx, n, &what, u64::from(max)) {
            Some(0) => cx.error(
                n.pos,
                format!("{what} must be at least 1"),
                format!("write a number of prefixes from 1 to {max}"),
            ),
            Some(v) => *slot = v as u32,
            None => {}
        }
    }
}

/// `return_traffic.timeouts` and `.capacity` into `flows` (stateful only).
pub(super) fn decode_flow_table(cx: &mut Cx, f: &Fields, flows: &mut FlowTable) {
    if let Some(t) = f.get("timeouts") {
        if let Some(tf) = fields(cx, t, "`return_traffic.timeouts`", TIMEOUT_KEYS) {
            for (key, slot) in [
                ("tcp", &mut flows.tcp_secs),
                ("tcp_closing", &mut flows.tcp_closing_secs),
                ("udp", &mut flows.udp_secs),
                ("icmp", &mut flows.icmp_secs),
            ] {
                let Some(n) = tf.get(key) else { continue };
                let what = format!("`return_traffic.timeouts.{key}`");
                match integer(cx, n, &what, MAX_FLOW_TIMEOUT) {
                    Some(0) => cx.error(
                        n.pos,
                        format!("{what} must be at least 1 second"),
                        format!("write a number of seconds from 1 to {MAX_FLOW_TIMEOUT}"),
                    ),
                    Some(v) => *slot = v as u32,
                    None => {}
                }
            }
        }
    }
    if let Some(n) = f.get("capacity") {
        let what = "`return_traffic.capacity`";
        match integer(cx, n, what, MAX_FLOW_CAPACITY) {
            Some(v) if v < MIN_FLOW_CAPACITY => cx.error(
                n.pos,
                format!("{what} {v} is too small"),
                format!("the flow table holds {MIN_FLOW_CAPACITY} to {MAX_FLOW_CAPACITY} entries"),
            ),
            Some(v) => flows.capacity = v as u32,
            None => {}
        }
    }
}

pub(super) fn decode_return_traffic(
    cx: &mut Cx,
    node: &Node,
    opts: &LoadOptions,
    flows: &mut FlowTable,
) -> Option<ReturnTraffic> {
    #[derive(Clone, Copy)]
    enum M {
        Stateful,
        Ephemeral,
        Off,
    }
    let choices = [
        ("stateful", M::Stateful),
        ("ephemeral", M::Ephemeral),
        ("off", M::Off),
    ];
    let (mode, ports) = match &node.kind {
        NodeKind::Map(_) => {
            let f = fields(cx, node, "`return_traffic`", RETURN_KEYS)?;
            let Some(m) = f.get("mode") else {
                cx.error(
                    node.pos,
                    "missing `mode` in `return_traffic`",
                    "write `mode: stateful`, `mode: ephemeral` or `mode: off`",
                );
                return None;
            };
            let mode = word(cx, m, "`return_traffic.mode`", &choices)?;
            if matches!(mode, M::Stateful) {
                decode_flow_table(cx, &f, flows);
            } else {
                for key in ["timeouts", "capacity"] {
                    if let Some(n) = f.get(key) {
                        cx.error(
                            n.pos,
                            format!("`{key}` only applies to `mode: stateful`"),
                            format!("remove `{key}`, or use `mode: stateful`"),
                        );
                    }
                }
            }
            (mode, f.get("ports"))
        }
        _ => (word(cx, node, "`return_traffic`", &choices)?, None),
    };
    match (mode, ports) {
        (M::Stateful | M::Off, Some(p)) => {
            cx.error(
                p.pos,
                "`ports` only applies to `mode: ephemeral`",
                "remove `ports`, or use `mode: ephemeral`",
            );
            None
        }
        (M::Stateful, None) => Some(ReturnTraffic::Stateful),
        (M::Off, None) => Some(ReturnTraffic::Off),
        (M::Ephemeral, Some(p)) => {
            let (text, _) = scalar(
                cx,
                p,
                "`return_traffic.ports`",
                "a range like \"32768-60999\"",
            )?;
            if !text.contains('-') {
                cx.error(
                    p.pos,
                    format!("`{text}` is not a port range"),
                    "write the ephemeral range as \"32768-60999\"",
                );
                return None;
            }
            key_item(cx, p, KeyKind::Port).map(|ports| ReturnTraffic::Ephemeral { ports })
        }
        (M::Ephemeral, None) => {
            let ports = match (opts.ephemeral_range)() {
                Ok(r) if *r.start() >= 1 && r.start() <= r.end() => r,
                Ok(r) => {
                    cx.warn(
                        node.pos,
                        format!(
                            "the system's ephemeral port range {}-{} is unusable; using {}-{}",
                            r.start(),
                            r.end(),
                            LINUX_DEFAULT_EPHEMERAL.start(),
                            LINUX_DEFAULT_EPHEMERAL.end()
                        ),
                        "set `return_traffic: { mode: ephemeral, ports: \"lo-hi\" }` explicitly",
                    );
                    LINUX_DEFAULT_EPHEMERAL
                }
                Err(e) => {
                    cx.warn(
                        node.pos,
                        format!(
                            "could not read the ephemeral port range ({e}); using {}-{}",
                            LINUX_DEFAULT_EPHEMERAL.start(),
                            LINUX_DEFAULT_EPHEMERAL.end()
                        ),
                        "set `return_traffic: { mode: ephemeral, ports: \"lo-hi\" }` explicitly",
                    );
                    LINUX_DEFAULT_EPHEMERAL
                }
            };
            Some(ReturnTraffic::Ephemeral { ports })
        }
    }
}

pub(super) fn decode_sets(cx: &mut Cx, node: &Node, doc: &mut Document, empty_ok: bool) {
    let Some(entries) = map_entries(cx, node, "`sets`") else {
        return;
    };
    for (name, pos, value) in entries {
        if !is_set_name(name) {
            cx.error(
                pos,
                format!("`{name}` is not a valid set name"),
                "set names start with a letter and use letters, digits, `-` and `_`",
            );
            continue;
        }
        let what: Rc<str> = format!("set `{name}`").into();
        let Some(items) = list(cx, value, &what) else {
            continue;
        };
        if items.is_empty() && !empty_ok {
            cx.error(
                value.pos,
                format!("set `{name}` is empty"),
                "add CIDRs, or set `allow_empty: true` at the top level if an empty set is intended",
            );
        }
        let mut entries = Vec::new();
        let entry_what = format!("an entry of {what}");
        for item in items {
            let Some((text, _)) = scalar(cx, item, &entry_what, "a CIDR") else {
                continue;
            };
            if is_set_name(text) {
                cx.error(
                    item.pos,
                    format!("set `{name}` refers to `{text}`, but sets cannot contain other sets"),
                    "list the CIDRs here, or name both sets in the rule's `from`",
                );
                continue;
            }
            if let Some(net) = cidr_node(cx, item, text, doc.allow_any_source) {
                entries.push((net, item.pos));
                doc.cidrs.push((net, item.pos, Rc::clone(&what)));
            }
        }
        doc.sets.push(SetDef {
            name: name.to_string(),
            pos,
            entries,
        });
    }
}
