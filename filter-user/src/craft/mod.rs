//! Ethernet frame builder shared by the unit tests, the `BPF_PROG_TEST_RUN` suite, the
//! benchmarks and the traffic generator, so that no test carries a hand-written byte array.
//!
//! A frame starts from a constructor that picks the layers ([`Frame::tcp`], [`Frame::udp`],
//! [`Frame::icmp`], [`Frame::icmpv6`], [`Frame::ip_proto`], [`Frame::arp`],
//! [`Frame::ethertype`]), is shaped by modifiers (VLAN tags, IPv4 options, header field
//! overrides, IPv6 extension headers, fragmentation, padding, truncation) and ends in
//! [`Frame::build`]. Lengths and checksums are computed from what is actually written, unless
//! an override says otherwise; overrides only change the field, never the bytes written, which
//! is how malformed frames are made.
//!
//! The IP family follows the addresses: IPv4 addresses give an IPv4 packet (ethertype 0x0800),
//! IPv6 addresses an IPv6 packet (0x86DD). The transport is independent of the family, so
//! [`Frame::icmp`] with IPv6 addresses gives an IPv6 packet with next header 1 — ICMP in the
//! wrong family, on purpose.
//!
//! ```
//! use filter_user::craft::{ExtHeader, Frame};
//!
//! let syn = Frame::tcp("192.0.2.9".parse()?, "10.1.1.1".parse()?, 40000, 443)
//!     .syn()
//!     .vlan(100)
//!     .build();
//! assert_eq!(syn.len(), 14 + 4 + 20 + 20);
//!
//! let frag = Frame::udp("2001:db8:c1::9".parse()?, "2001:db8::1".parse()?, 5353, 53)
//!     .ipv6_ext(ExtHeader::hop_by_hop())
//!     .ipv6_ext(ExtHeader::fragment(0, true, 7))
//!     .payload(&[0; 100])
//!     .pad_to(60)
//!     .build();
//! assert_eq!(frag.len(), 14 + 40 + 8 + 8 + 8 + 100);
//! # Ok::<(), std::net::AddrParseError>(())
//! ```
//!
//! Setters that only make sense for one family or one transport (say [`Frame::ihl`] on an
//! IPv6 frame, or [`Frame::udp_len`] on a TCP frame) panic with a message naming the misuse:
//! this is a test utility, and a silently ignored modifier would hide a broken test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::wire::ethertype;
/// IP protocol numbers used by the builder.
pub use filter_common::wire::ip_proto as proto;
/// TCP flag bits, for [`Frame::flags`].
pub use filter_common::wire::tcp_flags;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = ethertype::IPV4;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = ethertype::ARP;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = ethertype::IPV6;
/// TPID of an 802.1Q (customer) VLAN tag.
pub const TPID_8021Q: u16 = ethertype::VLAN_8021Q;
/// TPID of an 802.1ad (service, QinQ outer) VLAN tag.
pub const TPID_8021AD: u16 = ethertype::VLAN_8021AD;
/// Legacy pre-standard QinQ TPID.
pub const TPID_9100: u16 = ethertype::VLAN_QINQ_9100;

/// An IPv6 extension header, for [`Frame::ipv6_ext`]. The builder fills in each header's
/// Next Header byte from the header (or transport) that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-Hop Options (next header 0): `(len + 1) * 8` bytes, filled with a PadN option.
    HopByHop {
        /// The Hdr Ext Len field.
        len: u8,
    },
    /// Destination Options (60): `(len + 1) * 8` bytes, filled with a PadN option.
    DestOpts {
        /// The Hdr Ext Len field.
        len: u8,
    },
    /// Routing (43): `(len + 1) * 8` bytes.
    Routing {
        /// The Hdr Ext Len field.
        len: u8,
        /// Routing Type.
        routing_type: u8,
        /// Segments Left.
        segments_left: u8,
    },
    /// Fragment (44): 8 bytes.
    Fragment {
        /// Fragment offset in 8-byte units (13 bits; higher bits are cut).
        offset: u16,
        /// The M (more fragments) flag.
        more: bool,
        /// Identification.
        id: u32,
    },
    /// Authentication Header (51): `(len + 2) * 4` bytes (RFC 4302: Payload Len counts
    /// 32-bit words minus 2).
    Ah {
        /// The Payload Len field.
        len: u8,
    },
    /// Any header, written verbatim except byte 0 (Next Header), which the builder fills.
    /// An empty `bytes` writes nothing at all (a header whose Next Header byte is missing).
    Raw {
        /// The protocol number that announces this header.
        code: u8,
        /// The header bytes.
        bytes: Vec<u8>,
    },
}

impl ExtHeader {
    /// An 8-byte Hop-by-Hop Options header.
    pub fn hop_by_hop() -> ExtHeader {
        ExtHeader::HopByHop { len: 0 }
    }

    /// An 8-byte Destination Options header.
    pub fn dest_opts() -> ExtHeader {
        ExtHeader::DestOpts { len: 0 }
    }

    /// An 8-byte Routing header (type 253, experimental; segments left 0).
    pub fn routing() -> ExtHeader {
        ExtHeader::Routing {
            len: 0,
            routing_type: 253,
            segments_left: 0,
        }
    }

    /// A Fragment header: `offset` in 8-byte units, `more` the M flag, `id` Identification.
    pub fn fragment(offset: u16, more: bool, id: u32) -> ExtHeader {
        ExtHeader::Fragment { offset, more, id }
    }

    /// A 24-byte Authentication Header (Payload Len 4: a 12-byte ICV).
    pub fn ah() -> ExtHeader {
        ExtHeader::Ah { len: 4 }
    }

    /// The protocol number that announces this header.
    pub fn code(&self) -> u8 {
        match self {
            ExtHeader::HopByHop { .. } => proto::HOP_BY_HOP,
            ExtHeader::DestOpts { .. } => proto::DEST_OPTS,
            ExtHeader::Routing { .. } => proto::ROUTING,
            ExtHeader::Fragment { .. } => proto::FRAGMENT,
            ExtHeader::Ah { .. } => proto::AH,
            ExtHeader::Raw { code, .. } => *code,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            ExtHeader::HopByHop { len } | ExtHeader::DestOpts { len } => {
                let size = (usize::from(*len) + 1) * 8;
                // A single PadN option fills the 6 + 8*len bytes after the first two.
                out.extend_from_slice(&[next, *len, 1, (size - 4) as u8]);
                out.resize(start + size, 0);
            }
            ExtHeader::Routing {
                len,
                routing_type,
                segments_left,
            } => {
                let size = (usize::from(*len) + 1) * 8;
                out.extend_from_slice(&[next, *len, *routing_type, *segments_left]);
                out.resize(start + size, 0);
            }
            ExtHeader::Fragment { offset, more, id } => {
                let word = (offset << 3) | u16::from(*more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&word.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            ExtHeader::Ah { len } => {
                let size = (usize::from(*len) + 2) * 4;
                out.extend_from_slice(&[next, *len, 0, 0]);
                out.extend_from_slice(&0x0000_1000u32.to_be_bytes()); // SPI
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence number
                out.resize(start + size.max(12), 0);
                out.truncate(start + size);
            }
            ExtHeader::Raw { bytes, .. } => {
                out.extend_from_slice(bytes);
                if let Some(first) = out.get_mut(start) {
                    *first = next;
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        data_offset: Option<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        len: Option<u16>,
    },
    /// ICMP (`v6 == false`, protocol 1) or ICMPv6 (`v6 == true`, next header 58).
    Icmp {
        v6: bool,
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Protocol number only; the payload is everything.
    Raw { proto: u8 },
}

impl Transport {
    fn proto(&self) -> u8 {
        match self {
            Transport::Tcp { .. } => proto::TCP,
            Transport::Udp { .. } => proto::UDP,
            Transport::Icmp { v6: false, .. } => proto::ICMP,
            Transport::Icmp { v6: true, .. } => proto::ICMPV6,
            Transport::Raw { proto } => *proto,
        }
    }
}

#[derive(Clone, Debug)]
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    version: Option<u8>,
    protocol: Option<u8>,
    // IPv4 only.
    ihl: Option<u8>,
    tot_len: Option<u16>,
    options: Vec<u8>,
    id: u16,
    /// Flags and fragment offset word.
    frag_word: u16,
    // IPv6 only.
    payload_len: Option<u16>,
    ext: Vec<ExtHeader>,
    // Transport.
    transport: Transport,
    l4_len: Option<usize>,
}

#[derive(Clone, Debug)]
enum Net {
    Raw { ethertype: u16 },
    Ip(Box<Ip>),
}

/// An Ethernet frame under construction. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct Frame {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tags: Vec<(u16, u16)>,
    ethertype: Option<u16>,
    net: Net,
    payload: Vec<u8>,
    pad_to: Option<usize>,
    truncate: Option<usize>,
}

/// Default destination MAC (locally administered unicast).
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default source MAC (locally administered unicast).
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl Frame {
    fn with_net(net: Net, payload: Vec<u8>) -> Frame {
        Frame {
            dst_mac: DEFAULT_DST_MAC,
            src_mac: DEFAULT_SRC_MAC,
            tags: Vec::new(),
            ethertype: None,
            net,
            payload,
            pad_to: None,
            truncate: None,
        }
    }

    fn ip(src: IpAddr, dst: IpAddr, transport: Transport) -> Frame {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "craft: source {src} and destination {dst} are of different families"
        );
        Frame::with_net(
            Net::Ip(Box::new(Ip {
                src,
                dst,
                ttl: 64,
                version: None,
                protocol: None,
                ihl: None,
                tot_len: None,
                options: Vec::new(),
                id: 0,
                frag_word: 0,
                payload_len: None,
                ext: Vec::new(),
                transport,
                l4_len: None,
            })),
            Vec::new(),
        )
    }

    /// A TCP segment with a 20-byte header and the SYN flag (a new connection); change the
    /// flags with [`Frame::ack`], [`Frame::syn_ack`] or [`Frame::flags`].
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Frame {
        Frame::ip(
            src,
            dst,
            Transport::Tcp {
                sport,
                dport,
                seq: 1,
                ack: 0,
                flags: tcp_flags::SYN,
                window: 64240,
                data_offset: None,
            },
        )
    }

    /// A UDP datagram (8-byte header, length computed).
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Frame {
        Frame::ip(
            src,
            dst,
            Transport::Udp {
                sport,
                dport,
                len: None,
            },
        )
    }

    /// An ICMP message (IP protocol 1; an 8-byte header whose last 4 bytes are zero). With
    /// IPv6 addresses this is ICMP in the wrong family (next header 1).
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn icmp(src: IpAddr, dst: IpAddr, ty: u8, code: u8) -> Frame {
        Frame::ip(
            src,
            dst,
            Transport::Icmp {
                v6: false,
                ty,
                code,
                rest: [0; 4],
            },
        )
    }

    /// An ICMPv6 message (next header 58; an 8-byte header whose last 4 bytes are zero).
    /// The hop limit is the default 64; Neighbor Discovery wants `.hop_limit(255)` (or use
    /// [`Frame::neighbor_solicitation`]). With IPv4 addresses this is IPv4 protocol 58.
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn icmpv6(src: IpAddr, dst: IpAddr, ty: u8, code: u8) -> Frame {
        Frame::ip(
            src,
            dst,
            Transport::Icmp {
                v6: true,
                ty,
                code,
                rest: [0; 4],
            },
        )
    }

    /// A Neighbor Solicitation for `target` from `src`, as a host sends it: to the
    /// solicited-node multicast address and its MAC, hop limit 255.
    pub fn neighbor_solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Frame {
        let t = target.octets();
        let dst = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        Frame::icmpv6(src.into(), dst.into(), 135, 0)
            .hop_limit(255)
            .payload(&t)
            .dst_mac([0x33, 0x33, 0xff, t[13], t[14], t[15]])
    }

    /// An IP packet with protocol (next header) `proto` and `payload` as everything after
    /// the IP header (and extension headers). Nothing is parsed or fixed up in the payload,
    /// so `Frame::ip_proto(s, d, 6, &[0; 10])` is a 10-byte TCP "segment".
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn ip_proto(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Frame {
        Frame::ip(src, dst, Transport::Raw { proto }).payload(payload)
    }

    /// An ARP request (who-has 10.0.0.1 tell 10.0.0.2) to the broadcast MAC.
    pub fn arp() -> Frame {
        Frame::arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1))
    }

    /// An ARP request from `sender` for `target`, to the broadcast MAC.
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Frame {
        let mut body = Vec::with_capacity(28);
        body.extend_from_slice(&[0, 1]); // hardware type Ethernet
        body.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        body.extend_from_slice(&[6, 4, 0, 1]); // sizes, opcode request
        body.extend_from_slice(&DEFAULT_SRC_MAC);
        body.extend_from_slice(&sender.octets());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&target.octets());
        Frame::ethertype(ETHERTYPE_ARP, &body).dst_mac([0xff; 6])
    }

    /// A frame with an arbitrary ethertype (or 802.3 length) and `payload` after it.
    pub fn ethertype(ethertype: u16, payload: &[u8]) -> Frame {
        Frame::with_net(Net::Raw { ethertype }, payload.to_vec())
    }

    // ----- Ethernet -----

    /// Sets the destination MAC.
    pub fn dst_mac(mut self, mac: [u8; 6]) -> Frame {
        self.dst_mac = mac;
        self
    }

    /// Sets the source MAC.
    pub fn src_mac(mut self, mac: [u8; 6]) -> Frame {
        self.src_mac = mac;
        self
    }

    /// Adds an 802.1Q tag with VLAN id `id` (12 bits; PCP and DEI zero). Tags are written in
    /// call order, outermost first; repeat for stacked tags.
    pub fn vlan(self, id: u16) -> Frame {
        self.vlan_tag(TPID_8021Q, id & 0x0fff)
    }

    /// Adds QinQ tags: an 802.1ad (0x88A8) tag with `outer`, then an 802.1Q tag with `inner`.
    pub fn qinq(self, outer: u16, inner: u16) -> Frame {
        self.vlan_tag(TPID_8021AD, outer & 0x0fff)
            .vlan_tag(TPID_8021Q, inner & 0x0fff)
    }

    /// Adds a tag with an arbitrary TPID and TCI (written as given).
    pub fn vlan_tag(mut self, tpid: u16, tci: u16) -> Frame {
        self.tags.push((tpid, tci));
        self
    }

    /// Overrides the innermost ethertype (by default it follows the layer built), e.g. to
    /// label an IPv6 packet as IPv4.
    pub fn set_ethertype(mut self, ethertype: u16) -> Frame {
        self.ethertype = Some(ethertype);
        self
    }

    /// Replaces the payload: the bytes after the TCP/UDP/ICMP header, all of the IP payload
    /// for [`Frame::ip_proto`], or everything after the ethertype for [`Frame::ethertype`].
    pub fn payload(mut self, bytes: &[u8]) -> Frame {
        self.payload = bytes.to_vec();
        self
    }

    /// Appends zero bytes after the packet until the frame is `len` bytes long, like
    /// Ethernet padding to the 60-byte minimum. IP lengths do not count them.
    pub fn pad_to(mut self, len: usize) -> Frame {
        self.pad_to = Some(len);
        self
    }

    /// Cuts the finished frame (after padding) to at most `len` bytes. Length fields keep
    /// describing the uncut packet, so this makes truncated frames.
    pub fn truncate(mut self, len: usize) -> Frame {
        self.truncate = Some(len);
        self
    }

    // ----- IP, both families -----

    fn ip_mut(&mut self, what: &str) -> &mut Ip {
        match &mut self.net {
            Net::Ip(ip) => ip,
            Net::Raw { .. } => panic!("craft: {what} on a frame without an IP layer"),
        }
    }

    fn ipv4_mut(&mut self, what: &str) -> &mut Ip {
        let ip = self.ip_mut(what);
        assert!(ip.src.is_ipv4(), "craft: {what} on an IPv6 frame");
        ip
    }

    fn ipv6_mut(&mut self, what: &str) -> &mut Ip {
        let ip = self.ip_mut(what);
        assert!(ip.src.is_ipv6(), "craft: {what} on an IPv4 frame");
        ip
    }

    /// Sets the IPv4 TTL or the IPv6 hop limit (default 64).
    ///
    /// # Panics
    /// If the frame has no IP layer (also for all following IP setters).
    pub fn ttl(mut self, ttl: u8) -> Frame {
        self.ip_mut("ttl").ttl = ttl;
        self
    }

    /// Sets the IPv6 hop limit (or IPv4 TTL); the same as [`Frame::ttl`].
    pub fn hop_limit(self, hop_limit: u8) -> Frame {
        self.ttl(hop_limit)
    }

    /// Overrides the version nibble (by default 4 or 6).
    pub fn version(mut self, version: u8) -> Frame {
        self.ip_mut("version").version = Some(version & 0x0f);
        self
    }

    /// Overrides the protocol: the IPv4 protocol field, or the IPv6 Next Header that
    /// announces the transport (the last one of the extension-header chain). The transport
    /// bytes are still those of the constructor.
    pub fn protocol(mut self, proto: u8) -> Frame {
        self.ip_mut("protocol").protocol = Some(proto);
        self
    }

    /// Cuts the transport segment (header and payload) to `len` bytes *before* the IP
    /// lengths are computed: the packet is consistent but its L4 header is short.
    pub fn l4_truncate(mut self, len: usize) -> Frame {
        self.ip_mut("l4_truncate").l4_len = Some(len);
        self
    }

    // ----- IPv4 -----

    /// Adds IPv4 options (zero-padded to a multiple of 4 bytes); the IHL follows.
    ///
    /// # Panics
    /// If the frame is not IPv4 (also for all following IPv4 setters).
    pub fn ipv4_options(mut self, options: &[u8]) -> Frame {
        let ip = self.ipv4_mut("ipv4_options");
        ip.options = options.to_vec();
        let padded = ip.options.len().div_ceil(4) * 4;
        ip.options.resize(padded, 0);
        self
    }

    /// Overrides the IHL nibble (header bytes written stay 20 plus options).
    pub fn ihl(mut self, ihl: u8) -> Frame {
        self.ipv4_mut("ihl").ihl = Some(ihl & 0x0f);
        self
    }

    /// Overrides the IPv4 total length.
    pub fn tot_len(mut self, tot_len: u16) -> Frame {
        self.ipv4_mut("tot_len").tot_len = Some(tot_len);
        self
    }

    /// Sets the IPv4 identification.
    pub fn ipv4_id(mut self, id: u16) -> Frame {
        self.ipv4_mut("ipv4_id").id = id;
        self
    }

    /// Makes an IPv4 fragment: offset in 8-byte units (13 bits), the MF flag, and the
    /// identification. The bytes after the header are still the constructor's transport.
    pub fn ipv4_fragment(mut self, offset_units: u16, more_fragments: bool, id: u16) -> Frame {
        let ip = self.ipv4_mut("ipv4_fragment");
        ip.id = id;
        ip.frag_word = (ip.frag_word & 0xc000)
            | (offset_units & 0x1fff)
            | if more_fragments { 0x2000 } else { 0 };
        self
    }

    /// Sets the IPv4 DF (don't fragment) flag.
    pub fn dont_fragment(mut self) -> Frame {
        self.ipv4_mut("dont_fragment").frag_word |= 0x4000;
        self
    }

    /// Sets the IPv4 reserved ("evil") flag bit 0x8000.
    pub fn reserved_flag(mut self) -> Frame {
        self.ipv4_mut("reserved_flag").frag_word |= 0x8000;
        self
    }

    // ----- IPv6 -----

    /// Appends an IPv6 extension header; headers are written in call order between the
    /// fixed header and the transport.
    ///
    /// # Panics
    /// If the frame is not IPv6 (also for the following IPv6 setters).
    pub fn ipv6_ext(mut self, header: ExtHeader) -> Frame {
        self.ipv6_mut("ipv6_ext").ext.push(header);
        self
    }

    /// Appends a Fragment header: [`ExtHeader::fragment`].
    pub fn ipv6_fragment(self, offset_units: u16, more: bool, id: u32) -> Frame {
        self.ipv6_ext(ExtHeader::fragment(offset_units, more, id))
    }

    /// Overrides the IPv6 payload length.
    pub fn payload_len(mut self, len: u16) -> Frame {
        self.ipv6_mut("payload_len").payload_len = Some(len);
        self
    }

    // ----- Transport -----

    fn tcp_mut(&mut self, what: &str) -> (&mut u8, &mut Option<u8>) {
        match &mut self.ip_mut(what).transport {
            Transport::Tcp {
                flags, data_offset, ..
            } => (flags, data_offset),
            _ => panic!("craft: {what} on a frame that is not TCP"),
        }
    }

    /// Sets the TCP flags to exactly SYN.
    ///
    /// # Panics
    /// If the frame was not made by [`Frame::tcp`] (also for the following TCP setters).
    pub fn syn(self) -> Frame {
        self.flags(tcp_flags::SYN)
    }

    /// Sets the TCP flags to exactly ACK.
    pub fn ack(self) -> Frame {
        self.flags(tcp_flags::ACK)
    }

    /// Sets the TCP flags to exactly SYN|ACK.
    pub fn syn_ack(self) -> Frame {
        self.flags(tcp_flags::SYN | tcp_flags::ACK)
    }

    /// Sets the TCP flags byte (see [`tcp_flags`]).
    pub fn flags(mut self, flags: u8) -> Frame {
        *self.tcp_mut("flags").0 = flags;
        self
    }

    /// Overrides the TCP data offset nibble (the header written stays 20 bytes).
    pub fn tcp_data_offset(mut self, doff: u8) -> Frame {
        *self.tcp_mut("tcp_data_offset").1 = Some(doff & 0x0f);
        self
    }

    /// Sets the last 4 bytes of an ICMP/ICMPv6 header to an echo's identifier and sequence
    /// number (RFC 792, RFC 4443).
    ///
    /// # Panics
    /// If the frame was not made by [`Frame::icmp`] or [`Frame::icmpv6`].
    pub fn echo(mut self, id: u16, seq: u16) -> Frame {
        match &mut self.ip_mut("echo").transport {
            Transport::Icmp { rest, .. } => {
                rest[..2].copy_from_slice(&id.to_be_bytes());
                rest[2..].copy_from_slice(&seq.to_be_bytes());
            }
            _ => panic!("craft: echo on a frame that is not ICMP"),
        }
        self
    }

    /// Overrides the UDP length field.
    ///
    /// # Panics
    /// If the frame was not made by [`Frame::udp`].
    pub fn udp_len(mut self, len: u16) -> Frame {
        match &mut self.ip_mut("udp_len").transport {
            Transport::Udp { len: l, .. } => *l = Some(len),
            _ => panic!("craft: udp_len on a frame that is not UDP"),
        }
        self
    }

    // ----- Output -----

    /// The IP source address, if the frame has an IP layer.
    pub fn src(&self) -> Option<IpAddr> {
        match &self.net {
            Net::Ip(ip) => Some(ip.src),
            Net::Raw { .. } => None,
        }
    }

    /// Writes the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.payload.len());
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for (tpid, tci) in &self.tags {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        let ethertype = match &self.net {
            Net::Raw { ethertype } => *ethertype,
            Net::Ip(ip) if ip.src.is_ipv4() => ETHERTYPE_IPV4,
            Net::Ip(_) => ETHERTYPE_IPV6,
        };
        out.extend_from_slice(&self.ethertype.unwrap_or(ethertype).to_be_bytes());
        match &self.net {
            Net::Raw { .. } => out.extend_from_slice(&self.payload),
            Net::Ip(ip) => ip.write(&self.payload, &mut out),
        }
        if let Some(len) = self.pad_to {
            if out.len() < len {
                out.resize(len, 0);
            }
        }
        if let Some(len) = self.truncate {
            out.truncate(len);
        }
        out
    }
}

impl From<&Frame> for Vec<u8> {
    fn from(frame: &Frame) -> Vec<u8> {
        frame.build()
    }
}

impl Ip {
    fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        let proto = self.protocol.unwrap_or(self.transport.proto());
        let mut l4 = self.transport_bytes(payload);
        if let Some(len) = self.l4_len {
            l4.truncate(len);
        }
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let hlen = 20 + self.options.len();
                let start = out.len();
                let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
                let tot_len = self.tot_len.unwrap_or((hlen + l4.len()) as u16);
                out.push((self.version.unwrap_or(4) << 4) | (ihl & 0x0f));
                out.push(0); // DSCP/ECN
                out.extend_from_slice(&tot_len.to_be_bytes());
                out.extend_from_slice(&self.id.to_be_bytes());
                out.extend_from_slice(&self.frag_word.to_be_bytes());
                out.extend_from_slice(&[self.ttl, proto, 0, 0]);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&self.options);
                let csum = checksum(&[&out[start..]]);
                out[start + 10..start + 12].copy_from_slice(&csum.to_be_bytes());
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut ext = Vec::new();
                for (i, header) in self.ext.iter().enumerate() {
                    let next = self.ext.get(i + 1).map_or(proto, ExtHeader::code);
                    header.write(next, &mut ext);
                }
                let first = self.ext.first().map_or(proto, ExtHeader::code);
                let plen = self.payload_len.unwrap_or((ext.len() + l4.len()) as u16);
                let version = u32::from(self.version.unwrap_or(6));
                out.extend_from_slice(&(version << 28).to_be_bytes());
                out.extend_from_slice(&plen.to_be_bytes());
                out.extend_from_slice(&[first, self.ttl]);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&ext);
            }
            _ => unreachable!("families checked at construction"),
        }
        out.extend_from_slice(&l4);
    }

    /// The transport header and payload, checksummed as if unfragmented.
    fn transport_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let mut seg = Vec::with_capacity(20 + payload.len());
        let csum_at = match &self.transport {
            Transport::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                data_offset,
            } => {
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.push(data_offset.unwrap_or(5) << 4);
                seg.push(*flags);
                seg.extend_from_slice(&window.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                Some(16)
            }
            Transport::Udp { sport, dport, len } => {
                let len = len.unwrap_or((8 + payload.len()) as u16);
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&len.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                Some(6)
            }
            Transport::Icmp { ty, code, rest, .. } => {
                seg.extend_from_slice(&[*ty, *code, 0, 0]);
                seg.extend_from_slice(rest);
                Some(2)
            }
            Transport::Raw { .. } => None,
        };
        seg.extend_from_slice(payload);
        if let Some(at) = csum_at {
            let proto = self.transport.proto();
            let len = (seg.len() as u32).to_be_bytes();
            let csum = match (self.src, self.dst) {
                // ICMPv4 has no pseudo-header.
                _ if proto == proto::ICMP => checksum(&[&seg]),
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    let pseudo = [&s.octets()[..], &d.octets(), &[0, proto], &len[2..]];
                    checksum(&[&pseudo.concat(), &seg])
                }
                (s, d) => {
                    let (s, d) = (to_v6(s), to_v6(d));
                    let pseudo = [&s.octets()[..], &d.octets(), &len, &[0, 0, 0, proto]];
                    checksum(&[&pseudo.concat(), &seg])
                }
            };
            // UDP transmits a computed zero as all ones (RFC 768).
            let csum = if proto == proto::UDP && csum == 0 {
                0xffff
            } else {
                csum
            };
            seg[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        }
        seg
    }
}

fn to_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`; each part but the last
/// must have an even length.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests;
