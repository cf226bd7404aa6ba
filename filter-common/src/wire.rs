//! Wire numbers: ethertypes and VLAN TPIDs, IP protocol numbers, TCP flag bits. One
//! definition for the XDP and TC programs (their parsers compare against these) and for
//! userspace (the frame builder writes them, the reference model reads them); the kernel
//! crate checks them at compile time against `network-types`, which it takes header layouts
//! from.

/// Ethertypes and VLAN tag protocol identifiers, in host byte order.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// An 802.1Q (customer) VLAN tag.
    pub const VLAN_8021Q: u16 = 0x8100;
    /// An 802.1ad (service, QinQ outer) VLAN tag.
    pub const VLAN_8021AD: u16 = 0x88A8;
    /// The pre-standard QinQ outer tag.
    pub const VLAN_QINQ_9100: u16 = 0x9100;
}

/// IP protocol numbers (IPv4 Protocol, IPv6 Next Header).
pub mod ip_proto {
    /// IPv6 Hop-by-Hop Options.
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 Routing.
    pub const ROUTING: u8 = 43;
    /// IPv6 Fragment.
    pub const FRAGMENT: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// Authentication Header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 No Next Header.
    pub const NO_NEXT_HEADER: u8 = 59;
    /// IPv6 Destination Options.
    pub const DEST_OPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits (the 14th byte of the header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}
