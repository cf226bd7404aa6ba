//! Shared inputs of nodegate's benchmarks (see docs/BENCHMARKS.md): deterministic prefix
//! lists, policies over them, and frames with hot or random source addresses.
//!
//! The criterion benches (`benches/`) measure the reference model, the compiler and
//! `BPF_PROG_TEST_RUN`; the `ng-bench` binary measures the veth pipeline against the peers
//! (xdp-filter, nftables, iptables + ipset) and reload latency. `cargo xtask bench` runs both
//! and prints the tables.

pub mod candidates;
pub mod peers;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_user::{
    craft::Frame,
    policy::{Policy, Protocol, ReturnTraffic, Rule, RuleKind},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng as _, RngExt as _, SeedableRng as _};

/// Deterministic pseudo-random numbers: the same inputs in every run. The one generator
/// of the workspace (the traffic generator's ChaCha8): seed with `Rng::seed_from_u64`.
pub use rand::rngs::ChaCha8Rng as Rng;

/// `n` distinct values drawn from `draw` (a seeded [`Rng`]), in the order drawn.
fn distinct<T: Eq + std::hash::Hash + Copy>(
    n: usize,
    seed: u64,
    mut draw: impl FnMut(&mut Rng) -> T,
) -> Vec<T> {
    let mut rng = Rng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let value = draw(&mut rng);
        if seen.insert(value) {
            out.push(value);
        }
    }
    out
}

/// An IPv4 prefix with host bits cleared.
fn v4_net(addr: u32, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(addr), len)
        .expect("len <= 32")
        .trunc()
}

/// An IPv6 prefix with host bits cleared.
fn v6_net(bits: u128, len: u8) -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::from(bits), len)
        .expect("len <= 128")
        .trunc()
}

/// `n` distinct IPv4 prefixes (/16../32, host bits clear) inside 10.0.0.0/8, like an
/// authorized-ranges export or a blocklist.
pub fn v4_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    distinct(n, seed, |rng| {
        let len = if n == 1 {
            24
        } else {
            16 + rng.random_range(0..17) as u8
        };
        v4_net(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff), len)
    })
}

/// `n` distinct IPv6 prefixes (/48../64) inside 2001:db8::/32.
pub fn v6_prefixes(n: usize, seed: u64) -> Vec<Ipv6Net> {
    distinct(n, seed, |rng| {
        let len = 48 + rng.random_range(0..17) as u8;
        v6_net(
            (0x2001_0db8u128 << 96) | (u128::from(rng.next_u64() as u32) << 64),
            len,
        )
    })
}

/// One allow rule (TCP 443) from every prefix given; return traffic off, so a source
/// outside the list is `no-source-match` and the rest is `allow-rule` or `no-rule-match`.
pub fn allow_policy(v4: &[Ipv4Net], v6: &[Ipv6Net]) -> Policy {
    let mut sources: Vec<IpNet> = v4.iter().map(|n| IpNet::V4(*n)).collect();
    sources.extend(v6.iter().map(|n| IpNet::V6(*n)));
    Policy {
        rules: vec![Rule {
            name: "allowed-https".into(),
            kind: RuleKind::Allow,
            sources,
            protocol: Protocol::Tcp,
            keys: vec![443..=443],
            interfaces: Vec::new(),
        }],
        return_traffic: ReturnTraffic::Off,
        ..Policy::default()
    }
}

/// Raise `policy`'s capacity until its source tables fit: the prefix counts, and the table
/// words clustered or deeply nested sets need beyond what a prefix of capacity reserves.
pub fn fit_capacity(policy: &mut Policy) {
    use filter_common::lookup::{Shape, V4, V6};
    use filter_user::{compiler::CompileError, policy::PrefixCapacity};
    let mut roomy = policy.clone();
    roomy.capacity = PrefixCapacity {
        ipv4: PrefixCapacity::MAX_IPV4,
        ipv6: PrefixCapacity::MAX_IPV6,
    };
    let Ok(tables) = filter_user::compiler::Tables::try_from(&roomy) else {
        return;
    };
    let need = |words: usize, shape: Shape, max: u32| {
        (words.saturating_sub(shape.root_words(max) as usize) as u32)
            .div_ceil(shape.words_per_prefix)
    };
    let s = &tables.stats;
    policy.capacity.ipv4 = policy.capacity.ipv4.max(s.v4_prefixes as u32).max(need(
        s.v4_table_words,
        V4,
        PrefixCapacity::MAX_IPV4,
    ));
    policy.capacity.ipv6 = policy.capacity.ipv6.max(s.v6_prefixes as u32).max(need(
        s.v6_table_words,
        V6,
        PrefixCapacity::MAX_IPV6,
    ));
    // The IPv4 root depends on the capacity, and a narrower root can need more node words
    // than the roomy build's: grow until the tables fit.
    while let Err(CompileError::TableTooLarge { family, .. }) =
        filter_user::compiler::Tables::try_from(&*policy)
    {
        let (cap, max) = if family == "IPv4" {
            (&mut policy.capacity.ipv4, PrefixCapacity::MAX_IPV4)
        } else {
            (&mut policy.capacity.ipv6, PrefixCapacity::MAX_IPV6)
        };
        // A family that does not fit even at its maximum never will: the caller's compile
        // reports it.
        if *cap == max {
            return;
        }
        *cap = (*cap + *cap / 4).min(max);
    }
}

/// The node address all benchmark frames go to (RFC 5737, the lab's node side).
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A random source: half of them inside a listed prefix, half anywhere in IPv4.
pub fn random_source(rng: &mut Rng, list: &[Ipv4Net]) -> Ipv4Addr {
    if rng.random_range(0..2) == 0 && !list.is_empty() {
        let net = list[rng.random_range(0..list.len() as u64) as usize];
        let host = rng.next_u64() as u32 & !u32::from(net.netmask());
        Ipv4Addr::from(u32::from(net.network()) | host)
    } else {
        Ipv4Addr::from(rng.next_u64() as u32)
    }
}

/// A 64-byte TCP SYN to port 443 of [`NODE_V4`] from `src`.
pub fn syn_frame(src: Ipv4Addr) -> Vec<u8> {
    Frame::tcp(IpAddr::V4(src), IpAddr::V4(NODE_V4), 40000, 443)
        .syn()
        .pad_to(64)
        .build()
}

/// `count` frames from random sources (see [`random_source`]).
pub fn random_frames(list: &[Ipv4Net], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| syn_frame(random_source(&mut rng, list)))
        .collect()
}

/// Prefix counts of the per-packet benchmarks.
pub const SIZES: [usize; 3] = [1, 1_000, 100_000];

/// `n` distinct IPv4 prefixes anywhere in the address space with random lengths /8–/32: the
/// shape that costs a trie the most (deep, unclustered), next to [`v4_prefixes`]'s.
pub fn v4_mixed_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    distinct(n, seed, |rng| {
        let len = 8 + rng.random_range(0..25) as u8;
        v4_net(rng.next_u64() as u32, len)
    })
}

/// `n` distinct IPv6 prefixes anywhere with random lengths /32–/128.
pub fn v6_mixed_prefixes(n: usize, seed: u64) -> Vec<Ipv6Net> {
    distinct(n, seed, |rng| {
        let len = 32 + rng.random_range(0..97) as u8;
        v6_net(
            (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()),
            len,
        )
    })
}

/// The node's IPv6 address all IPv6 benchmark frames go to (RFC 3849).
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// `count` 74-byte IPv6 TCP SYNs from random sources: half inside a listed prefix, half
/// anywhere.
pub fn random_v6_frames(list: &[Ipv6Net], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let any = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            let src = if rng.random_range(0..2) == 0 && !list.is_empty() {
                let net = list[rng.random_range(0..list.len() as u64) as usize];
                u128::from(net.network()) | (any & !u128::from(net.netmask()))
            } else {
                any
            };
            syn_frame_v6(Ipv6Addr::from(src))
        })
        .collect()
}

/// A 74-byte IPv6 TCP SYN to port 443 of [`NODE_V6`] from `src`.
pub fn syn_frame_v6(src: Ipv6Addr) -> Vec<u8> {
    Frame::tcp(IpAddr::V6(src), IpAddr::V6(NODE_V6), 40000, 443)
        .syn()
        .build()
}

/// Prefix counts of the lookup benchmarks (random mixed-length sets), IPv4 and IPv6.
pub const LOOKUP_SIZES_V4: [usize; 4] = [1, 1_000, 100_000, 1_000_000];
/// IPv6 counterpart of [`LOOKUP_SIZES_V4`].
pub const LOOKUP_SIZES_V6: [usize; 3] = [1, 10_000, 100_000];
