//! A seeded traffic generator for realistic Kubernetes-node captures, written with the
//! [`crate::craft`] packet builder: control plane → 443 / 10250 / high ports, node to node,
//! return traffic to connections the node opened, scans from outside, essentials (ARP,
//! Neighbor Discovery, ICMP errors), and malformed and evasive frames — IPv4 and IPv6 mixed.
//! The same seed gives the same frames byte for byte (ChaCha8, a portable generator).
//!
//! The default [`Profile`] uses the address plan of `examples/eks-node.yaml`, so a capture
//! replayed against that file exercises every rule.
//!
//! ```
//! use filter_user::traffic::{generate, Profile};
//!
//! let a = generate(&Profile::default(), 500, 7);
//! let b = generate(&Profile::default(), 500, 7);
//! assert_eq!(a.len(), 500);
//! assert!(a.iter().zip(&b).all(|(x, y)| x.data == y.data));
//! ```

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
};

use ipnet::{Ipv4Net, Ipv6Net};
use rand::{rngs::ChaCha8Rng, Rng, RngExt, SeedableRng};

use crate::craft::{proto, tcp_flags, ExtHeader, Frame, TPID_8021AD, TPID_8021Q};

/// What kind of traffic a generated frame stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Control plane → node: TCP 443, 10250, TCP/UDP high ports.
    ControlPlane,
    /// Node (or VPC-CNI pod) → node: any protocol.
    NodeToNode,
    /// Load balancer / VPC → NodePorts and ICMP echo.
    Vpc,
    /// Administrators: SSH (the failsafe rule).
    Admin,
    /// Replies to connections the node opened (image pulls, DNS, API calls).
    ReturnTraffic,
    /// Port scans and probes from outside.
    Scan,
    /// ARP, Neighbor Discovery, ICMP errors (PMTU).
    Essential,
    /// Truncated, invalid, fragmented and evasive frames.
    Malformed,
}

impl Category {
    /// Every category with its default share of the mix (per mille).
    pub const MIX: [(Category, u32); 8] = [
        (Category::ControlPlane, 220),
        (Category::NodeToNode, 200),
        (Category::Vpc, 60),
        (Category::Admin, 20),
        (Category::ReturnTraffic, 200),
        (Category::Scan, 150),
        (Category::Essential, 50),
        (Category::Malformed, 100),
    ];

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Category::ControlPlane => "control-plane",
            Category::NodeToNode => "node-to-node",
            Category::Vpc => "vpc",
            Category::Admin => "admin",
            Category::ReturnTraffic => "return-traffic",
            Category::Scan => "scan",
            Category::Essential => "essential",
            Category::Malformed => "malformed",
        }
    }
}

/// The address plan of the node and its cluster.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The node's IPv4 address (destination of inbound traffic).
    pub node_v4: Ipv4Addr,
    /// The node's IPv6 address.
    pub node_v6: Ipv6Addr,
    /// Control-plane ENI subnets.
    pub control_plane_v4: Vec<Ipv4Net>,
    /// Control-plane IPv6 subnets.
    pub control_plane_v6: Vec<Ipv6Net>,
    /// Worker node subnets.
    pub nodes_v4: Vec<Ipv4Net>,
    /// Worker node IPv6 subnets.
    pub nodes_v6: Vec<Ipv6Net>,
    /// The VPC (load balancers, health checks).
    pub vpc_v4: Vec<Ipv4Net>,
    /// The VPC's IPv6 block.
    pub vpc_v6: Vec<Ipv6Net>,
    /// Administrator addresses.
    pub admin_v4: Vec<Ipv4Net>,
    /// The node's ephemeral port range (destination of return traffic).
    pub ephemeral: RangeInclusive<u16>,
    /// Share of IPv6 frames, per mille.
    pub ipv6_per_mille: u32,
}

impl Default for Profile {
    /// The address plan of `examples/eks-node.yaml`.
    fn default() -> Self {
        let v4 = |s: &str| s.parse::<Ipv4Net>().expect("valid literal");
        let v6 = |s: &str| s.parse::<Ipv6Net>().expect("valid literal");
        Profile {
            node_v4: Ipv4Addr::new(10, 0, 32, 10),
            node_v6: "2001:db8:100:20::10".parse().expect("valid literal"),
            control_plane_v4: vec![v4("10.0.0.0/28"), v4("10.0.0.16/28")],
            control_plane_v6: vec![v6("2001:db8:100::/64")],
            nodes_v4: vec![v4("10.0.32.0/19"), v4("10.0.64.0/19")],
            nodes_v6: vec![v6("2001:db8:100:20::/60")],
            vpc_v4: vec![v4("10.0.0.0/16")],
            vpc_v6: vec![v6("2001:db8:100::/56")],
            admin_v4: vec![v4("198.51.100.0/28")],
            ephemeral: 32768..=60999,
            ipv6_per_mille: 300,
        }
    }
}

/// One generated frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// What it stands for.
    pub category: Category,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

/// Frames per category.
pub fn category_counts(frames: &[Generated]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for f in frames {
        *counts.entry(f.category.name()).or_default() += 1;
    }
    counts
}

/// `count` frames of the default mix, reproducible from `seed`.
pub fn generate(profile: &Profile, count: usize, seed: u64) -> Vec<Generated> {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
        p: profile,
    };
    let total: u32 = Category::MIX.iter().map(|(_, w)| w).sum();
    (0..count)
        .flat_map(|_| {
            let mut pick = g.rng.random_range(0..total);
            let category = Category::MIX
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map(|(c, _)| *c)
                .unwrap_or(Category::Scan);
            g.frames(category)
                .into_iter()
                .map(move |data| Generated { category, data })
        })
        .take(count)
        .collect()
}

struct Gen<'p> {
    rng: ChaCha8Rng,
    p: &'p Profile,
}

/// Ports a scanner tries first.
const SCAN_PORTS: [u16; 12] = [
    22, 23, 80, 443, 445, 2379, 3389, 6443, 8080, 10250, 10255, 30080,
];

impl Gen<'_> {
    fn v6(&mut self) -> bool {
        self.rng.random_range(0..1000) < self.p.ipv6_per_mille
    }

    fn in_v4(&mut self, nets: &[Ipv4Net]) -> IpAddr {
        let net = nets[self.rng.random_range(0..nets.len())];
        let size = 1u64 << (32 - net.prefix_len());
        let host = if size > 2 {
            self.rng.random_range(1..size - 1)
        } else {
            0
        };
        IpAddr::V4(Ipv4Addr::from(u32::from(net.network()) + host as u32))
    }

    fn in_v6(&mut self, nets: &[Ipv6Net]) -> IpAddr {
        let net = nets[self.rng.random_range(0..nets.len())];
        let host_bits = 128 - u32::from(net.prefix_len());
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let host = (u128::from(self.rng.random::<u64>()) & mask).max(1);
        IpAddr::V6(Ipv6Addr::from(u128::from(net.network()) | host))
    }

    /// Source and destination of the family picked for this frame.
    fn pair(&mut self, v4: &[Ipv4Net], v6: &[Ipv6Net]) -> (IpAddr, IpAddr) {
        if !v6.is_empty() && (v4.is_empty() || self.v6()) {
            (self.in_v6(v6), IpAddr::V6(self.p.node_v6))
        } else {
            (self.in_v4(v4), IpAddr::V4(self.p.node_v4))
        }
    }

    /// An address from anywhere on the internet.
    fn outside(&mut self, v6: bool) -> (IpAddr, IpAddr) {
        if v6 {
            let addr = (0x2000u128 << 112)
                | (u128::from(self.rng.random::<u64>()) << 48)
                | u128::from(self.rng.random::<u32>());
            (IpAddr::V6(Ipv6Addr::from(addr)), IpAddr::V6(self.p.node_v6))
        } else {
            let a = self.rng.random_range(1u32..224) << 24 | self.rng.random_range(0u32..1 << 24);
            (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(self.p.node_v4))
        }
    }

    fn sport(&mut self) -> u16 {
        self.rng.random_range(32768..=60999)
    }

    fn data(&mut self, max: usize) -> Vec<u8> {
        let len = self.rng.random_range(0..=max);
        let mut v = vec![0u8; len];
        self.rng.fill_bytes(&mut v);
        v
    }

    fn frames(&mut self, category: Category) -> Vec<Vec<u8>> {
        match category {
            Category::ControlPlane => vec![self.control_plane()],
            Category::NodeToNode => vec![self.node_to_node()],
            Category::Vpc => vec![self.vpc()],
            Category::Admin => {
                let (src, dst) = (
                    self.in_v4(&self.p.admin_v4.clone()),
                    IpAddr::V4(self.p.node_v4),
                );
                let sport = self.sport();
                vec![Frame::tcp(src, dst, sport, 22)
                    .flags(tcp_flags::ACK | tcp_flags::PSH)
                    .payload(&self.data(200))
                    .build()]
            }
            Category::ReturnTraffic => vec![self.return_traffic()],
            Category::Scan => vec![self.scan()],
            Category::Essential => vec![self.essential()],
            Category::Malformed => self.malformed(),
        }
    }

    fn control_plane(&mut self) -> Vec<u8> {
        let (cp4, cp6) = (
            self.p.control_plane_v4.clone(),
            self.p.control_plane_v6.clone(),
        );
        let (src, dst) = self.pair(&cp4, &cp6);
        let sport = self.sport();
        let payload = self.data(1200);
        match self.rng.random_range(0..10) {
            0..=3 => Frame::tcp(src, dst, sport, 443)
                .flags(tcp_flags::ACK | tcp_flags::PSH)
                .payload(&payload)
                .build(),
            4 => Frame::tcp(src, dst, sport, 443).syn().build(),
            5..=7 => Frame::tcp(src, dst, sport, 10250)
                .flags(tcp_flags::ACK | tcp_flags::PSH)
                .payload(&payload)
                .build(),
            8 => {
                let port = self.rng.random_range(1025..=65535);
                Frame::tcp(src, dst, sport, port).syn().build()
            }
            _ => {
                let port = self.rng.random_range(1025..=65535);
                Frame::udp(src, dst, sport, port)
                    .payload(&payload[..payload.len().min(200)])
                    .build()
            }
        }
    }

    fn node_to_node(&mut self) -> Vec<u8> {
        let (n4, n6) = (self.p.nodes_v4.clone(), self.p.nodes_v6.clone());
        let (src, dst) = self.pair(&n4, &n6);
        let sport = self.sport();
        let payload = self.data(1400);
        match self.rng.random_range(0..10) {
            0..=2 => {
                let port = [8080, 9100, 10250, 6443, 5473][self.rng.random_range(0..5)];
                Frame::tcp(src, dst, sport, port)
                    .flags(tcp_flags::ACK | tcp_flags::PSH)
                    .payload(&payload)
                    .build()
            }
            3..=4 => Frame::udp(src, dst, sport, 53)
                .payload(&payload[..payload.len().min(100)])
                .build(),
            5..=6 => Frame::udp(src, dst, sport, 4789).payload(&payload).build(),
            7 => match (src, dst) {
                (IpAddr::V4(_), _) => Frame::icmp(src, dst, 8, 0)
                    .payload(&payload[..payload.len().min(56)])
                    .build(),
                _ => Frame::icmpv6(src, dst, 128, 0)
                    .payload(&payload[..payload.len().min(56)])
                    .build(),
            },
            _ => {
                let port = self.rng.random_range(1..=65535);
                Frame::tcp(src, dst, sport, port).syn().build()
            }
        }
    }

    fn vpc(&mut self) -> Vec<u8> {
        let (v4, v6) = (self.p.vpc_v4.clone(), self.p.vpc_v6.clone());
        let (src, dst) = self.pair(&v4, &v6);
        let sport = self.sport();
        match (self.rng.random_range(0..4), src) {
            (0, IpAddr::V4(_)) => Frame::icmp(src, dst, 8, 0).payload(&[0x5a; 56]).build(),
            (0, IpAddr::V6(_)) => Frame::icmpv6(src, dst, 128, 0).payload(&[0x5a; 56]).build(),
            // Something in the VPC probing a port no rule opens to it.
            (1, _) => Frame::tcp(
                src,
                dst,
                sport,
                [22, 80, 2379, 9100][self.rng.random_range(0..4)],
            )
            .syn()
            .build(),
            _ => {
                let port = self.rng.random_range(30000..=32767);
                Frame::tcp(src, dst, sport, port).syn().build()
            }
        }
    }

    fn return_traffic(&mut self) -> Vec<u8> {
        let v6 = self.v6();
        let (src, dst) = self.outside(v6);
        let port = self.rng.random_range(self.p.ephemeral.clone());
        match self.rng.random_range(0..10) {
            0..=6 => {
                let payload = self.data(1400);
                Frame::tcp(src, dst, 443, port)
                    .flags(tcp_flags::ACK | tcp_flags::PSH)
                    .payload(&payload)
                    .build()
            }
            7 => Frame::tcp(src, dst, 443, port).syn_ack().build(),
            _ => {
                let payload = self.data(300);
                Frame::udp(src, dst, 53, port).payload(&payload).build()
            }
        }
    }

    fn scan(&mut self) -> Vec<u8> {
        let v6 = self.v6();
        let (src, dst) = self.outside(v6);
        let sport = self.rng.random_range(1024..=65535);
        let port = if self.rng.random_bool(0.6) {
            SCAN_PORTS[self.rng.random_range(0..SCAN_PORTS.len())]
        } else {
            self.rng.random_range(1..=65535)
        };
        match self.rng.random_range(0..10) {
            0..=5 => Frame::tcp(src, dst, sport, port).syn().build(),
            6 => Frame::tcp(src, dst, sport, port)
                .flags(tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG)
                .build(),
            7 => Frame::tcp(src, dst, sport, port).flags(0).build(),
            8 => Frame::udp(src, dst, sport, port).build(),
            _ if v6 => Frame::icmpv6(src, dst, 128, 0).build(),
            _ => Frame::icmp(src, dst, 8, 0).build(),
        }
    }

    fn essential(&mut self) -> Vec<u8> {
        let (n4, n6) = (self.p.nodes_v4.clone(), self.p.nodes_v6.clone());
        match self.rng.random_range(0..6) {
            0 | 1 => {
                let IpAddr::V4(sender) = self.in_v4(&n4) else {
                    unreachable!()
                };
                Frame::arp_request(sender, self.p.node_v4).build()
            }
            2 => {
                let IpAddr::V6(src) = self.in_v6(&n6) else {
                    unreachable!()
                };
                Frame::neighbor_solicitation(src, self.p.node_v6).build()
            }
            3 => {
                // A router tells the node its packet was too big (PMTU discovery).
                let (src, _) = self.outside(false);
                let inner = Frame::tcp(IpAddr::V4(self.p.node_v4), src, self.sport(), 443)
                    .ack()
                    .build();
                Frame::icmp(src, IpAddr::V4(self.p.node_v4), 3, 4)
                    .payload(&inner[14..14 + 28])
                    .build()
            }
            4 => {
                let (src, _) = self.outside(true);
                let inner = Frame::tcp(IpAddr::V6(self.p.node_v6), src, self.sport(), 443)
                    .ack()
                    .build();
                Frame::icmpv6(src, IpAddr::V6(self.p.node_v6), 2, 0)
                    .payload(&inner[14..14 + 48])
                    .build()
            }
            _ => {
                let (src, _) = self.outside(false);
                let inner = Frame::udp(IpAddr::V4(self.p.node_v4), src, self.sport(), 53).build();
                Frame::icmp(src, IpAddr::V4(self.p.node_v4), 3, 3)
                    .payload(&inner[14..14 + 28])
                    .build()
            }
        }
    }

    /// Malformed and evasive frames; fragment pairs come as two frames, in order.
    fn malformed(&mut self) -> Vec<Vec<u8>> {
        let (cp4, cp6) = (
            self.p.control_plane_v4.clone(),
            self.p.control_plane_v6.clone(),
        );
        let v6 = self.v6();
        let (src, dst) = if self.rng.random_bool(0.5) {
            self.outside(v6)
        } else if v6 {
            self.pair(&[], &cp6)
        } else {
            self.pair(&cp4, &[])
        };
        let sport = self.sport();
        let id = self.rng.random::<u16>();
        let tcp = || Frame::tcp(src, dst, sport, 443).syn();
        let one = |f: Frame| vec![f.build()];
        match (self.rng.random_range(0..16), src) {
            (0, _) => vec![tcp().build()[..self.rng.random_range(1..14)].to_vec()],
            (1, IpAddr::V4(_)) => one(tcp().truncate(14 + 12)),
            (1, IpAddr::V6(_)) => one(tcp().truncate(14 + 30)),
            (2, IpAddr::V4(_)) => one(tcp().ihl(4)),
            (2, IpAddr::V6(_)) => one(tcp().version(4).set_ethertype(0x86DD)),
            (3, IpAddr::V4(_)) => one(tcp().tot_len(200)),
            (3, IpAddr::V6(_)) => one(tcp().payload_len(400)),
            (4, IpAddr::V4(_)) => one(tcp().ipv4_options(&[0x94, 0x04, 0, 0])),
            (4, IpAddr::V6(_)) => one(tcp()
                .ipv6_ext(ExtHeader::hop_by_hop())
                .ipv6_ext(ExtHeader::dest_opts())),
            (5, IpAddr::V4(_)) => one(tcp().reserved_flag()),
            (5, IpAddr::V6(_)) => one(tcp()
                .ipv6_ext(ExtHeader::dest_opts())
                .ipv6_ext(ExtHeader::hop_by_hop())),
            (6, _) => one(tcp().tcp_data_offset(3)),
            (7, _) => one(Frame::udp(src, dst, sport, 53).udp_len(4)),
            (8, _) => one(tcp().l4_truncate(10)),
            (9, IpAddr::V4(_)) => {
                // A datagram in two fragments: the first carries the ports, the second
                // must follow its verdict.
                let first = Frame::udp(src, dst, sport, 4789)
                    .payload(&[7; 64])
                    .ipv4_fragment(0, true, id)
                    .build();
                let second = Frame::ip_proto(src, dst, proto::UDP, &[7; 40])
                    .ipv4_fragment(9, false, id)
                    .build();
                vec![first, second]
            }
            (9, IpAddr::V6(_)) => {
                let first = Frame::udp(src, dst, sport, 4789)
                    .payload(&[7; 64])
                    .ipv6_fragment(0, true, u32::from(id))
                    .build();
                let second = Frame::ip_proto(src, dst, proto::UDP, &[7; 40])
                    .ipv6_fragment(9, false, u32::from(id))
                    .build();
                vec![first, second]
            }
            (10, IpAddr::V4(_)) => {
                one(Frame::ip_proto(src, dst, proto::TCP, &[1; 32]).ipv4_fragment(20, false, id))
            }
            (10, IpAddr::V6(_)) => one(Frame::ip_proto(src, dst, proto::TCP, &[1; 32])
                .ipv6_fragment(20, false, u32::from(id))),
            // A tiny first fragment: the TCP header would be split (evasion).
            (11, IpAddr::V4(_)) => {
                one(Frame::ip_proto(src, dst, proto::TCP, &[0; 8]).ipv4_fragment(0, true, id))
            }
            (11, IpAddr::V6(_)) => one(Frame::ip_proto(src, dst, proto::DEST_OPTS, &[0; 8])
                .ipv6_ext(ExtHeader::fragment(0, true, u32::from(id)))),
            (12, _) => one(tcp()
                .vlan_tag(TPID_8021AD, 10)
                .vlan_tag(TPID_8021Q, 20)
                .vlan_tag(TPID_8021Q, 30)),
            (13, _) => one(Frame::ethertype(
                [0x88CC, 0x8863, 0x0842, 0x22F0][self.rng.random_range(0..4)],
                &[0; 46],
            )),
            // An IPv4-mapped IPv6 source dressed as the control plane: never matches IPv4 CIDRs.
            (14, _) => {
                let IpAddr::V4(cp) = self.in_v4(&cp4) else {
                    unreachable!()
                };
                one(Frame::tcp(
                    IpAddr::V6(cp.to_ipv6_mapped()),
                    IpAddr::V6(self.p.node_v6),
                    sport,
                    10250,
                )
                .syn())
            }
            // Neighbor Discovery from off-link (hop limit below 255).
            _ => {
                let IpAddr::V6(s) = self.outside(true).0 else {
                    unreachable!()
                };
                one(Frame::neighbor_solicitation(s, self.p.node_v6).hop_limit(64))
            }
        }
    }
}

#[cfg(test)]
mod tests;
