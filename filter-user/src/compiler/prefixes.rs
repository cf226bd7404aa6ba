//! Source prefixes → classes (the set of rules whose prefixes contain a prefix).
//!
//! Per family: sort all (prefix, rule) pairs by (network address, length), merge equal
//! prefixes, and walk them with a stack holding the chain of ancestors of the current
//! prefix. In that order every prefix comes after all of its ancestors (an ancestor has a
//! smaller or equal network address, and a shorter length when equal), and a prefix popped
//! because it does not contain the current one cannot contain any later one either (the
//! later ones start past its end). So the top of the stack, after popping, is the longest
//! proper ancestor in the set, and `class(P) = own(P) ∪ class(parent)`. `O(n log n)` for the
//! sort, `O(n)` for the walk; classes are interned by rule set.

use foldhash::HashMap;

use filter_common::{MAX_CLASSES, MAX_RULES};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Bits, CompileError};
use crate::policy::{PrefixCapacity, Rule};

/// Output of [`classify`].
pub(super) struct Classes {
    pub v4: Vec<(Ipv4Net, u32)>,
    pub v6: Vec<(Ipv6Net, u32)>,
    /// Rule set per class id.
    pub class_rules: Vec<Bits>,
}

/// Class ids by rule set.
#[derive(Default)]
pub(super) struct Interner {
    ids: HashMap<Bits, u32>,
    pub(super) sets: Vec<Bits>,
}

impl Interner {
    /// Continue numbering after an earlier compile's classes (`sets[id]` is class `id`).
    pub(super) fn from_sets(sets: Vec<Bits>) -> Interner {
        let ids = sets
            .iter()
            .enumerate()
            .map(|(id, bits)| (*bits, id as u32))
            .collect();
        Interner { ids, sets }
    }

    fn intern(&mut self, bits: Bits) -> u32 {
        *self.ids.entry(bits).or_insert_with(|| {
            self.sets.push(bits);
            (self.sets.len() - 1) as u32
        })
    }
}

/// Prefixes of one family as (address bits, length, rule), sorted; `width` is 32 or 128.
pub(super) fn walk(
    entries: Vec<(u128, u8, u32)>,
    width: u32,
    interner: &mut Interner,
) -> Vec<(u128, u8, u32)> {
    debug_assert!(entries.is_sorted());
    let mut out: Vec<(u128, u8, u32)> = Vec::with_capacity(entries.len());
    // (address, length, class id)
    let mut stack: Vec<(u128, u8, u32)> = Vec::new();
    let contains = |(pa, pl): (u128, u8), (qa, ql): (u128, u8)| -> bool {
        pl <= ql && (pl == 0 || (pa ^ qa) >> (width - u32::from(pl)) == 0)
    };
    let mut i = 0;
    while i < entries.len() {
        let (addr, len, _) = entries[i];
        let mut own: Bits = [0; std::mem::size_of::<Bits>() / 8];
        while i < entries.len() && entries[i].0 == addr && entries[i].1 == len {
            let r = entries[i].2 as usize;
            own[r / 64] |= 1 << (r % 64);
            i += 1;
        }
        while let Some(&(ta, tl, _)) = stack.last() {
            if contains((ta, tl), (addr, len)) {
                break;
            }
            stack.pop();
        }
        let class = match stack.last() {
            Some(&(_, _, parent)) => {
                let pbits = &interner.sets[parent as usize];
                if own.iter().zip(pbits).all(|(o, p)| o & !p == 0) {
                    parent
                } else {
                    let merged: Bits = std::array::from_fn(|w| own[w] | pbits[w]);
                    interner.intern(merged)
                }
            }
            None => interner.intern(own),
        };
        stack.push((addr, len, class));
        out.push((addr, len, class));
    }
    out
}

/// Compute the prefixes of both families with their class ids. `rules` are in precedence
/// order; bit `i` of a class is `rules[i]`.
pub(super) fn classify(rules: &[&Rule], capacity: PrefixCapacity) -> Result<Classes, CompileError> {
    // IPv4 entries sort as one u64 each, (address, length, rule) from the top bits down:
    // sorting was half the compile time as (u128, u8, u32) tuples.
    const _: () = assert!(MAX_RULES <= 1 << 16);
    debug_assert!(rules.len() <= MAX_RULES as usize);
    let mut v4: Vec<u64> = Vec::new();
    let mut v6 = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for src in &rule.sources {
            match src.trunc() {
                IpNet::V4(n) => v4.push(
                    u64::from(u32::from(n.addr())) << 32
                        | u64::from(n.prefix_len()) << 16
                        | i as u64,
                ),
                IpNet::V6(n) => v6.push((u128::from(n.addr()), n.prefix_len(), i as u32)),
            }
        }
    }
    v4.sort_unstable();
    v6.sort_unstable();
    let v4 = v4
        .into_iter()
        .map(|k| {
            (
                u128::from((k >> 32) as u32),
                (k >> 16) as u8,
                k as u16 as u32,
            )
        })
        .collect();
    let mut interner = Interner::default();
    let v4 = walk(v4, 32, &mut interner);
    let v6 = walk(v6, 128, &mut interner);
    if v4.len() > capacity.ipv4 as usize {
        return Err(CompileError::TooManyV4Prefixes {
            count: v4.len(),
            max: capacity.ipv4 as usize,
        });
    }
    if v6.len() > capacity.ipv6 as usize {
        return Err(CompileError::TooManyV6Prefixes {
            count: v6.len(),
            max: capacity.ipv6 as usize,
        });
    }
    if interner.sets.len() > MAX_CLASSES as usize {
        return Err(CompileError::TooManyClasses {
            count: interner.sets.len(),
            max: MAX_CLASSES as usize,
        });
    }
    Ok(Classes {
        v4: v4
            .into_iter()
            .map(|(a, l, c)| (Ipv4Net::new((a as u32).into(), l).expect("valid length"), c))
            .collect(),
        v6: v6
            .into_iter()
            .map(|(a, l, c)| (Ipv6Net::new(a.into(), l).expect("valid length"), c))
            .collect(),
        class_rules: interner.sets,
    })
}
