//! Classifier of the reference model: VERDICTS.md §3 and §5–§8 on a parsed frame. It reads
//! the [`Policy`] directly — rules in precedence order, each with its own prefix set — and
//! never the compiler's tables, so it also cross-checks the compiler.

use std::ops::RangeInclusive;

use filter_common::{Reason, ServiceKind};

use super::parse::{self, Family, IpPacket, NonFirstFragment, Parsed, Transport};
use super::prefix::PrefixSet;
use super::ModelState;
use crate::policy::{Fragments, Policy, Protocol, ReturnTraffic, Rule, RuleKind};

const ETHERTYPE_ARP: u16 = 0x0806;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// One rule, ready to match.
#[derive(Clone, Debug)]
pub(super) struct ModelRule {
    pub(super) name: String,
    kind: RuleKind,
    protocol: Protocol,
    keys: Vec<RangeInclusive<u16>>,
    sources: PrefixSet,
}

impl ModelRule {
    pub(super) fn new(rule: &Rule) -> ModelRule {
        ModelRule {
            name: rule.name.clone(),
            kind: rule.kind,
            protocol: rule.protocol,
            keys: rule.keys.clone(),
            sources: PrefixSet::new(&rule.sources),
        }
    }

    /// Whether the rule's protocol covers (kind, key) (§6).
    fn covers_service(&self, kind: ServiceKind, key: u16) -> bool {
        let same_kind = match self.protocol {
            Protocol::Any => return true,
            Protocol::Tcp => kind == ServiceKind::Tcp,
            Protocol::Udp => kind == ServiceKind::Udp,
            Protocol::Icmp => kind == ServiceKind::Icmp,
            Protocol::Icmpv6 => kind == ServiceKind::Icmpv6,
        };
        same_kind && (self.keys.is_empty() || self.keys.iter().any(|r| r.contains(&key)))
    }
}

/// Where the evaluation ended: the reason, the index of the deciding rule (into the
/// precedence-ordered rule list), and whether a stateful flow lookup could have changed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decision {
    pub(super) reason: Reason,
    pub(super) rule: Option<usize>,
    pub(super) stateful_unknown: bool,
}

impl Decision {
    fn of(reason: Reason) -> Decision {
        Decision {
            reason,
            rule: None,
            stateful_unknown: false,
        }
    }
}

/// A TCP SYN without ACK opens a connection: never a reply (§7).
fn opens_connection(tcp_flags: u8) -> bool {
    tcp_flags & TCP_SYN != 0 && tcp_flags & TCP_ACK == 0
}

/// Whether a live `NG_FLOWS` entry could match the packet (§7 stateful, *Matching*): a TCP
/// segment that does not open a connection, a UDP datagram, an ICMP/ICMPv6 echo reply.
fn may_match_a_flow(transport: &Transport) -> bool {
    match *transport {
        Transport::Tcp { flags, .. } => !opens_connection(flags),
        Transport::Udp { .. } => true,
        Transport::Icmp { ty, .. } => ty == 0,
        Transport::Icmpv6 { ty, .. } => ty == 129,
        Transport::Other => false,
    }
}

/// Minimum transport header a non-first fragment must leave room for (§3).
fn min_l4_header(family: Family, proto: u8) -> u32 {
    match (family, proto) {
        (_, 6) => 20,
        (_, 17) => 8,
        (Family::Ipv4, 1) | (Family::Ipv6, 58) => 8,
        _ => 0,
    }
}

/// The classifier's view of the policy, on one interface.
#[derive(Clone, Debug)]
pub(super) struct Classifier {
    /// The policy, with the interface's mode and default in place.
    pub(super) policy: Policy,
    /// The rules that apply on the interface, in precedence order (failsafe, deny, allow;
    /// file order within each). The others do not exist there, sources included.
    pub(super) rules: Vec<ModelRule>,
}

impl Classifier {
    /// `policy` as it applies on `ifname` (`None`: an interface the policy does not name).
    pub(super) fn new(policy: &Policy, ifname: Option<&str>) -> Classifier {
        let mut effective = policy.clone();
        effective.mode = policy.mode_on(ifname);
        effective.default = policy.default_on(ifname);
        Classifier {
            policy: effective,
            rules: policy
                .rules_in_precedence()
                .filter(|r| r.applies_on(ifname))
                .map(ModelRule::new)
                .collect(),
        }
    }

    /// Judges one parsed frame. With `state`, a passing first fragment is recorded and
    /// non-first fragments are looked up; without, nothing was ever recorded.
    pub(super) fn decide(
        &self,
        parsed: &Result<Parsed, Reason>,
        state: Option<&mut ModelState>,
    ) -> Decision {
        let parsed = match parsed {
            Err(reason) => return Decision::of(*reason),
            Ok(parsed) => parsed,
        };
        match parsed {
            Parsed::Ethertype(ethertype) => Decision::of(self.ethertype(*ethertype)),
            Parsed::Fragment(fragment) => Decision::of(self.non_first_fragment(fragment, state)),
            Parsed::Packet(packet) => {
                let decision = self.packet(packet);
                if let (Some(key), Some(state)) = (packet.first_fragment, state) {
                    if self.policy.fragments == Fragments::Track && !decision.reason.is_drop() {
                        state.first_fragments.insert(key);
                    }
                }
                decision
            }
        }
    }

    /// §1.4: ARP and unknown ethertypes.
    fn ethertype(&self, ethertype: u16) -> Reason {
        if ethertype == ETHERTYPE_ARP && self.policy.essentials.arp {
            Reason::EssentialArp
        } else if self.policy.unknown_ethertypes_pass {
            Reason::EthertypePass
        } else {
            Reason::UnknownEthertype
        }
    }

    /// §3: non-first fragments.
    fn non_first_fragment(
        &self,
        fragment: &NonFirstFragment,
        state: Option<&mut ModelState>,
    ) -> Reason {
        if u32::from(fragment.offset) * 8 < min_l4_header(fragment.key.family, fragment.proto()) {
            return Reason::FragmentTiny;
        }
        let tracked = self.policy.fragments == Fragments::Track
            && state.is_some_and(|s| s.first_fragments.contains(&fragment.key));
        if tracked {
            Reason::FragmentTracked
        } else {
            Reason::FragmentUntracked
        }
    }

    /// §5–§8 for a packet with a transport header.
    fn packet(&self, packet: &IpPacket) -> Decision {
        if let Some(reason) = self.essentials(packet) {
            return Decision::of(reason);
        }

        // §6: the first covering rule in precedence order decides.
        let (kind, key) = packet.service();
        let mut source_known = false;
        for (index, rule) in self.rules.iter().enumerate() {
            let covers = rule.covers_service(kind, key);
            if covers || !source_known {
                let has_source = rule.sources.contains(packet.src);
                source_known |= has_source;
                if covers && has_source {
                    let reason = match rule.kind {
                        RuleKind::Failsafe => Reason::Failsafe,
                        RuleKind::Deny => Reason::DenyRule,
                        RuleKind::Allow => Reason::AllowRule,
                    };
                    return Decision {
                        reason,
                        rule: Some(index),
                        stateful_unknown: false,
                    };
                }
            }
        }
        let unmatched = if source_known {
            Reason::NoRuleMatch
        } else {
            Reason::NoSourceMatch
        };

        // §7: return traffic.
        let mut stateful_unknown = false;
        match &self.policy.return_traffic {
            ReturnTraffic::Off => {}
            ReturnTraffic::Ephemeral { ports } => {
                let reply_port = match packet.transport {
                    Transport::Tcp { dport, flags, .. } => {
                        (!opens_connection(flags)).then_some(dport)
                    }
                    Transport::Udp { dport, .. } => Some(dport),
                    _ => None,
                };
                if reply_port.is_some_and(|port| ports.contains(&port)) {
                    return Decision::of(Reason::ReturnTraffic);
                }
            }
            // The flow table lives in the kernel; judged as if it were empty, and flagged
            // when a live entry could have changed that.
            ReturnTraffic::Stateful => stateful_unknown = may_match_a_flow(&packet.transport),
        }

        // §8: default.
        let reason = match self.policy.default {
            crate::policy::DefaultAction::Pass => Reason::DefaultPass,
            crate::policy::DefaultAction::Drop => unmatched,
        };
        Decision {
            reason,
            rule: None,
            stateful_unknown,
        }
    }

    /// §5: essentials.
    fn essentials(&self, packet: &IpPacket) -> Option<Reason> {
        let essentials = &self.policy.essentials;
        match packet.transport {
            Transport::Icmp { ty, code } if essentials.icmp_errors => match (ty, code) {
                (3, 4) => Some(Reason::EssentialPmtu),
                (3 | 11 | 12, _) => Some(Reason::EssentialIcmpError),
                _ => None,
            },
            Transport::Icmpv6 { ty: 2, .. } if essentials.icmp_errors => {
                Some(Reason::EssentialPmtu)
            }
            Transport::Icmpv6 { ty: 1 | 3 | 4, .. } if essentials.icmp_errors => {
                Some(Reason::EssentialIcmpError)
            }
            Transport::Icmpv6 { ty: 133..=137, .. } if essentials.neighbor_discovery => {
                if packet.fragmented || packet.hop_limit != 255 {
                    Some(Reason::NdInvalid)
                } else {
                    Some(Reason::EssentialNd)
                }
            }
            _ => None,
        }
    }
}

/// Parses and decides in one go (used by [`super::Model`]).
pub(super) fn judge(
    classifier: &Classifier,
    frame: &[u8],
    state: Option<&mut ModelState>,
) -> (Result<Parsed, Reason>, Decision) {
    let parsed = parse::parse(frame, classifier.policy.ipv4_options_allow);
    let decision = classifier.decide(&parsed, state);
    (parsed, decision)
}
