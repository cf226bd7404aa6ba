//! The TCP connections this host had established when a confirmed change began: the
//! operator's SSH session, the API server's connections to the kubelet. A drop sample of one
//! of them under the new rules means the change cuts a live session, and it is rolled back
//! (`watch_established`, on by default).

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::samples::DecodedSample;

/// `st` of an established socket in `/proc/net/tcp`.
const TCP_ESTABLISHED: &str = "01";
const IPPROTO_TCP: u8 = 6;

/// One established connection, seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection {
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// Our port.
    pub local_port: u16,
}

impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → local port {}", self.remote, self.local_port)
    }
}

/// The connections established when a change began.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Established(HashSet<Connection>);

impl Established {
    /// Read this network namespace's established TCP connections (loopback peers left out:
    /// their packets never cross an interface the filter runs on).
    pub fn snapshot() -> Established {
        let mut all = HashSet::new();
        for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(path) {
                all.extend(parse(&text));
            }
        }
        Established(all)
    }

    /// From a list (tests).
    pub fn from_connections(list: impl IntoIterator<Item = Connection>) -> Established {
        Established(list.into_iter().collect())
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The connection a dropped packet belonged to, if it is one of ours.
    pub fn cut_by(&self, sample: &DecodedSample) -> Option<Connection> {
        if sample.proto != IPPROTO_TCP || sample.monitor {
            return None;
        }
        let conn = Connection {
            remote: SocketAddr::new(sample.src?.to_canonical(), sample.sport),
            local_port: sample.dport,
        };
        self.0.contains(&conn).then_some(conn)
    }

    /// Every connection.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.0.iter()
    }
}

/// The established, non-loopback connections of a `/proc/net/tcp` or `/proc/net/tcp6` text.
pub fn parse(text: &str) -> Vec<Connection> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _slot = words.next()?;
            let local = words.next()?;
            let remote = words.next()?;
            if words.next()? != TCP_ESTABLISHED {
                return None;
            }
            let (_, local_port) = endpoint(local)?;
            let (addr, port) = endpoint(remote)?;
            let addr = addr.to_canonical();
            (!addr.is_loopback()).then_some(Connection {
                remote: SocketAddr::new(addr, port),
                local_port,
            })
        })
        .collect()
}

/// `0100007F:0016`: the address as the kernel's in-memory words in hex (each 32-bit word in
/// host byte order), the port in hex.
fn endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if addr.len() != 8 && addr.len() != 32 {
        return None;
    }
    let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
        .map(|i| {
            let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
            Some(word.to_ne_bytes())
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let addr = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on a little-endian host: 192.0.2.1:22 ← 192.0.2.9:51000 established, a
    // listener, a loopback connection, and one IPv4-mapped IPv6 connection to port 10250.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 010200C0:0016 090200C0:C738 01 00000000:00000000 02:000A7DC2 00000000     0        0 2 4 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D6D8 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF0000010200C0:280A 0000000000000000FFFF0000090200C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   1: B80D01200000000000000000010000000:0016 B80D0120000000000000000009000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
";

    fn sample(src: &str, sport: u16, dport: u16) -> DecodedSample {
        DecodedSample {
            ifindex: 2,
            reason: None,
            reason_code: 0,
            rule_slot: None,
            family: 4,
            proto: IPPROTO_TCP,
            src: Some(src.parse().unwrap()),
            dst: None,
            sport,
            dport,
            monitor: false,
        }
    }

    #[test]
    fn established_non_loopback_connections_are_read() {
        if cfg!(target_endian = "big") {
            return;
        }
        let v4 = parse(TCP);
        assert_eq!(
            v4,
            vec![Connection {
                remote: "192.0.2.9:51000".parse().unwrap(),
                local_port: 22
            }]
        );
        let v6 = parse(TCP6);
        assert_eq!(
            v6[0],
            Connection {
                remote: "192.0.2.9:40000".parse().unwrap(),
                local_port: 10250
            },
            "IPv4-mapped peers are IPv4"
        );
        assert_eq!(v6.len(), 1, "a malformed line is skipped: {v6:?}");
        let known = Established::from_connections(v4.into_iter().chain(v6));
        assert_eq!(
            known.cut_by(&sample("192.0.2.9", 51000, 22)),
            Some(known.iter().find(|c| c.local_port == 22).copied().unwrap())
        );
        assert_eq!(known.cut_by(&sample("192.0.2.9", 51001, 22)), None);
        let mut monitor = sample("192.0.2.9", 51000, 22);
        monitor.monitor = true;
        assert_eq!(known.cut_by(&monitor), None, "monitor mode cuts nothing");
    }

    #[test]
    fn this_hosts_own_table_reads() {
        // Whatever is established here, every entry is a real, non-loopback peer.
        for conn in Established::snapshot().iter() {
            assert!(!conn.remote.ip().is_loopback(), "{conn}");
            assert_ne!(conn.local_port, 0, "{conn}");
        }
    }
}
