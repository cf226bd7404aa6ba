//! Node tree → [`Policy`]: schema decoding, semantic checks, capacity checks and warnings.
//!
//! Every check records an [`Issue`] at the node it is about and carries on, so one run
//! reports every error of the file. A value that failed to decode is left out (its rule is
//! dropped from the policy being built), which keeps later checks from piling follow-up
//! errors on it.

use std::{collections::BTreeMap, net::IpAddr, ops::RangeInclusive, rc::Rc};

// foldhash: the per-entry sets here see every CIDR of the file (100k+); SipHash was a
// tenth of the front end's time on such files.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use filter_common::RULE_NAME_LEN;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    interfaces::{decode_interfaces, decode_rule_interfaces, InterfaceEntry},
    yaml::{self, Node, NodeKind, Pos},
    Issue, LoadOptions, Severity,
};
use crate::compiler::{self, Bits, CompileError, Tables, MAX_POLICY_RULES};
use crate::policy::{
    DefaultAction, Essentials, FlowTable, Fragments, Mode, Policy, PrefixCapacity, Protocol,
    ReturnTraffic, Rule, RuleKind,
};

/// The only config version this loader reads.
pub(crate) const VERSION: u64 = 1;
/// Linux's default `ip_local_port_range`, used when the system cannot be read.
const LINUX_DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;
/// Overlap (and unused-set) warnings shown individually before they are summarised.
const MAX_OVERLAP_WARNINGS: usize = 20;

const TOP_KEYS: &[&str] = &[
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
const RULE_KEYS: &[&str] = &[
    "name",
    "from",
    "protocol",
    "ports",
    "types",
    "action",
    "interfaces",
    "description",
];
const ESSENTIAL_KEYS: &[&str] = &["arp", "neighbor_discovery", "icmp_errors"];
const RETURN_KEYS: &[&str] = &["mode", "ports", "timeouts", "capacity"];
const CAPACITY_KEYS: &[&str] = &["ipv4_prefixes", "ipv6_prefixes"];
const TIMEOUT_KEYS: &[&str] = &["tcp", "tcp_closing", "udp", "icmp"];
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

/// The address family whose every address `sources` cover together (`0.0.0.0/1` and
/// `128.0.0.0/1` are "from anywhere" as much as `0.0.0.0/0`), if any.
fn whole_family(sources: &[IpNet]) -> Option<&'static str> {
    for (family, bits) in [("IPv4", 32u32), ("IPv6", 128)] {
        let in_family = || {
            sources
                .iter()
                .filter(move |n| u32::from(n.max_prefix_len()) == bits)
        };
        // Sizes summed (overlaps count twice) reach the family's size only if the union can:
        // the aggregation below runs only for such lists, never for large ordinary ones.
        let total: u128 = in_family()
            .map(|n| match bits - u32::from(n.prefix_len()) {
                128 => u128::MAX,
                host_bits => 1u128 << host_bits,
            })
            .fold(0u128, u128::saturating_add);
        let size = if bits == 128 {
            u128::MAX
        } else {
            1u128 << bits
        };
        if total >= size {
            let nets: Vec<IpNet> = in_family().copied().collect();
            if IpNet::aggregate(&nets).iter().any(|n| n.prefix_len() == 0) {
                return Some(family);
            }
        }
    }
    None
}

/// Refuse a rule whose sources together cover a whole address family unless the file says
/// `allow_any_source: true` (a single `/0` is refused where it is written).
fn any_source_allowed(cx: &mut Cx, r: &RawRule, sources: &[IpNet], allowed: bool) -> bool {
    if allowed {
        return true;
    }
    match whole_family(sources) {
        None => true,
        Some(family) => {
            cx.error(
                r.name_pos,
                format!(
                    "the sources of rule `{}` together cover every {family} address",
                    r.name
                ),
                "list the real source ranges, or set `allow_any_source: true` at the top level to \
                 allow traffic from anywhere",
            );
            false
        }
    }
}

/// Characters that print as nothing or reorder what follows (Unicode format characters and
/// line/paragraph separators): `web` and `web` + U+200B would be two rules that look alike.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Most entries a `ports` or `types` list may have: one per port.
const MAX_KEY_ITEMS: usize = 65536;

/// Longest flow timeout: a week, in seconds.
const MAX_FLOW_TIMEOUT: u64 = 7 * 24 * 3600;
/// Flow table capacity bounds (the map is preallocated: ~100 bytes an entry).
const MIN_FLOW_CAPACITY: u64 = 64;
const MAX_FLOW_CAPACITY: u64 = 1 << 20;

/// Issue sink.
pub(super) struct Cx<'a> {
    issues: &'a mut Vec<Issue>,
}

impl Cx<'_> {
    pub(super) fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.issues.push(Issue::error(pos, message, Some(hint)));
    }

    pub(super) fn warn(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.issues.push(Issue::warning(pos, message, Some(hint)));
    }

    fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Error)
    }
}

/// Entry point: text → (policy, stats), with every issue recorded.
pub(super) fn load(
    text: &str,
    opts: &LoadOptions,
    issues: &mut Vec<Issue>,
) -> Option<(Policy, Tables, Sets)> {
    let root = yaml::parse(text, issues);
    if issues.iter().any(|i| i.severity == Severity::Error) {
        return None;
    }
    let mut cx = Cx { issues };
    let Some(root) = root.filter(|r| !r.is_null()) else {
        cx.error(
            Pos { line: 1, column: 1 },
            "the config file is empty",
            "start with `version: 1`",
        );
        return None;
    };
    let doc = decode_document(&mut cx, &root, opts)?;
    let resolved = resolve(&mut cx, &doc);
    let policy = Policy {
        mode: doc.mode,
        default: doc.default,
        essentials: doc.essentials,
        ipv4_options_allow: doc.ipv4_options_allow,
        unknown_ethertypes_pass: doc.unknown_ethertypes_pass,
        return_traffic: doc.return_traffic.clone(),
        flows: doc.flows,
        capacity: doc.capacity,
        fragments: doc.fragments,
        samples_per_sec: doc.samples_per_sec,
        rules: resolved.iter().map(|r| r.rule.clone()).collect(),
        acknowledge_failsafe_change: doc.acknowledge_failsafe_change,
        interfaces: doc
            .interfaces
            .iter()
            .map(|(name, i)| (name.clone(), i.settings))
            .collect(),
        rollout: doc.rollout.clone(),
    };
    if cx.has_errors() {
        return None;
    }
    let compiled = match &opts.previous {
        Some(previous) => compiler::compile_after(&policy, &opts.slots, previous.previous()),
        None => compiler::compile(&policy, &opts.slots),
    };
    let tables = match compiled {
        Ok(t) => t,
        Err(e) => {
            let pos = doc.rules_pos.unwrap_or(doc.root_pos);
            cx.error(pos, e.to_string(), compile_hint(&e));
            return None;
        }
    };
    warn_overlaps(&mut cx, &doc);
    warn_shadowed(&mut cx, &policy, &resolved, &tables);
    warn_lockout(&mut cx, &doc, &policy);
    let sets = doc
        .sets
        .iter()
        .map(|set| {
            let nets = set.entries.iter().map(|(net, _)| *net).collect();
            (set.name.clone(), nets)
        })
        .collect();
    Some((policy, tables, sets))
}

/// The file's named sets: name → prefixes as listed.
pub type Sets = BTreeMap<String, Vec<IpNet>>;

fn compile_hint(e: &CompileError) -> &'static str {
    match e {
        CompileError::TooManyClasses { .. } => {
            "every distinct combination of rules covering a prefix needs a class; group CIDRs \
             into sets that share the same rules"
        }
        CompileError::TooManySegments { .. } => {
            "every distinct combination of rules covering a run of ports needs a segment; merge \
             port lists or reuse the same port list across rules"
        }
        CompileError::TooManyV4Prefixes { .. } | CompileError::TooManyV6Prefixes { .. } => {
            "aggregate adjacent CIDRs, remove unneeded ones, or raise `capacity`"
        }
        CompileError::TableTooLarge { .. } => {
            "clustered prefixes (many long prefixes inside the same short ones) need more table              per prefix; raise `capacity` for that family, or aggregate"
        }
        CompileError::TooManyProfiles { .. } => {
            "interfaces whose rules' `interfaces` lists give them the same set of rules share a \
             profile; give interfaces that should behave alike the same lists"
        }
        _ => "this is a bug in the config checks; please report it",
    }
}

// ---------------------------------------------------------------------------------------
// Decoded document
// ---------------------------------------------------------------------------------------

struct Document {
    root_pos: Pos,
    mode: Mode,
    default: DefaultAction,
    allow_empty: bool,
    allow_any_source: bool,
    acknowledge_failsafe_change: bool,
    essentials: Essentials,
    return_traffic: ReturnTraffic,
    flows: FlowTable,
    capacity: PrefixCapacity,
    fragments: Fragments,
    ipv4_options_allow: bool,
    unknown_ethertypes_pass: bool,
    samples_per_sec: u32,
    sets: Vec<SetDef>,
    rules: Vec<RawRule>,
    rules_pos: Option<Pos>,
    failsafe_pos: Option<Pos>,
    /// Every CIDR written in the file: (prefix, position, owner) for overlap warnings. The
    /// owner is shared: a set of 100k entries names itself once, not 100k times.
    cidrs: Vec<(IpNet, Pos, Rc<str>)>,
    /// `rollout:`, when the file makes its changes confirmed ones.
    rollout: Option<crate::policy::Rollout>,
    interfaces: BTreeMap<String, InterfaceEntry>,
}

impl Document {
    /// Where the default verdict is drop: `Some(None)` for the file's own `default` (every
    /// interface not named under `interfaces:`), `Some(Some(name))` when only interfaces
    /// that override it drop, `None` when the default is pass everywhere.
    fn default_drop_on(&self) -> Option<Option<&str>> {
        if self.default == DefaultAction::Drop {
            return Some(None);
        }
        self.interfaces
            .iter()
            .find(|(_, i)| i.settings.default == Some(DefaultAction::Drop))
            .map(|(name, _)| Some(name.as_str()))
    }
}

struct SetDef {
    name: String,
    pos: Pos,
    entries: Vec<(IpNet, Pos)>,
}

enum FromItem {
    Cidr(IpNet, Pos),
    Set(String, Pos),
}

struct RawRule {
    name: String,
    name_pos: Pos,
    kind: RuleKind,
    from: Vec<FromItem>,
    protocol: Protocol,
    keys: Vec<RangeInclusive<u16>>,
    /// Interfaces the rule applies on; empty: every interface.
    interfaces: Vec<String>,
    /// False when a field failed to decode: the rule takes part in name checks only.
    complete: bool,
}

/// A rule of the policy with the positions of its sources.
struct Resolved {
    rule: Rule,
    name_pos: Pos,
    source_pos: Vec<Pos>,
}

// ---------------------------------------------------------------------------------------
// Generic decoding helpers
// ---------------------------------------------------------------------------------------

/// The entries of a mapping whose keys are checked against `allowed`.
pub(super) struct Fields<'n> {
    pub(super) entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.2)
    }

    pub(super) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.1)
    }
}

/// Keys of a mapping: scalar, unique. Returns (key, key position, value) in order.
pub(super) fn map_entries<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
) -> Option<Vec<(&'n str, Pos, &'n Node)>> {
    let NodeKind::Map(entries) = &node.kind else {
        cx.error(
            node.pos,
            format!("expected a mapping for {what}, found {}", node.describe()),
            "write `key: value` pairs, one per line, or `{ key: value, ... }`",
        );
        return None;
    };
    let mut out: Vec<(&'n str, Pos, &'n Node)> = Vec::with_capacity(entries.len());
    // Where each key was first set: a hash lookup, since a mapping may have 100k keys.
    let mut first_at: HashMap<&'n str, Pos> = HashMap::with_capacity(entries.len());
    for (k, v) in entries {
        let NodeKind::Scalar { value: key, .. } = &k.kind else {
            cx.error(
                k.pos,
                format!("keys in {what} must be plain words, found {}", k.describe()),
                "remove the nested structure in front of the `:`",
            );
            continue;
        };
        if let Some(first) = first_at.get(key.as_str()) {
            cx.error(
                k.pos,
                format!("duplicate key `{key}` in {what}"),
                format!("`{key}` is already set at line {first}; remove one of them"),
            );
            continue;
        }
        first_at.insert(key.as_str(), k.pos);
        out.push((key.as_str(), k.pos, v));
    }
    Some(out)
}

pub(super) fn fields<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
    allowed: &[&str],
) -> Option<Fields<'n>> {
    let entries = map_entries(cx, node, what)?;
    let mut kept = Vec::new();
    for (key, pos, value) in entries {
        if allowed.contains(&key) {
            kept.push((key, pos, value));
        } else {
            let hint = match suggest(key, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", allowed.join(", ")),
            };
            cx.error(pos, format!("unknown key `{key}` in {what}"), hint);
        }
    }
    Some(Fields { entries: kept })
}

/// The closest candidate: a prefix match, or within edit distance 2.
fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            // `enforcing` for `enforce`, `neighbor` for `neighbor_discovery`.
            let common = word
                .chars()
                .zip(c.chars())
                .take_while(|(a, b)| a == b)
                .count();
            let prefix = common >= 4 && common + 1 >= c.len().min(word.len());
            (if prefix { 0 } else { edit_distance(word, c) }, c)
        })
        .filter(|&(d, c)| d <= 2 && d < c.len().max(word.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A non-null scalar: (text, plain).
pub(super) fn scalar<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
    expected: &str,
) -> Option<(&'n str, bool)> {
    match &node.kind {
        NodeKind::Scalar { value, plain } if !node.is_null() => Some((value.as_str(), *plain)),
        _ => {
            cx.error(
                node.pos,
                format!("expected {expected} for {what}, found {}", node.describe()),
                format!("write {what} as {expected}"),
            );
            None
        }
    }
}

/// One of a fixed set of words (plain or quoted).
fn word<T: Copy>(cx: &mut Cx, node: &Node, what: &str, choices: &[(&str, T)]) -> Option<T> {
    let names: Vec<String> = choices.iter().map(|c| format!("`{}`", c.0)).collect();
    let expected = names.join(" or ");
    let (text, _) = scalar(cx, node, what, &expected)?;
    if let Some((_, v)) = choices.iter().find(|c| c.0 == text) {
        return Some(*v);
    }
    let hint = match suggest(&text.to_ascii_lowercase(), choices.iter().map(|c| c.0)) {
        Some(s) => format!("did you mean `{s}`? expected {expected}"),
        None => format!("expected {expected}"),
    };
    cx.error(node.pos, format!("invalid {what} `{text}`"), hint);
    None
}

/// `enforce` or `monitor`.
pub(super) fn decode_mode(cx: &mut Cx, node: &Node, what: &str) -> Option<Mode> {
    word(
        cx,
        node,
        what,
        &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
    )
}

/// `drop` or `pass`.
pub(super) fn decode_default(cx: &mut Cx, node: &Node, what: &str) -> Option<DefaultAction> {
    word(
        cx,
        node,
        what,
        &[("drop", DefaultAction::Drop), ("pass", DefaultAction::Pass)],
    )
}

/// `true` or `false`, plain. YAML 1.1 spellings (yes/no/on/off) are rejected.
pub(super) fn boolean(cx: &mut Cx, node: &Node, what: &str) -> Option<bool> {
    let (text, plain) = scalar(cx, node, what, "`true` or `false`")?;
    match (text, plain) {
        ("true", true) => Some(true),
        ("false", true) => Some(false),
        (_, false) => {
            cx.error(
                node.pos,
                format!(
                    "expected `true` or `false` for {what}, found the quoted string \"{text}\""
                ),
                "remove the quotes",
            );
            None
        }
        _ => {
            cx.error(
                node.pos,
                format!("expected `true` or `false` for {what}, found `{text}`"),
                "write `true` or `false` (YAML 1.1 words like yes/no/on/off are not booleans here)",
            );
            None
        }
    }
}

/// A plain decimal integer in `0..=max`.
fn integer(cx: &mut Cx, node: &Node, what: &str, max: u64) -> Option<u64> {
    let (text, plain) = scalar(cx, node, what, "a number")?;
    if plain && text.len() > 1 && text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit())
    {
        cx.error(
            node.pos,
            format!("{what} `{text}` has a leading zero"),
            "write the number without it (some YAML readers take it as octal)",
        );
        return None;
    }
    if !plain || text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        cx.error(
            node.pos,
            format!("expected a number for {what}, found `{text}`"),
            format!("write a plain decimal number from 0 to {max}"),
        );
        return None;
    }
    match text.parse::<u64>() {
        Ok(v) if v <= max => Some(v),
        _ => {
            cx.error(
                node.pos,
                format!("{what} {text} is out of range"),
                format!("{what} is a number from 0 to {max}"),
            );
            None
        }
    }
}

/// A list, or a single scalar standing for a one-element list.
pub(super) fn list<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<Vec<&'n Node>> {
    match &node.kind {
        NodeKind::Seq(items) => Some(items.iter().collect()),
        NodeKind::Scalar { .. } if !node.is_null() => Some(vec![node]),
        _ => {
            cx.error(
                node.pos,
                format!("expected a list for {what}, found {}", node.describe()),
                format!("write {what} as `[a, b]` or as `- ` lines"),
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ports, types and CIDRs
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Port,
    IcmpType,
}

impl KeyKind {
    fn min(self) -> u32 {
        match self {
            KeyKind::Port => 1,
            KeyKind::IcmpType => 0,
        }
    }

    fn max(self) -> u32 {
        match self {
            KeyKind::Port => 65535,
            KeyKind::IcmpType => 255,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            KeyKind::Port => "port",
            KeyKind::IcmpType => "ICMP type",
        }
    }

    fn range_hint(self) -> &'static str {
        match self {
            KeyKind::Port => "ports are 1-65535",
            KeyKind::IcmpType => "ICMP types are 0-255",
        }
    }
}

/// A number `443` or a range `"1025-65535"` (a quoted number is fine too).
fn key_item(cx: &mut Cx, node: &Node, kind: KeyKind) -> Option<RangeInclusive<u16>> {
    let noun = kind.noun();
    let example = match kind {
        KeyKind::Port => "write a port as 443 or a range as \"1025-65535\"",
        KeyKind::IcmpType => "write a type as 8 or a range as \"0-8\"",
    };
    let NodeKind::Scalar { value: text, .. } = &node.kind else {
        cx.error(
            node.pos,
            format!("expected a {noun} or range, found {}", node.describe()),
            example,
        );
        return None;
    };
    let text = text.as_str();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((a, b)) = text.split_once(':') {
        // YAML 1.1 reads an unquoted 10:30 as the base-60 number 630; we never do.
        let hint = if digits(a.trim()) && digits(b.trim()) {
            format!("write a range as \"{}-{}\"", a.trim(), b.trim())
        } else {
            "write a range as \"10-30\"".to_string()
        };
        cx.error(
            node.pos,
            format!("`{text}` is not a {noun} or {noun} range"),
            hint,
        );
        return None;
    }
    let (lo, hi, is_range) = match text.split_once('-') {
        Some((a, b)) if digits(a.trim()) && digits(b.trim()) => (a.trim(), b.trim(), true),
        None if digits(text) => (text, text, false),
        _ => {
            cx.error(
                node.pos,
                format!("`{text}` is not a {noun} number or range"),
                example,
            );
            return None;
        }
    };
    // YAML 1.1 readers take an unquoted `022` as octal 18: never guess which was meant.
    if let Some(zeroed) = [lo, hi]
        .into_iter()
        .find(|s| s.len() > 1 && s.starts_with('0'))
    {
        cx.error(
            node.pos,
            format!("{noun} `{zeroed}` has a leading zero"),
            format!(
                "write {} (some YAML readers take `{zeroed}` as an octal number)",
                match zeroed.trim_start_matches('0') {
                    "" => "0",
                    digits => digits,
                }
            ),
        );
        return None;
    }
    let parse = |s: &str| s.parse::<u32>().unwrap_or(u32::MAX);
    let (a, b) = (parse(lo), parse(hi));
    let shown = |v: u32| {
        if v == u32::MAX {
            "a huge number".to_string()
        } else {
            v.to_string()
        }
    };
    for v in [a, b] {
        if v > kind.max() {
            cx.error(
                node.pos,
                format!("{noun} {} is out of range", shown(v)),
                kind.range_hint(),
            );
            return None;
        }
    }
    if is_range && a > b {
        cx.error(
            node.pos,
            format!("{noun} range {a}-{b} is inverted"),
            format!("write the lower {noun} first: \"{b}-{a}\""),
        );
        return None;
    }
    if a < kind.min() {
        if is_range {
            cx.error(
                node.pos,
                format!("{noun} range {a}-{b} includes port 0"),
                format!("start the range at 1: \"1-{b}\"; port 0 is not a valid destination port"),
            );
        } else {
            cx.error(
                node.pos,
                "port 0 is not a valid destination port",
                kind.range_hint(),
            );
        }
        return None;
    }
    Some(a as u16..=b as u16)
}

fn key_list(
    cx: &mut Cx,
    node: &Node,
    kind: KeyKind,
    what: &str,
) -> Option<Vec<RangeInclusive<u16>>> {
    let items = list(cx, node, what)?;
    if items.is_empty() {
        cx.error(
            node.pos,
            format!("empty {what} list"),
            format!("leave {what} out to cover every {}", kind.noun()),
        );
        return None;
    }
    // There are only so many ports: a longer list repeats itself (a 52 MB one took 11 s
    // and 3.5 GB to accept).
    if items.len() > MAX_KEY_ITEMS {
        cx.error(
            node.pos,
            format!(
                "{what} lists {} entries, more than the {MAX_KEY_ITEMS} {}s there are",
                items.len(),
                kind.noun()
            ),
            format!(
                "write ranges (\"1025-65535\") instead of every {}",
                kind.noun()
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match key_item(cx, item, kind) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then(|| merge_ranges(out))
}

/// Sort and merge overlapping or adjacent ranges.
fn merge_ranges(mut v: Vec<RangeInclusive<u16>>) -> Vec<RangeInclusive<u16>> {
    v.sort_by_key(|r| (*r.start(), *r.end()));
    let mut out: Vec<RangeInclusive<u16>> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut() {
            if u32::from(*r.start()) <= u32::from(*last.end()) + 1 {
                if r.end() > last.end() {
                    *last = *last.start()..=*r.end();
                }
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Whether a `from` item names a set: a letter, then letters, digits, `-`, `_`.
fn is_set_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// Parse a CIDR or a bare address. Errors are (message, hint).
fn parse_cidr(s: &str) -> Result<IpNet, (String, String)> {
    let (addr_s, len_s) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr_s.parse().map_err(|_| {
        let hint = if addr_s.contains('%') {
            "zone indices (`%eth0`) are not allowed in CIDRs".to_string()
        } else if addr_s.split('.').count() == 4
            && addr_s.split('.').any(|o| o.len() > 1 && o.starts_with('0'))
        {
            "remove the leading zeros: some tools read them as octal".to_string()
        } else {
            "write an IPv4 CIDR like 10.0.0.0/24, an IPv6 CIDR like 2001:db8::/64, a bare \
             address, or the name of a set"
                .to_string()
        };
        (format!("`{s}` is not a valid IP address or CIDR"), hint)
    })?;
    let (max, family) = if addr.is_ipv4() {
        (32, "IPv4")
    } else {
        (128, "IPv6")
    };
    let len = match len_s {
        None => max,
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u32>().expect("1-3 digits")
        }
        Some(l) => {
            return Err((
                format!("`/{l}` is not a prefix length"),
                format!("{family} prefix lengths are 0-{max}"),
            ))
        }
    };
    if len > max {
        return Err((
            format!("prefix length /{len} is too long for {family}"),
            format!("{family} prefix lengths are 0-{max}"),
        ));
    }
    let net = IpNet::new(addr, len as u8).expect("length checked");
    if net.trunc() != net {
        return Err((
            format!("{s} has host bits set"),
            format!(
                "did you mean {}? (for the single host write {}/{})",
                net.trunc(),
                addr,
                max
            ),
        ));
    }
    Ok(net)
}

/// The `::ffff:0:0/96` block of IPv4-mapped IPv6 addresses.
fn ipv4_mapped_block() -> Ipv6Net {
    Ipv6Net::new("::ffff:0.0.0.0".parse().expect("literal"), 96).expect("literal")
}

/// Parse a CIDR node and apply the checks every CIDR gets (mapped, any-source).
fn cidr_node(cx: &mut Cx, node: &Node, text: &str, allow_any_source: bool) -> Option<IpNet> {
    let net = match parse_cidr(text) {
        Ok(n) => n,
        Err((msg, hint)) => {
            cx.error(node.pos, msg, hint);
            return None;
        }
    };
    if let IpNet::V6(n) = net {
        if ipv4_mapped_block().contains(&n) {
            let v4 = n.addr().to_ipv4_mapped().expect("inside ::ffff:0:0/96");
            let v4net = Ipv4Net::new(v4, n.prefix_len() - 96).expect("length ≤ 32");
            cx.error(
                node.pos,
                format!("{text} is an IPv4-mapped IPv6 prefix"),
                format!(
                    "write the IPv4 CIDR {v4net} instead; IPv4-mapped IPv6 sources never match \
                     IPv4 rules"
                ),
            );
            return None;
        }
    }
    if net.prefix_len() == 0 && !allow_any_source {
        let family = if net.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        cx.error(
            node.pos,
            format!("{text} matches every {family} source"),
            "list the real source ranges, or set `allow_any_source: true` at the top level to \
             acknowledge",
        );
        return None;
    }
    Some(net)
}

// ---------------------------------------------------------------------------------------
// Document
// ---------------------------------------------------------------------------------------

fn decode_document(cx: &mut Cx, root: &Node, opts: &LoadOptions) -> Option<Document> {
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
    if let Some(n) = f.get("failsafe") {
        decode_rule_list(cx, n, &mut doc, RuleKind::Failsafe, empty_ok);
    }
    if let Some(n) = f.get("rules") {
        decode_rule_list(cx, n, &mut doc, RuleKind::Allow, empty_ok);
    }
    Some(doc)
}

/// `capacity.ipv4_prefixes` / `.ipv6_prefixes`.
fn decode_capacity(cx: &mut Cx, node: &Node, capacity: &mut PrefixCapacity) {
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
fn decode_flow_table(cx: &mut Cx, f: &Fields, flows: &mut FlowTable) {
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

fn decode_return_traffic(
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

fn decode_sets(cx: &mut Cx, node: &Node, doc: &mut Document, empty_ok: bool) {
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

fn decode_rule_list(
    cx: &mut Cx,
    node: &Node,
    doc: &mut Document,
    list_kind: RuleKind,
    empty_ok: bool,
) {
    let section = if list_kind == RuleKind::Failsafe {
        "`failsafe`"
    } else {
        "`rules`"
    };
    let items = match &node.kind {
        NodeKind::Seq(items) => items,
        _ if node.is_null() => return,
        _ => {
            cx.error(
                node.pos,
                format!(
                    "expected a list of rules for {section}, found {}",
                    node.describe()
                ),
                "write each rule as a `- name: ...` entry",
            );
            return;
        }
    };
    for item in items {
        if let Some(rule) = decode_rule(cx, item, doc, list_kind, empty_ok) {
            doc.rules.push(rule);
        }
    }
}

fn decode_rule(
    cx: &mut Cx,
    node: &Node,
    doc: &mut Document,
    list_kind: RuleKind,
    empty_ok: bool,
) -> Option<RawRule> {
    let what = if list_kind == RuleKind::Failsafe {
        "a failsafe rule"
    } else {
        "a rule"
    };
    // `action` is accepted as a key in both lists so that a failsafe rule with an action
    // gets a dedicated message instead of "unknown key".
    let f = fields(cx, node, what, RULE_KEYS)?;
    decode_rule_fields(cx, node, &f, doc, list_kind, empty_ok)
}

fn decode_rule_fields(
    cx: &mut Cx,
    node: &Node,
    f: &Fields<'_>,
    doc: &mut Document,
    list_kind: RuleKind,
    empty_ok: bool,
) -> Option<RawRule> {
    let mut complete = true;
    let (name, name_pos) = match f.get("name") {
        None => {
            cx.error(
                node.pos,
                "rule has no `name`",
                "give every rule a unique `name`; counters are keyed by it",
            );
            return None;
        }
        Some(n) => {
            let (text, _) = scalar(cx, n, "`name`", "a string")?;
            (text.to_string(), n.pos)
        }
    };
    if name.trim().is_empty() {
        cx.error(
            name_pos,
            "rule name is empty",
            "give every rule a unique, non-empty `name`; counters are keyed by it",
        );
        complete = false;
    } else if name.len() > RULE_NAME_LEN - 1 {
        cx.error(
            name_pos,
            format!(
                "rule name is {} bytes long; the limit is {}",
                name.len(),
                RULE_NAME_LEN - 1
            ),
            "shorten the name",
        );
        complete = false;
    } else if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        cx.error(
            name_pos,
            "rule name contains control or invisible characters (bidi overrides, zero-width or separator characters): two names could print the same",
            "use printable characters only",
        );
        complete = false;
    }
    let owner: Rc<str> = format!("rule `{name}`").into();

    let kind = match (list_kind, f.get("action")) {
        (RuleKind::Failsafe, Some(_)) => {
            cx.error(
                f.key_pos("action").expect("present"),
                "failsafe rules always allow; `action` is not accepted here",
                "remove `action`, or move the rule to `rules:` to deny traffic",
            );
            complete = false;
            RuleKind::Failsafe
        }
        (RuleKind::Failsafe, None) => RuleKind::Failsafe,
        (_, None) => RuleKind::Allow,
        (_, Some(n)) => match word(
            cx,
            n,
            "`action`",
            &[("allow", RuleKind::Allow), ("deny", RuleKind::Deny)],
        ) {
            Some(k) => k,
            None => {
                complete = false;
                RuleKind::Allow
            }
        },
    };

    if let Some(n) = f.get("description") {
        if scalar(cx, n, "`description`", "a string").is_none() {
            complete = false;
        }
    }

    let mut from = Vec::new();
    let interfaces = match f.get("interfaces") {
        None => Vec::new(),
        Some(n) => decode_rule_interfaces(cx, n, &name).unwrap_or_else(|| {
            complete = false;
            Vec::new()
        }),
    };
    match f.get("from") {
        None => {
            cx.error(
                node.pos,
                format!("{owner} has no `from`"),
                "list the sources: set names and/or CIDRs, e.g. `from: [control-plane]`",
            );
            complete = false;
        }
        Some(n) => match list(cx, n, "`from`") {
            None => complete = false,
            Some(items) => {
                if items.is_empty() && !empty_ok {
                    cx.error(
                        n.pos,
                        format!("{owner} has an empty `from`: it matches no source"),
                        "list its sources, or set `allow_empty: true` at the top level if this \
                         is intended",
                    );
                    complete = false;
                }
                for item in items {
                    let Some((text, _)) =
                        scalar(cx, item, "an entry of `from`", "a set name or a CIDR")
                    else {
                        complete = false;
                        continue;
                    };
                    if is_set_name(text) {
                        from.push(FromItem::Set(text.to_string(), item.pos));
                    } else if let Some(net) = cidr_node(cx, item, text, doc.allow_any_source) {
                        from.push(FromItem::Cidr(net, item.pos));
                        doc.cidrs.push((net, item.pos, Rc::clone(&owner)));
                    } else {
                        complete = false;
                    }
                }
            }
        },
    }

    let protocol = match f.get("protocol") {
        None => {
            cx.error(
                node.pos,
                format!("{owner} has no `protocol`"),
                "add `protocol: tcp`, `udp`, `icmp`, `icmpv6` or `any`",
            );
            None
        }
        Some(n) => word(
            cx,
            n,
            "`protocol`",
            &[
                ("tcp", Protocol::Tcp),
                ("udp", Protocol::Udp),
                ("icmp", Protocol::Icmp),
                ("icmpv6", Protocol::Icmpv6),
                ("any", Protocol::Any),
            ],
        ),
    };
    let mut keys = Vec::new();
    if let Some(protocol) = protocol {
        let pname = match protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Any => "any",
        };
        let ports_ok = matches!(protocol, Protocol::Tcp | Protocol::Udp);
        let types_ok = matches!(protocol, Protocol::Icmp | Protocol::Icmpv6);
        if let Some(n) = f.get("ports") {
            if ports_ok {
                match key_list(cx, n, KeyKind::Port, "`ports`") {
                    Some(k) => keys = k,
                    None => complete = false,
                }
            } else {
                let hint = if types_ok {
                    "use `types` for ICMP message types"
                } else {
                    "protocol `any` covers every port; remove `ports`, or use `tcp` or `udp`"
                };
                cx.error(
                    f.key_pos("ports").unwrap_or(n.pos),
                    format!("`ports` does not apply to protocol `{pname}`"),
                    hint,
                );
                complete = false;
            }
        }
        if let Some(n) = f.get("types") {
            if types_ok {
                match key_list(cx, n, KeyKind::IcmpType, "`types`") {
                    Some(k) => keys = k,
                    None => complete = false,
                }
            } else {
                let hint = if ports_ok {
                    "use `ports` for TCP/UDP destination ports"
                } else {
                    "protocol `any` covers every ICMP type; remove `types`, or use `icmp` or `icmpv6`"
                };
                cx.error(
                    f.key_pos("types").unwrap_or(n.pos),
                    format!("`types` does not apply to protocol `{pname}`"),
                    hint,
                );
                complete = false;
            }
        }
    } else {
        complete = false;
    }
    Some(RawRule {
        name,
        name_pos,
        kind,
        from,
        protocol: protocol.unwrap_or(Protocol::Any),
        keys,
        interfaces,
        complete,
    })
}

// ---------------------------------------------------------------------------------------
// Cross-entry checks
// ---------------------------------------------------------------------------------------

/// Prefixes in order of first occurrence, with their positions.
fn unique_sources(items: impl ExactSizeIterator<Item = (IpNet, Pos)>) -> (Vec<IpNet>, Vec<Pos>) {
    let mut seen: HashSet<IpNet> = HashSet::with_capacity(items.len());
    items.filter(|(net, _)| seen.insert(*net)).unzip()
}

fn resolved(r: &RawRule, sources: Vec<IpNet>, source_pos: Vec<Pos>) -> Resolved {
    Resolved {
        rule: Rule {
            name: r.name.clone(),
            kind: r.kind,
            sources,
            protocol: r.protocol,
            keys: r.keys.clone(),
            interfaces: r.interfaces.clone(),
        },
        name_pos: r.name_pos,
        source_pos,
    }
}

fn resolve(cx: &mut Cx, doc: &Document) -> Vec<Resolved> {
    let sets: HashMap<&str, &SetDef> = doc.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut used_sets: HashSet<&str> = HashSet::new();

    // Rule names: unique across failsafe and rules.
    let mut names: HashMap<&str, Pos> = HashMap::new();
    let mut dup = vec![false; doc.rules.len()];
    for (i, r) in doc.rules.iter().enumerate() {
        if let Some(first) = names.get(r.name.as_str()) {
            cx.error(
                r.name_pos,
                format!("duplicate rule name `{}`", r.name),
                format!(
                    "first used at line {first}; rule names must be unique across `failsafe` and \
                     `rules`"
                ),
            );
            dup[i] = true;
        } else {
            names.insert(&r.name, r.name_pos);
        }
    }

    // Capacity: rules.
    if doc.rules.len() > MAX_POLICY_RULES {
        let mut by_pos: Vec<&RawRule> = doc.rules.iter().collect();
        by_pos.sort_by_key(|r| r.name_pos);
        cx.error(
            by_pos[MAX_POLICY_RULES].name_pos,
            format!(
                "too many rules: {} in the file, the kernel tables hold {MAX_POLICY_RULES}",
                doc.rules.len()
            ),
            "merge rules that share sources and protocol",
        );
    }

    // A rule's sources, first occurrence kept. Rules whose `from` is one set (the usual
    // shape of big files, often several rules on one set) share that set's deduplication.
    let mut set_sources: HashMap<&str, (Vec<IpNet>, Vec<Pos>)> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in doc.rules.iter().enumerate() {
        if let [FromItem::Set(name, _)] = r.from.as_slice() {
            if let Some(set) = sets.get(name.as_str()) {
                used_sets.insert(&set.name);
                let (sources, source_pos) = set_sources
                    .entry(set.name.as_str())
                    .or_insert_with(|| unique_sources(set.entries.iter().copied()))
                    .clone();
                if r.complete
                    && !dup[i]
                    && any_source_allowed(cx, r, &sources, doc.allow_any_source)
                {
                    out.push(resolved(r, sources, source_pos));
                }
                continue;
            }
        }
        let mut seen_sets: HashSet<&str> = HashSet::new();
        let mut ok = r.complete && !dup[i];
        let mut items: Vec<(IpNet, Pos)> = Vec::new();
        let mut add = |net: IpNet, pos: Pos| items.push((net, pos));
        for item in &r.from {
            match item {
                FromItem::Cidr(net, pos) => add(*net, *pos),
                FromItem::Set(name, pos) => match sets.get(name.as_str()) {
                    Some(set) => {
                        used_sets.insert(&set.name);
                        if !seen_sets.insert(&set.name) {
                            cx.warn(
                                *pos,
                                format!(
                                    "set `{name}` is listed twice in `from` of rule `{}`",
                                    r.name
                                ),
                                "remove the repetition",
                            );
                        }
                        for (net, p) in &set.entries {
                            add(*net, *p);
                        }
                    }
                    None => {
                        let hint = match suggest(name, doc.sets.iter().map(|s| s.name.as_str())) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if doc.sets.is_empty() => {
                                format!("define it under `sets:`, e.g. `sets: {{ {name}: [10.0.0.0/24] }}`")
                            }
                            None => format!(
                                "define it under `sets:`; known sets: {}",
                                doc.sets
                                    .iter()
                                    .map(|s| s.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        cx.error(*pos, format!("unknown set `{name}`"), hint);
                        ok = false;
                    }
                },
            }
        }
        if ok {
            let (sources, source_pos) = unique_sources(items.into_iter());
            if any_source_allowed(cx, r, &sources, doc.allow_any_source) {
                out.push(resolved(r, sources, source_pos));
            }
        }
    }

    // Shown one by one up to a point, then summed up: 100,000 unused sets once meant
    // 100,000 log lines on every reload.
    let unused: Vec<&SetDef> = doc
        .sets
        .iter()
        .filter(|set| !used_sets.contains(set.name.as_str()))
        .collect();
    for set in unused.iter().take(MAX_OVERLAP_WARNINGS) {
        cx.warn(
            set.pos,
            format!("set `{}` is not used by any rule", set.name),
            "remove it, or name it in a rule's `from`",
        );
    }
    if let Some(first_unshown) = unused.get(MAX_OVERLAP_WARNINGS) {
        cx.warn(
            first_unshown.pos,
            format!(
                "{} more sets are not used by any rule (from here on)",
                unused.len() - MAX_OVERLAP_WARNINGS
            ),
            "remove them, or name them in rules' `from`",
        );
    }

    // Empty allow-list.
    let drop_on = doc.default_drop_on();
    if let Some(drop_on) = drop_on.filter(|_| {
        !doc.allow_empty
            && !doc
                .rules
                .iter()
                .any(|r| matches!(r.kind, RuleKind::Allow | RuleKind::Failsafe))
    }) {
        let (pos, whose) = match drop_on {
            None => (doc.rules_pos.unwrap_or(doc.root_pos), String::new()),
            Some(name) => {
                let i = &doc.interfaces[name];
                (
                    i.default_pos.unwrap_or(i.pos),
                    format!(" on interface `{name}`"),
                )
            }
        };
        cx.error(
            pos,
            format!(
                "no allow or failsafe rule, and the default is drop{whose}: only essentials and \
                 return traffic would pass"
            ),
            "add allow rules, or set `allow_empty: true` at the top level to acknowledge",
        );
    }

    // Capacity: distinct prefixes per family, counted in file order. Every file within
    // capacity even before duplicates are merged (nearly all) skips the exact count.
    let written = |v4: bool| {
        out.iter()
            .flat_map(|r| &r.rule.sources)
            .filter(|n| matches!(n, IpNet::V4(_)) == v4)
            .count()
    };
    if written(true) <= doc.capacity.ipv4 as usize && written(false) <= doc.capacity.ipv6 as usize {
        return out;
    }
    let mut order: Vec<(Pos, IpNet)> = out
        .iter()
        .flat_map(|r| {
            r.source_pos
                .iter()
                .copied()
                .zip(r.rule.sources.iter().copied())
        })
        .collect();
    order.sort_by_key(|(p, _)| *p);
    let mut v4: HashSet<IpNet> = HashSet::new();
    let mut v6: HashSet<IpNet> = HashSet::new();
    let (mut v4_reported, mut v6_reported) = (false, false);
    for (pos, net) in order {
        let (set, max, family, key, reported) = match net {
            IpNet::V4(_) => (&mut v4, doc.capacity.ipv4, "IPv4", "ipv4", &mut v4_reported),
            IpNet::V6(_) => (&mut v6, doc.capacity.ipv6, "IPv6", "ipv6", &mut v6_reported),
        };
        if set.insert(net) && set.len() > max as usize && !*reported {
            *reported = true;
            cx.error(
                pos,
                format!(
                    "too many {family} prefixes: this is number {}, the kernel table holds {max}",
                    max + 1
                ),
                format!("aggregate adjacent CIDRs, remove unneeded ones, or raise `capacity.{key}_prefixes`"),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Warnings
// ---------------------------------------------------------------------------------------

fn family_bits(net: &IpNet) -> (u8, u128, u8, u32) {
    match net {
        IpNet::V4(n) => (4, u128::from(u32::from(n.addr())), n.prefix_len(), 32),
        IpNet::V6(n) => (6, u128::from(n.addr()), n.prefix_len(), 128),
    }
}

fn warn_overlaps(cx: &mut Cx, doc: &Document) {
    let mut defs: Vec<(u8, u128, u8, Pos, usize)> = doc
        .cidrs
        .iter()
        .enumerate()
        .map(|(i, (net, pos, _))| {
            let (f, a, l, _) = family_bits(net);
            (f, a, l, *pos, i)
        })
        .collect();
    defs.sort_unstable();
    let contains = |outer: &(u8, u128, u8, Pos, usize), inner: &(u8, u128, u8, Pos, usize)| {
        let width = if outer.0 == 4 { 32 } else { 128 };
        outer.0 == inner.0
            && outer.2 <= inner.2
            && (outer.2 == 0 || (outer.1 ^ inner.1) >> (width - u32::from(outer.2)) == 0)
    };
    let mut stack: Vec<(u8, u128, u8, Pos, usize)> = Vec::new();
    let mut shown = 0usize;
    let mut hidden = 0usize;
    let mut last_hidden_pos = None;
    for d in defs {
        while let Some(top) = stack.last() {
            if contains(top, &d) {
                break;
            }
            stack.pop();
        }
        if let Some(top) = stack.last() {
            let (net, pos, owner) = &doc.cidrs[d.4];
            let (onet, opos, oowner) = &doc.cidrs[top.4];
            let equal = net == onet;
            // The same prefix in two places is only worth a note within one list; across
            // sets and rules it changes nothing. A strictly nested prefix always is: the
            // union semantics make the narrower one inherit the wider one's rules. Messages
            // are built only for the notes shown: a list of 100k nested prefixes must not
            // format 100k of them.
            if !equal || owner == oowner {
                if shown < MAX_OVERLAP_WARNINGS {
                    shown += 1;
                    let (message, hint) = if equal {
                        (
                            format!("{net} is listed twice in {owner} (first at line {opos})"),
                            "remove the repetition",
                        )
                    } else {
                        (
                            format!("{net} ({owner}) overlaps {onet} ({oowner}, line {opos})"),
                            "overlapping sources are a union: an address in both gets the rules of both",
                        )
                    };
                    cx.warn(*pos, message, hint);
                } else {
                    hidden += 1;
                    last_hidden_pos = Some(*pos);
                }
            }
            if equal {
                // Keep the first definition on the stack as the one later prefixes cite.
                continue;
            }
        }
        stack.push(d);
    }
    if let Some(pos) = last_hidden_pos {
        cx.warn(
            pos,
            format!("{hidden} more overlapping CIDRs not shown"),
            "overlapping sources are a union: an address in both gets the rules of both",
        );
    }
}

/// Whether `s` applies on every interface `r` applies on.
fn applies_wherever(s: &Rule, r: &Rule) -> bool {
    s.interfaces.is_empty()
        || (!r.interfaces.is_empty() && r.interfaces.iter().all(|i| s.interfaces.contains(i)))
}

/// The keys (ports or ICMP types) a rule covers, merged; every key when it lists none.
fn covered_keys(r: &Rule) -> Vec<RangeInclusive<u16>> {
    let max: u16 = match r.protocol {
        Protocol::Tcp | Protocol::Udp => 65535,
        _ => 255,
    };
    if r.keys.is_empty() {
        vec![0..=max]
    } else {
        merge_ranges(r.keys.clone())
    }
}

/// Whether `s` covers every (kind, key) that `r` covers, given their [`covered_keys`].
fn keys_cover(
    s: &Rule,
    s_keys: &[RangeInclusive<u16>],
    r: &Rule,
    r_keys: &[RangeInclusive<u16>],
) -> bool {
    if s.protocol == Protocol::Any {
        return true;
    }
    if s.protocol != r.protocol {
        return false;
    }
    r_keys.iter().all(|rr| {
        s_keys
            .iter()
            .any(|sr| sr.start() <= rr.start() && rr.end() <= sr.end())
    })
}

fn warn_shadowed(cx: &mut Cx, policy: &Policy, resolved: &[Resolved], tables: &Tables) {
    // Precedence index of each policy rule.
    let mut prec_of = vec![0usize; policy.rules.len()];
    for (p, &i) in tables.precedence.iter().enumerate() {
        prec_of[i] = p;
    }
    let keys: Vec<_> = policy.rules.iter().map(covered_keys).collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        // Earlier rules that cover this one's keys wherever it applies: cheap per pair, and
        // usually none, so the scan over the rule's sources (100k in a big set) is rare.
        let mut candidates = Bits::default();
        for (p, &j) in tables.precedence[..prec_of[i]].iter().enumerate() {
            let earlier = &policy.rules[j];
            if keys_cover(earlier, &keys[j], rule, &keys[i]) && applies_wherever(earlier, rule) {
                candidates[p / 64] |= 1 << (p % 64);
            }
        }
        if candidates.iter().all(|&w| w == 0) {
            continue;
        }
        let Some(bits) = tables.candidates_covering_all_sources(rule, candidates) else {
            continue;
        };
        // The first in precedence order.
        let shadow = (0..prec_of[i])
            .find(|&p| bits[p / 64] & (1 << (p % 64)) != 0)
            .map(|p| tables.precedence[p]);
        if let Some(j) = shadow {
            let by = &policy.rules[j];
            cx.warn(
                resolved[i].name_pos,
                format!(
                    "rule `{}` is shadowed by `{}` (line {}): every packet it covers is decided \
                     by `{}` first",
                    rule.name, by.name, resolved[j].name_pos, by.name
                ),
                format!("remove `{}`, or narrow `{}`", rule.name, by.name),
            );
        }
    }
}

fn warn_lockout(cx: &mut Cx, doc: &Document, policy: &Policy) {
    // Enforcing with default drop: on interfaces the file does not name (`None`), or on
    // one it names.
    let strict = |ifname: Option<&str>| {
        policy.mode_on(ifname) == Mode::Enforce && policy.default_on(ifname) == DefaultAction::Drop
    };
    // A failsafe rule that lets SSH in on that interface.
    let ssh_on = |ifname: Option<&str>| {
        policy.rules.iter().any(|r| {
            r.kind == RuleKind::Failsafe
                && r.applies_on(ifname)
                && !r.sources.is_empty()
                && match r.protocol {
                    Protocol::Any => true,
                    Protocol::Tcp => r.keys.is_empty() || r.keys.iter().any(|k| k.contains(&22)),
                    _ => false,
                }
        })
    };
    let at_risk = std::iter::once(None)
        .chain(policy.named_interfaces().into_iter().map(Some))
        .find(|i| strict(*i) && !ssh_on(*i));
    if let Some(first) = at_risk {
        cx.warn(
            doc.failsafe_pos.unwrap_or(doc.root_pos),
            format!(
                "lockout risk: no failsafe rule allows SSH (tcp 22) while enforcing with default \
                 drop{}",
                first
                    .map(|i| format!(" on interface `{i}`"))
                    .unwrap_or_default()
            ),
            "add a failsafe rule such as `- { name: admin-ssh, from: [<admin CIDR>], protocol: \
             tcp, ports: [22] }`",
        );
    }
}
