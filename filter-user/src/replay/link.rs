//! Link types: what a capture's frames are, and the Ethernet frame an XDP program on an
//! Ethernet NIC would have seen for them.
//!
//! Linux cooked captures (`tcpdump -i any`: SLL, SLL2), raw IP (`LINKTYPE_RAW`, `IPV4`,
//! `IPV6`) and BSD loopback (`NULL`, `LOOP`) carry the network-layer packet whole; only the
//! link header differs, so each becomes an Ethernet frame with the same ethertype and
//! payload. Other link types (802.11, PPP, …) are refused by name: judging them as Ethernet
//! would only produce malformed-frame verdicts.

/// How a capture's frames turn into Ethernet frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Ethernet already.
    Ethernet,
    /// Linux cooked capture v1 (16-byte header, protocol at 14).
    LinuxSll,
    /// Linux cooked capture v2 (20-byte header, protocol at 0).
    LinuxSll2,
    /// An IP packet, version in its first nibble.
    RawIp,
    /// BSD loopback: a 4-byte address family, host byte order (`NULL`) or network order
    /// (`LOOP`).
    Loopback {
        /// The family word is big-endian.
        network_order: bool,
    },
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The libpcap name of a link type, for messages.
pub fn linktype_name(linktype: i32) -> String {
    let name = match linktype {
        0 => "NULL",
        1 => "ETHERNET",
        9 => "PPP",
        101 => "RAW",
        105 => "IEEE802_11",
        108 => "LOOP",
        113 => "LINUX_SLL",
        127 => "IEEE802_11_RADIOTAP",
        228 => "IPV4",
        229 => "IPV6",
        276 => "LINUX_SLL2",
        _ => return format!("{linktype}"),
    };
    format!("{name} ({linktype})")
}

impl Link {
    /// The link of a libpcap link type; `Err` names what is not supported.
    pub fn of(linktype: i32) -> Result<Link, String> {
        Ok(match linktype {
            1 => Link::Ethernet,
            113 => Link::LinuxSll,
            276 => Link::LinuxSll2,
            // DLT_RAW is 12 or 14 on some BSDs; LINKTYPE_RAW, IPV4 and IPV6.
            12 | 14 | 101 | 228 | 229 => Link::RawIp,
            0 => Link::Loopback {
                network_order: false,
            },
            108 => Link::Loopback {
                network_order: true,
            },
            other => return Err(linktype_name(other)),
        })
    }

    /// Bytes of link header before the network-layer packet.
    fn header_len(self) -> usize {
        match self {
            Link::Ethernet => 0,
            Link::LinuxSll => 16,
            Link::LinuxSll2 => 20,
            Link::RawIp => 0,
            Link::Loopback { .. } => 4,
        }
    }

    /// The Ethernet frame for captured bytes `data`, and how much longer it is than the
    /// original (Ethernet's 14 bytes minus this link's header). `None` when the link header
    /// itself was not captured whole.
    pub fn to_ethernet(self, data: &[u8]) -> Option<(Vec<u8>, isize)> {
        if self == Link::Ethernet {
            return Some((data.to_vec(), 0));
        }
        let payload = data.get(self.header_len()..)?;
        let by_version = || match payload.first().map(|b| b >> 4) {
            Some(6) => ETHERTYPE_IPV6,
            _ => ETHERTYPE_IPV4,
        };
        let (ethertype, src) = match self {
            Link::Ethernet => unreachable!("returned above"),
            Link::LinuxSll => {
                let addr_len = u16::from_be_bytes([data[4], data[5]]);
                let src = (addr_len == 6).then(|| data[6..12].try_into().expect("6 bytes"));
                (u16::from_be_bytes([data[14], data[15]]), src)
            }
            Link::LinuxSll2 => {
                let src = (data[11] == 6).then(|| data[12..18].try_into().expect("6 bytes"));
                (u16::from_be_bytes([data[0], data[1]]), src)
            }
            Link::RawIp => (by_version(), None),
            Link::Loopback { network_order } => {
                let word: [u8; 4] = data[..4].try_into().expect("4 bytes");
                let family = if network_order {
                    u32::from_be_bytes(word)
                } else {
                    u32::from_le_bytes(word).min(u32::from_be_bytes(word))
                };
                // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24, 28 or 30 (BSDs).
                match family {
                    2 => (ETHERTYPE_IPV4, None),
                    10 | 24 | 28 | 30 => (ETHERTYPE_IPV6, None),
                    _ => (by_version(), None),
                }
            }
        };
        let mut frame = Vec::with_capacity(14 + payload.len());
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&src.unwrap_or([0, 0, 0, 0, 0, 2]));
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        Some((frame, 14 - self.header_len() as isize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPV4: [u8; 4] = [0x45, 0, 0, 20];

    #[test]
    fn every_supported_link_becomes_the_same_ethernet_frame() {
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&IPV4);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0,
        ];
        sll2.extend_from_slice(&IPV4);
        let null = [&[2u8, 0, 0, 0][..], &IPV4].concat();
        let lo = [&[0u8, 0, 0, 2][..], &IPV4].concat();
        for (linktype, data, delta) in [
            (113, sll, -2),
            (276, sll2, -6),
            (101, IPV4.to_vec(), 14),
            (0, null, 10),
            (108, lo, 10),
        ] {
            let (frame, d) = Link::of(linktype).unwrap().to_ethernet(&data).unwrap();
            assert_eq!(&frame[12..14], &[0x08, 0x00], "{linktype}");
            assert_eq!(&frame[14..], &IPV4, "{linktype}");
            assert_eq!(d, delta, "{linktype}");
        }
        let v6 = [0x60, 0, 0, 0];
        let (frame, _) = Link::RawIp.to_ethernet(&v6).unwrap();
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(Link::LinuxSll.to_ethernet(&[0; 10]), None, "header cut");
        assert_eq!(Link::of(105).unwrap_err(), "IEEE802_11 (105)");
        assert_eq!(Link::of(4242).unwrap_err(), "4242");
    }
}
