//! Verdict reasons. Every packet the XDP program sees increments exactly one reason counter,
//! so each way a packet can pass or drop has its own code. Codes below [`DROP_BASE`] pass;
//! codes from it up drop (or, in monitor mode, would drop).

/// First drop reason code; everything below passes.
pub const DROP_BASE: u32 = 16;
/// Reason code space. Stat slots `0..REASON_SLOTS` count decided verdicts;
/// `REASON_SLOTS..2*REASON_SLOTS` count would-drops in monitor mode.
pub const REASON_SLOTS: u32 = 64;
/// Counter slots per interface: decided verdicts plus monitor-mode would-drops.
pub const STAT_SLOTS: u32 = 2 * REASON_SLOTS;

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $name:literal; )*) => {
        /// Why a packet passed or dropped. Discriminants are the counter slot numbers and are
        /// part of the pinned layout: never renumber, only append.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            $( $(#[doc = $doc])* $variant = $code, )*
        }

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable name used by the CLI, logs and metrics labels.
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            /// The reason with this code, if any.
            pub const fn from_u32(code: u32) -> Option<Reason> {
                match code { $($code => Some(Reason::$variant),)* _ => None }
            }

            /// The reason with this name, if any.
            pub fn from_name(name: &str) -> Option<Reason> {
                match name { $($name => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    /// A map lookup that cannot fail did; the packet is dropped (fail closed) and counted.
    Internal = 0, "internal-error";
    /// An allow rule matched source, protocol and port.
    AllowRule = 1, "allow-rule";
    /// A failsafe rule matched (evaluated before deny and allow rules).
    Failsafe = 2, "failsafe";
    /// ARP, passed as an essential.
    EssentialArp = 3, "essential-arp";
    /// IPv6 Neighbor Discovery with hop limit 255, unfragmented.
    EssentialNd = 4, "essential-nd";
    /// ICMP fragmentation-needed or ICMPv6 Packet Too Big (PMTU discovery).
    EssentialPmtu = 5, "essential-pmtu";
    /// Another ICMP/ICMPv6 error message.
    EssentialIcmpError = 6, "essential-icmp-error";
    /// A reply to traffic the node itself started (ephemeral port range or flow table).
    ReturnTraffic = 7, "return-traffic";
    /// A non-first fragment whose first fragment passed.
    FragmentTracked = 8, "fragment-tracked";
    /// Nothing matched and the default is `pass`.
    DefaultPass = 9, "default-pass";
    /// A non-IP, non-ARP ethertype under the `pass` policy.
    EthertypePass = 10, "ethertype-pass";
    /// No rule generation has been loaded yet.
    NotConfigured = 11, "not-configured";
    /// A deny rule matched.
    DenyRule = 16, "deny-rule";
    /// The source address is in no rule's allow-list (default drop).
    NoSourceMatch = 17, "no-source-match";
    /// The source is allowed, but not for this protocol and port (default drop).
    NoRuleMatch = 18, "no-rule-match";
    /// Frame shorter than an Ethernet header.
    EthTruncated = 19, "eth-truncated";
    /// More VLAN tags than the parser follows, or a frame ending inside a tag.
    VlanDepth = 20, "vlan-depth";
    /// A non-IP, non-ARP ethertype under the default `drop` policy.
    UnknownEthertype = 21, "unknown-ethertype";
    /// Frame ends inside the IPv4 header, or before its stated total length.
    Ipv4Truncated = 22, "ipv4-truncated";
    /// IPv4 header fields are invalid: version, IHL < 5, total length, reserved flag.
    Ipv4Header = 23, "ipv4-header";
    /// IPv4 options present and the options policy is `drop`.
    Ipv4Options = 24, "ipv4-options";
    /// Frame ends inside the IPv6 header, or before its stated payload length.
    Ipv6Truncated = 25, "ipv6-truncated";
    /// IPv6 header fields are invalid: version ≠ 6.
    Ipv6Header = 26, "ipv6-header";
    /// IPv6 extension headers: too many, out of RFC 8200 order, or running past the packet.
    Ipv6ExtHeader = 27, "ipv6-exthdr";
    /// A non-first fragment whose first fragment was not seen (or tracking is off).
    FragmentUntracked = 28, "fragment-untracked";
    /// A first fragment too small for the headers it must carry, or an overlapping fragment.
    FragmentTiny = 29, "fragment-tiny";
    /// The packet ends inside the TCP, UDP or ICMP header.
    L4Truncated = 30, "l4-truncated";
    /// TCP data offset below 5 or beyond the packet.
    TcpHeader = 31, "tcp-header";
    /// UDP length below 8 or beyond the packet.
    UdpHeader = 32, "udp-header";
    /// Neighbor Discovery with a hop limit other than 255, or fragmented.
    NdInvalid = 33, "nd-invalid";
}

impl Reason {
    /// Whether the verdict for this reason is a drop (in enforce mode).
    pub const fn is_drop(self) -> bool {
        let code = self as u32;
        code == Reason::Internal as u32 || code >= DROP_BASE
    }

    /// Counter slot for this reason: monitor-mode would-drops have their own slot range.
    pub const fn stat_slot(self, monitor: bool) -> u32 {
        if monitor && self.is_drop() {
            self as u32 + REASON_SLOTS
        } else {
            self as u32
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!((Reason::ALL[i] as u32) < REASON_SLOTS);
        i += 1;
    }
};
