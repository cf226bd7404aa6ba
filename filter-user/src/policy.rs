//! The validated rule set: what a config file means once every check has passed. The YAML
//! front end ([`crate::config`]) produces it; the compiler ([`crate::compiler`]) turns it into
//! kernel tables and the reference model ([`crate::model`]) judges packets against it
//! directly. Keeping this type free of YAML and of kernel layout is what lets the model stay
//! independent of the compiler.

use std::{collections::BTreeMap, ops::RangeInclusive};

use ipnet::IpNet;

/// Enforce drops, or only count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Drops are enforced.
    #[default]
    Enforce,
    /// Dry run: everything passes; would-drops are counted by reason and rule.
    Monitor,
}

impl Mode {
    /// The word the config file uses.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// Verdict for IP traffic that no rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// Drop (the default).
    #[default]
    Drop,
    /// Pass.
    Pass,
}

impl DefaultAction {
    /// The word the config file uses.
    pub fn name(self) -> &'static str {
        match self {
            DefaultAction::Drop => "drop",
            DefaultAction::Pass => "pass",
        }
    }
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    /// Always-allowed lockout protection; evaluated before deny and allow rules.
    Failsafe,
    /// Drop; evaluated before allow rules.
    Deny,
    /// Pass.
    Allow,
}

impl RuleKind {
    /// The word the rule file uses (`failsafe`, `deny`, `allow`).
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Failsafe => "failsafe",
            RuleKind::Deny => "deny",
            RuleKind::Allow => "allow",
        }
    }
}

/// The protocol a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP; keys are destination ports.
    Tcp,
    /// UDP; keys are destination ports.
    Udp,
    /// ICMP over IPv4; keys are message types.
    Icmp,
    /// ICMPv6 over IPv6; keys are message types.
    Icmpv6,
    /// Every IP protocol, every port and type.
    Any,
}

impl Protocol {
    /// The word the rule file uses (`tcp`, `udp`, `icmp`, `icmpv6`, `any`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Any => "any",
        }
    }
}

/// One rule, with set names already expanded to CIDRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique name; rule counters are keyed by it and survive reloads.
    pub name: String,
    /// Failsafe, deny or allow.
    pub kind: RuleKind,
    /// Source prefixes, IPv4 and IPv6 mixed, host bits clear, deduplicated.
    pub sources: Vec<IpNet>,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP) or message types (ICMP/ICMPv6) as inclusive ranges.
    /// Empty means every key of the protocol. Always empty for [`Protocol::Any`].
    pub keys: Vec<RangeInclusive<u16>>,
    /// Interfaces the rule applies on, by name, sorted and deduplicated; empty means every
    /// interface. On any other interface the rule does not exist (its sources included).
    pub interfaces: Vec<String>,
}

/// How many of `nets` are IPv4 and how many IPv6.
pub fn family_counts(nets: &[IpNet]) -> (usize, usize) {
    let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
    (v4, nets.len() - v4)
}

/// Ports or types as written in a rule file (`22,8000-8080`), `all` for none.
pub fn keys_text(keys: &[RangeInclusive<u16>]) -> String {
    if keys.is_empty() {
        return "all".into();
    }
    keys.iter()
        .map(|k| {
            if k.start() == k.end() {
                k.start().to_string()
            } else {
                format!("{}-{}", k.start(), k.end())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Rule {
    /// Its ports or types as written in a rule file (`22,8000-8080`), `all` when it has none.
    pub fn keys_text(&self) -> String {
        keys_text(&self.keys)
    }

    /// Whether the rule applies to packets arriving on `ifname` (`None`: an interface no
    /// rule names, or none at all, as in `explain`).
    pub fn applies_on(&self, ifname: Option<&str>) -> bool {
        self.interfaces.is_empty()
            || ifname.is_some_and(|name| self.interfaces.iter().any(|i| i == name))
    }
}

/// Packets that always pass before any rule, unless turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Essentials {
    /// ARP.
    pub arp: bool,
    /// IPv6 Neighbor Discovery (types 133–137) with hop limit 255, never fragmented.
    pub neighbor_discovery: bool,
    /// ICMP/ICMPv6 errors, including PMTU discovery.
    pub icmp_errors: bool,
}

impl Default for Essentials {
    fn default() -> Self {
        Essentials {
            arp: true,
            neighbor_discovery: true,
            icmp_errors: true,
        }
    }
}

/// How replies to connections the node opened itself get through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReturnTraffic {
    /// No special treatment.
    Off,
    /// Stateless: TCP segments that are not SYN-only, and UDP datagrams, to a destination
    /// port inside the node's ephemeral range.
    Ephemeral {
        /// The node's `ip_local_port_range`.
        ports: RangeInclusive<u16>,
    },
    /// A TC egress program learns outgoing flows; their replies pass.
    Stateful,
}

/// The flow table of `ReturnTraffic::Stateful` (kept in the policy whatever the mode, so
/// switching modes does not lose the settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTable {
    /// Seconds an established TCP flow lives after the node's last packet on it.
    pub tcp_secs: u32,
    /// Seconds a TCP flow lives once a FIN or RST was seen.
    pub tcp_closing_secs: u32,
    /// Seconds a UDP flow lives after the node's last datagram on it.
    pub udp_secs: u32,
    /// Seconds an ICMP/ICMPv6 echo flow lives after the node's last echo request.
    pub icmp_secs: u32,
    /// Entries in the flow table (set when the table is created: a running filter keeps
    /// the capacity it started with).
    pub capacity: u32,
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable {
            tcp_secs: 7200,
            tcp_closing_secs: 10,
            udp_secs: 120,
            icmp_secs: 30,
            capacity: filter_common::DEFAULT_FLOW_CAPACITY,
        }
    }
}

/// Source prefixes the kernel tables hold per generation (`capacity:`). The tables are
/// created with room for this many (memory grows with it: see
/// [`PrefixCapacity::table_bytes`]); a running filter keeps the size it started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixCapacity {
    /// Distinct IPv4 prefixes.
    pub ipv4: u32,
    /// Distinct IPv6 prefixes.
    pub ipv6: u32,
}

impl Default for PrefixCapacity {
    fn default() -> Self {
        PrefixCapacity {
            ipv4: filter_common::MAX_V4_PREFIXES,
            ipv6: filter_common::MAX_V6_PREFIXES,
        }
    }
}

impl PrefixCapacity {
    /// Most IPv4 prefixes a config may ask room for.
    pub const MAX_IPV4: u32 = 4 << 20;
    /// Most IPv6 prefixes a config may ask room for.
    pub const MAX_IPV6: u32 = 1 << 20;

    /// Address bits of the tables' roots (IPv4, IPv6): the IPv4 root grows with the capacity
    /// (`filter_common::lookup::Shape::root_bits_for`).
    pub fn root_bits(&self) -> (u32, u32) {
        use filter_common::lookup::{V4, V6};
        (V4.root_bits_for(self.ipv4), V6.root_bits_for(self.ipv6))
    }

    /// Table words per generation (IPv4, IPv6).
    pub fn table_words_per_gen(&self) -> (usize, usize) {
        use filter_common::lookup::{V4, V6};
        (
            V4.words_per_gen(self.ipv4) as usize,
            V6.words_per_gen(self.ipv6) as usize,
        )
    }

    /// Map elements of the two table maps (IPv4, IPv6), every generation.
    pub fn table_elements(&self) -> (u32, u32) {
        use filter_common::lookup::{V4, V6};
        (V4.elements(self.ipv4), V6.elements(self.ipv6))
    }

    /// Kernel memory the two table maps take, bytes, every generation.
    pub fn table_bytes(&self) -> usize {
        let (v4, v6) = self.table_elements();
        (v4 as usize + v6 as usize) * 8
    }
}

/// What to do with non-first fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fragments {
    /// Follow the verdict of the tracked first fragment.
    #[default]
    Track,
    /// Always drop.
    Drop,
}

impl Fragments {
    /// The word the rule file uses (`fragments: track | drop`).
    pub fn name(self) -> &'static str {
        match self {
            Fragments::Track => "track",
            Fragments::Drop => "drop",
        }
    }
}

impl ReturnTraffic {
    /// As the rule file says it: `off`, `stateful`, or `ephemeral` with its port range.
    pub fn describe(&self) -> String {
        match self {
            ReturnTraffic::Off => "off".into(),
            ReturnTraffic::Ephemeral { ports } => {
                format!("ephemeral (ports {}-{})", ports.start(), ports.end())
            }
            ReturnTraffic::Stateful => "stateful".into(),
        }
    }
}

/// What the config's `interfaces:` section says for one interface: its own mode and default
/// verdict instead of the file's. (Which rules apply there is said by the rules themselves:
/// [`Rule::interfaces`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InterfaceSettings {
    /// Enforce or monitor on this interface; `None` follows the file's `mode`.
    pub mode: Option<Mode>,
    /// Default verdict on this interface; `None` follows the file's `default`.
    pub default: Option<DefaultAction>,
}

/// How a change to this rule set is confirmed (`rollout:`): published on probation, and
/// flipped back to the previous generation unless its probes keep passing for
/// `confirm_within` (or, without probes, `nodegate confirm` comes in time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The probation window.
    pub confirm_within: std::time::Duration,
    /// Reachability that must hold under the new rules.
    pub probes: Vec<crate::probe::ReachProbe>,
    /// Roll back when the new rules drop packets of a TCP connection established before
    /// the change.
    pub watch_established: bool,
}

/// A complete, validated rule set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Enforce or monitor.
    pub mode: Mode,
    /// Verdict when nothing decided.
    pub default: DefaultAction,
    /// Essentials.
    pub essentials: Essentials,
    /// Evaluate IPv4 packets with options (`true`) or drop them (`false`, the default).
    pub ipv4_options_allow: bool,
    /// Pass ethertypes other than IPv4, IPv6 and ARP (`false` drops them, the default).
    pub unknown_ethertypes_pass: bool,
    /// Return-traffic mode.
    pub return_traffic: ReturnTraffic,
    /// Flow table timeouts and capacity (`return_traffic: stateful`).
    pub flows: FlowTable,
    /// Source prefix capacity of the kernel tables.
    pub capacity: PrefixCapacity,
    /// Fragment policy.
    pub fragments: Fragments,
    /// Drop samples per CPU per second sent to the loader (0 disables).
    pub samples_per_sec: u32,
    /// Rules in file order within each kind. Evaluation is failsafe, then deny, then allow;
    /// within a kind the first rule in file order wins.
    pub rules: Vec<Rule>,
    /// The file acknowledges that a reload may remove or change failsafe rules (lockout
    /// protection: without it such a reload is rejected).
    pub acknowledge_failsafe_change: bool,
    /// Per-interface mode and default, by interface name.
    pub interfaces: BTreeMap<String, InterfaceSettings>,
    /// Changes to this file are confirmed changes (`rollout:`); `None`: applied at once.
    pub rollout: Option<Rollout>,
}

impl Policy {
    /// The mode packets arriving on `ifname` are judged in (`None`: an interface the file
    /// does not name, or no interface at all, as in `explain`).
    pub fn mode_on(&self, ifname: Option<&str>) -> Mode {
        self.interface(ifname)
            .and_then(|i| i.mode)
            .unwrap_or(self.mode)
    }

    /// The default verdict for packets arriving on `ifname` (see [`Policy::mode_on`]).
    pub fn default_on(&self, ifname: Option<&str>) -> DefaultAction {
        self.interface(ifname)
            .and_then(|i| i.default)
            .unwrap_or(self.default)
    }

    fn interface(&self, ifname: Option<&str>) -> Option<&InterfaceSettings> {
        self.interfaces.get(ifname?)
    }

    /// Every interface the policy names: under `interfaces:` or in a rule's `interfaces`.
    pub fn named_interfaces(&self) -> std::collections::BTreeSet<&str> {
        self.interfaces
            .keys()
            .map(String::as_str)
            .chain(
                self.rules
                    .iter()
                    .flat_map(|r| r.interfaces.iter().map(String::as_str)),
            )
            .collect()
    }

    /// Rules in evaluation order: failsafe, deny, allow; file order within each kind.
    pub fn rules_in_precedence(&self) -> impl Iterator<Item = &Rule> {
        [RuleKind::Failsafe, RuleKind::Deny, RuleKind::Allow]
            .into_iter()
            .flat_map(move |kind| self.rules.iter().filter(move |r| r.kind == kind))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            default: DefaultAction::Drop,
            essentials: Essentials::default(),
            ipv4_options_allow: false,
            unknown_ethertypes_pass: false,
            return_traffic: ReturnTraffic::Ephemeral {
                ports: 32768..=60999,
            },
            flows: FlowTable::default(),
            capacity: PrefixCapacity::default(),
            fragments: Fragments::Track,
            samples_per_sec: 10,
            rules: Vec::new(),
            acknowledge_failsafe_change: false,
            interfaces: BTreeMap::new(),
            rollout: None,
        }
    }
}
