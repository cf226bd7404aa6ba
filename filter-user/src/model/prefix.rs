//! The model's own prefix matcher: for one rule, the set of its network addresses per prefix
//! length and family. An address is covered when, for some length present, the address
//! masked to that length is in the set. Lookups cost one hash probe per distinct length, so
//! a 100k-prefix rule stays fast without sharing anything with the compiler's flat lookup tables.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

/// A fast hasher for the integer keys of the sets: multiply-rotate per word, and the
/// MurmurHash3 finalizer at the end — masked network addresses have all-zero low bits, which
/// a bare multiplicative hash would pile into one bucket. The keys come from the operator's
/// config, so SipHash's flooding resistance buys nothing here.
#[derive(Clone, Copy, Default)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

type IntSet<T> = HashSet<T, BuildHasherDefault<IntHasher>>;

/// Prefixes of one rule.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixSet {
    /// (prefix length, networks of that length), longest first.
    v4: Vec<(u8, IntSet<u32>)>,
    v6: Vec<(u8, IntSet<u128>)>,
}

fn mask_v4(addr: u32, len: u8) -> u32 {
    addr & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(addr: u128, len: u8) -> u128 {
    addr & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn slot<T>(by_len: &mut Vec<(u8, IntSet<T>)>, len: u8) -> &mut IntSet<T> {
    let i = match by_len.iter().position(|(l, _)| *l == len) {
        Some(i) => i,
        None => {
            by_len.push((len, IntSet::default()));
            by_len.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
            by_len
                .iter()
                .position(|(l, _)| *l == len)
                .expect("just pushed")
        }
    };
    &mut by_len[i].1
}

impl PrefixSet {
    pub(crate) fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> PrefixSet {
        let mut set = PrefixSet::default();
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let len = n.prefix_len();
                    slot(&mut set.v4, len).insert(mask_v4(u32::from(n.addr()), len));
                }
                IpNet::V6(n) => {
                    let len = n.prefix_len();
                    slot(&mut set.v6, len).insert(mask_v6(u128::from(n.addr()), len));
                }
            }
        }
        set
    }

    /// Whether a prefix of the address's own family contains `addr`. An IPv4-mapped IPv6
    /// address is IPv6 and is only ever matched against IPv6 prefixes.
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .any(|(len, nets)| nets.contains(&mask_v4(a, *len)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .any(|(len, nets)| nets.contains(&mask_v6(a, *len)))
            }
        }
    }
}
