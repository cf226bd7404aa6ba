//! The reference model: an independent userspace classifier that judges an Ethernet frame
//! against a [`Policy`] exactly as `docs/VERDICTS.md` prescribes, giving the verdict, the
//! reason and the deciding rule.
//!
//! It shares nothing with the XDP program but the [`Reason`] codes and two named limits
//! (`VLAN_MAX_DEPTH`, `IPV6_EXT_MAX`), and nothing with the compiler: it evaluates the
//! policy's rules one by one in precedence order with its own prefix sets. The differential
//! tests compare it with the kernel frame by frame, so each side checks the other (and the
//! compiler in between).
//!
//! - [`parse`] implements VERDICTS §1–§4 (Ethernet, VLAN, IPv4, IPv6 extension headers,
//!   transport header);
//! - the classifier implements §3 and §5–§8 (fragments, essentials, rules, return traffic,
//!   default) and monitor mode.
//!
//! ```
//! use filter_user::craft::Frame;
//! use filter_user::model::Model;
//! use filter_user::policy::{Policy, Protocol, Rule, RuleKind};
//! use filter_common::Reason;
//!
//! let policy = Policy {
//!     rules: vec![Rule {
//!         name: "clients-https".into(),
//!         kind: RuleKind::Allow,
//!         sources: vec!["192.0.2.0/24".parse()?],
//!         protocol: Protocol::Tcp,
//!         keys: vec![443..=443],
//!         interfaces: Vec::new(),
//!     }],
//!     ..Policy::default()
//! };
//! let model = Model::new(&policy);
//! let frame = Frame::tcp("192.0.2.9".parse()?, "10.1.1.1".parse()?, 40000, 443).build();
//! let j = model.judge(&frame);
//! assert_eq!((j.reason, j.rule.as_deref(), j.pass), (Reason::AllowRule, Some("clients-https"), true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod classify;
pub mod parse;
mod prefix;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use filter_common::{Reason, ServiceKind};
pub use parse::{Family, FragmentKey};

use crate::craft::Frame;
use crate::policy::{Mode, Policy};
use classify::Classifier;
use parse::Parsed;

/// The addresses, protocol and ports of a judged IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowSummary {
    /// Family.
    pub family: Family,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol (for IPv6 the end of the extension-header chain; for a non-first
    /// IPv6 fragment the Fragment header's Next Header).
    pub proto: u8,
    /// TCP/UDP source port; 0 for other protocols and for non-first fragments.
    pub sport: u16,
    /// TCP/UDP destination port; 0 for other protocols and for non-first fragments.
    pub dport: u16,
}

/// What the rules matched on: the service kind and key of VERDICTS §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// Kind.
    pub kind: ServiceKind,
    /// Destination port, ICMP/ICMPv6 type, or protocol number.
    pub key: u16,
}

/// The model's verdict on one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The one reason counter the frame increments.
    pub reason: Reason,
    /// Name of the rule that decided (failsafe, deny or allow), if one did.
    pub rule: Option<String>,
    /// Whether the frame passes: false only for a drop reason in enforce mode.
    pub pass: bool,
    /// Monitor mode and a drop reason: the frame passes but counts as a would-drop.
    pub would_drop: bool,
    /// Addresses, protocol and ports, once the IP header was valid (`None` for non-IP
    /// frames and frames rejected while parsing L2/L3/L4).
    pub flow: Option<FlowSummary>,
    /// Service kind and key, for packets that reached the rules (§5–§8).
    pub service: Option<Service>,
    /// Return traffic is `stateful`, the evaluation reached §7 without a decision, and the
    /// packet is of a kind a flow entry can match (TCP other than a bare SYN, UDP, an echo
    /// reply): the model judged the frame as if the kernel's flow table were empty (the
    /// reason is then `default-pass`, `no-source-match` or `no-rule-match`), but the kernel
    /// passes it as `return-traffic` when the reverse flow is live. A differential test must treat the
    /// kernel's `return-traffic` as agreeing on such frames.
    pub stateful_unknown: bool,
}

impl Judgement {
    /// Whether a kernel verdict (reason and rule name) agrees with this judgement: the same
    /// reason and rule, or — when [`Judgement::stateful_unknown`] — the kernel's
    /// `return-traffic` (no rule), which the model cannot rule out.
    pub fn agrees(&self, reason: Reason, rule: Option<&str>) -> bool {
        (reason == self.reason && rule == self.rule.as_deref())
            || (self.stateful_unknown && reason == Reason::ReturnTraffic && rule.is_none())
    }

    /// `"pass"` or `"drop"`, as the replay harness prints it.
    pub fn verdict(&self) -> &'static str {
        if self.pass {
            "pass"
        } else {
            "drop"
        }
    }
}

/// A verdict as every command reports it: `verdict`, `reason`, `rule`, `would_drop`
/// (docs/OUTPUT.md). `Display` is the short text form, `pass (rule-name)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// `"pass"` or `"drop"`: what happened to the packet.
    pub verdict: &'static str,
    /// Reason name (docs/VERDICTS.md).
    pub reason: &'static str,
    /// Deciding rule, if one decided.
    pub rule: Option<String>,
    /// Monitor mode and a drop reason: passed, and enforcing would drop it.
    pub would_drop: bool,
}

impl Outcome {
    /// Whether the packet is dropped, or would be once the rules are enforced.
    pub fn stopped(&self) -> bool {
        self.verdict == "drop" || self.would_drop
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.verdict,
            self.rule.as_deref().unwrap_or(self.reason)
        )?;
        if self.would_drop {
            f.write_str(" would_drop")?;
        }
        Ok(())
    }
}

impl Judgement {
    /// The verdict as reported.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            verdict: self.verdict(),
            reason: self.reason.name(),
            rule: self.rule.clone(),
            would_drop: self.would_drop,
        }
    }
}

impl fmt::Display for Judgement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.verdict(), self.reason.name())?;
        if let Some(rule) = &self.rule {
            write!(f, " rule {rule}")?;
        }
        if self.would_drop {
            write!(f, " would_drop (monitor mode)")?;
        }
        if self.stateful_unknown {
            write!(f, " [unless a live outgoing flow matches: return-traffic]")?;
        }
        Ok(())
    }
}

/// Fragment tracking for [`Model::judge_tracked`]: first fragments that passed (in enforce
/// terms) with fragment tracking on. Entries never expire (the kernel's 30 s time-out is not
/// modelled); start a new state, or [`ModelState::clear`] it, between independent runs.
#[derive(Clone, Debug, Default)]
pub struct ModelState {
    first_fragments: HashSet<FragmentKey>,
}

impl ModelState {
    /// An empty state.
    pub fn new() -> ModelState {
        ModelState::default()
    }

    /// Forgets every recorded first fragment.
    pub fn clear(&mut self) {
        self.first_fragments.clear();
    }

    /// Number of datagrams whose first fragment was recorded.
    pub fn tracked(&self) -> usize {
        self.first_fragments.len()
    }

    /// Whether a first fragment of this datagram was recorded.
    pub fn is_tracked(&self, key: &FragmentKey) -> bool {
        self.first_fragments.contains(key)
    }
}

/// The protocol of an [`Model::explain`] probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeProtocol {
    /// TCP; the port is the destination port.
    Tcp,
    /// UDP; the port is the destination port.
    Udp,
    /// ICMP; the port is the message type (0–255).
    Icmp,
    /// ICMPv6; the port is the message type (0–255).
    Icmpv6,
    /// Another IP protocol number; the port is ignored.
    Ip(u8),
}

impl ProbeProtocol {
    /// The protocol for an IP protocol number (6, 17, 1 and 58 are the named variants).
    pub fn from_number(proto: u8) -> ProbeProtocol {
        match proto {
            6 => ProbeProtocol::Tcp,
            17 => ProbeProtocol::Udp,
            1 => ProbeProtocol::Icmp,
            58 => ProbeProtocol::Icmpv6,
            n => ProbeProtocol::Ip(n),
        }
    }
}

/// The name `FromStr` reads back: `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
impl fmt::Display for ProbeProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeProtocol::Tcp => f.write_str("tcp"),
            ProbeProtocol::Udp => f.write_str("udp"),
            ProbeProtocol::Icmp => f.write_str("icmp"),
            ProbeProtocol::Icmpv6 => f.write_str("icmpv6"),
            ProbeProtocol::Ip(n) => write!(f, "{n}"),
        }
    }
}

/// A string that is neither a protocol name nor a protocol number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {given:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255")]
pub struct ProbeProtocolError {
    /// What was given.
    pub given: String,
}

impl FromStr for ProbeProtocol {
    type Err = ProbeProtocolError;

    fn from_str(s: &str) -> Result<ProbeProtocol, ProbeProtocolError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(ProbeProtocol::Tcp),
            "udp" => Ok(ProbeProtocol::Udp),
            "icmp" => Ok(ProbeProtocol::Icmp),
            "icmpv6" | "ipv6-icmp" => Ok(ProbeProtocol::Icmpv6),
            other => other
                .parse::<u8>()
                .map(ProbeProtocol::from_number)
                .map_err(|_| ProbeProtocolError {
                    given: s.to_string(),
                }),
        }
    }
}

/// Destination of [`Model::explain`] probes (the node; no verdict depends on it).
pub const PROBE_DST_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// IPv6 destination of [`Model::explain`] probes.
pub const PROBE_DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// Source port of TCP/UDP [`Model::explain`] probes (no verdict depends on it).
pub const PROBE_SPORT: u16 = 49152;

/// The reference model for one policy.
#[derive(Clone, Debug)]
pub struct Model {
    classifier: Classifier,
}

impl Model {
    /// Prepares `policy` for judging (one prefix set per rule) frames that arrive on an
    /// interface the policy does not name: rules that name interfaces do not apply.
    pub fn new(policy: &Policy) -> Model {
        Model {
            classifier: Classifier::new(policy, None),
        }
    }

    /// Prepares `policy` for judging frames that arrive on interface `ifname`: with the mode
    /// and default its `interfaces:` entry gives that interface (the file's own for an
    /// interface it does not name), and only the rules that apply there.
    pub fn on_interface(policy: &Policy, ifname: &str) -> Model {
        Model {
            classifier: Classifier::new(policy, Some(ifname)),
        }
    }

    /// The policy judged against (with an interface's mode and default in place, for a
    /// model made by [`Model::on_interface`]).
    pub fn policy(&self) -> &Policy {
        &self.classifier.policy
    }

    /// Judges a frame on its own: no fragment was ever seen before it, so a non-first
    /// fragment is `fragment-untracked` (or `fragment-tiny`), and nothing is recorded.
    pub fn judge(&self, frame: &[u8]) -> Judgement {
        self.judge_with(frame, None)
    }

    /// Judges a frame in a sequence: a passing first fragment is recorded in `state` (when
    /// the policy tracks fragments), and a later non-first fragment of the same datagram
    /// (family, protocol, id, source, destination) is `fragment-tracked`.
    pub fn judge_tracked(&self, frame: &[u8], state: &mut ModelState) -> Judgement {
        self.judge_with(frame, Some(state))
    }

    fn judge_with(&self, frame: &[u8], state: Option<&mut ModelState>) -> Judgement {
        let (parsed, decision) = classify::judge(&self.classifier, frame, state);
        let (flow, service) = match &parsed {
            Ok(Parsed::Packet(p)) => {
                let (sport, dport) = p.ports();
                let (kind, key) = p.service();
                let flow = FlowSummary {
                    family: p.family,
                    src: p.src,
                    dst: p.dst,
                    proto: p.proto,
                    sport,
                    dport,
                };
                (Some(flow), Some(Service { kind, key }))
            }
            Ok(Parsed::Fragment(f)) => {
                let flow = FlowSummary {
                    family: f.key.family,
                    src: f.key.src,
                    dst: f.key.dst,
                    proto: f.key.proto,
                    sport: 0,
                    dport: 0,
                };
                (Some(flow), None)
            }
            Ok(Parsed::Ethertype(_)) | Err(_) => (None, None),
        };
        let drop = decision.reason.is_drop();
        let monitor = self.classifier.policy.mode == Mode::Monitor;
        Judgement {
            reason: decision.reason,
            rule: decision.rule.map(|i| self.classifier.rules[i].name.clone()),
            pass: !drop || monitor,
            would_drop: drop && monitor,
            flow,
            service,
            stateful_unknown: decision.stateful_unknown,
        }
    }

    /// The synthetic frame [`Model::explain`] judges: a well-formed, unfragmented packet from
    /// `src` to [`PROBE_DST_V4`]/[`PROBE_DST_V6`] with TTL/hop limit 255 (so Neighbor
    /// Discovery types count as valid ND); TCP is a SYN (a new connection, so it never counts
    /// as return traffic), UDP a datagram from [`PROBE_SPORT`], ICMP/ICMPv6 the given type
    /// with code 0, any other protocol an empty payload.
    ///
    /// `ProbeProtocol::Icmp` with an IPv6 source is IPv6 next header 1 (ICMP in the wrong
    /// family), which `icmp` rules never cover; likewise `Icmpv6` with an IPv4 source. A
    /// protocol number that is an IPv6 extension header gives a chain without its header:
    /// `ipv6-exthdr`.
    pub fn probe_frame(src: IpAddr, proto: ProbeProtocol, port: u16) -> Frame {
        let dst = match src {
            IpAddr::V4(_) => IpAddr::V4(PROBE_DST_V4),
            IpAddr::V6(_) => IpAddr::V6(PROBE_DST_V6),
        };
        let ty = u8::try_from(port).unwrap_or(u8::MAX);
        let frame = match proto {
            ProbeProtocol::Tcp => Frame::tcp(src, dst, PROBE_SPORT, port).syn(),
            ProbeProtocol::Udp => Frame::udp(src, dst, PROBE_SPORT, port),
            ProbeProtocol::Icmp => Frame::icmp(src, dst, ty, 0),
            ProbeProtocol::Icmpv6 => Frame::icmpv6(src, dst, ty, 0),
            ProbeProtocol::Ip(n) => Frame::ip_proto(src, dst, n, &[]),
        };
        frame.ttl(255)
    }

    /// Verdict, reason and rule for a packet from `src` with this protocol and destination
    /// port (or ICMP type): the frame of [`Model::probe_frame`], judged like any other frame.
    /// An ICMP type above 255 is judged as type 255.
    pub fn explain(&self, src: IpAddr, proto: ProbeProtocol, port: u16) -> Judgement {
        self.judge(&Model::probe_frame(src, proto, port).build())
    }

    /// [`Model::explain`] for a packet of a connection already under way: TCP is an ACK
    /// segment (what an established session or a reply carries), anything else as there.
    pub fn explain_ongoing(&self, src: IpAddr, proto: ProbeProtocol, port: u16) -> Judgement {
        let frame = Model::probe_frame(src, proto, port);
        let frame = match proto {
            ProbeProtocol::Tcp => frame.ack(),
            _ => frame,
        };
        self.judge(&frame.build())
    }
}

#[cfg(test)]
mod tests;
