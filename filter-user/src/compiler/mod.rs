//! The compiler: a validated [`Policy`] → the kernel tables of one rule generation.
//!
//! This is the only place that knows the table layout of `filter-common::layout`; the loader
//! writes the vectors produced here into maps without interpreting them.
//!
//! # How a packet is judged with these tables
//! 1. Longest-prefix match of the source address in the family's trie → a *class* id, or no
//!    entry (no rule has a prefix containing the source: `no-source-match`).
//! 2. The packet's (service kind, key) → a *segment* id in the kind's key space.
//! 3. `cells[class][kind][segment]` → the deciding rule's action and slot, or empty
//!    (`no-rule-match`).
//!
//! # Why longest-prefix match gives every covering rule
//! Let `S` be the set of all source prefixes of all rules of one family, and for `P ∈ S` let
//! `class(P)` be the set of rules having some prefix `C ⊇ P`. For an address `a`, let `P` be
//! the longest prefix of `S` containing `a`. Claim: the rules with a prefix containing `a` are
//! exactly `class(P)`.
//! - If a rule has `C ⊇ P`, then `a ∈ P ⊆ C`.
//! - If a rule has `C ∋ a`, then `C ∈ S`; `C` and `P` both contain `a`, and two CIDR prefixes
//!   that intersect are nested, so `C ⊇ P` or `C ⊊ P`. The latter would make `C` a longer
//!   prefix of `S` containing `a`, contradicting the choice of `P`. Hence `C ⊇ P`.
//!
//! So overlapping rules are a union (10.0.0.5 under both `10.0.0.0/16` and `10.0.0.0/24`
//! gets the rules of both), which a plain "one prefix → one rule" trie would get wrong.
//! Classes are computed in `O(n log n)`: sort prefixes by (address, length), so that every
//! prefix comes after all its ancestors, and keep the chain of ancestors on a stack;
//! `class(P) = own(P) ∪ class(parent(P))` (`compiler::prefixes`).
//!
//! Segments: each kind's key space is cut at every range boundary of every rule; each run
//! gets the set of rules covering it, and runs with the same set share one segment id
//! (id 0 = no rule). A cell is the first rule in precedence order (failsafe, deny, allow;
//! file order within each, [`Policy::rules_in_precedence`]) in `class ∩ segment`, which is
//! exactly the first rule covering (source, kind, key).
//!
//! ```
//! use filter_user::compiler::{compile, Lookup, RuleSlots};
//! use filter_user::policy::{Policy, Protocol, Rule, RuleKind};
//! use filter_common::{CellAction, ServiceKind};
//!
//! let policy = Policy {
//!     rules: vec![Rule {
//!         name: "https".into(),
//!         kind: RuleKind::Allow,
//!         sources: vec!["10.0.0.0/24".parse().unwrap()],
//!         protocol: Protocol::Tcp,
//!         keys: vec![443..=443],
//!         interfaces: Vec::new(),
//!     }],
//!     ..Policy::default()
//! };
//! let mut slots = RuleSlots::new();
//! let tables = compile(&policy, &slots).unwrap();
//! // ...the loader writes `tables` into generation maps and flips; then:
//! slots.commit(&tables);
//! match tables.lookup("10.0.0.5".parse().unwrap(), ServiceKind::Tcp, 443) {
//!     Lookup::Cell(cell) => assert_eq!(cell.action(), CellAction::Allow),
//!     Lookup::NoSource => unreachable!(),
//! }
//! assert_eq!(tables.lookup("10.0.1.5".parse().unwrap(), ServiceKind::Tcp, 443), Lookup::NoSource);
//! ```

mod incremental;
pub mod lookup;
mod prefixes;
mod profiles;
mod segments;
mod slots;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use filter_common::{
    class_cells_index, class_row_index, flags, iface_override, mode, return_mode,
    segment_chunk_index, Cell, CellAction, ClassCells, GenConfig, RuleName, SegmentChunk,
    ServiceKind, MAX_CLASSES, MAX_RULES, MAX_SEGMENTS, MAX_V4_PREFIXES, MAX_V6_PREFIXES, NO_ROW,
    RULE_NAME_LEN, SEGMENT_CHUNK, SERVICE_CHUNKS, SERVICE_INDEX_SPACE, SERVICE_KINDS,
};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::policy::{
    DefaultAction, Fragments, InterfaceSettings, Mode, Policy, ReturnTraffic, Rule, RuleKind,
};

pub use slots::RuleSlots;

/// Most rules a policy may have: slot 0 means "no rule".
pub const MAX_POLICY_RULES: usize = MAX_RULES as usize - 1;
/// Most non-empty segments per service kind: segment 0 means "no rule".
pub const MAX_KIND_SEGMENTS: usize = MAX_SEGMENTS as usize - 1;

/// A set of rules, as a bitset over precedence indices (`MAX_RULES` bits).
pub(crate) type Bits = [u64; (MAX_RULES as usize).div_ceil(64)];

/// Why a policy does not fit the kernel tables. The config front end checks all of these
/// and reports them with source positions; a hand-built [`Policy`] can still hit them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// More rules than slots.
    #[error("{count} rules, but the kernel tables hold at most {max}")]
    TooManyRules {
        /// Rules in the policy.
        count: usize,
        /// [`MAX_POLICY_RULES`].
        max: usize,
    },
    /// Two rules share a name.
    #[error("duplicate rule name `{name}`")]
    DuplicateRuleName {
        /// The name.
        name: String,
    },
    /// A rule name is empty or longer than `RULE_NAME_LEN - 1` bytes.
    #[error("rule name `{name}` must be 1 to {max} bytes")]
    BadRuleName {
        /// The name.
        name: String,
        /// `RULE_NAME_LEN - 1`.
        max: usize,
    },
    /// More distinct IPv4 prefixes than the capacity per generation.
    #[error("{count} distinct IPv4 prefixes, but the kernel table holds at most {max} (`capacity.ipv4_prefixes`)")]
    TooManyV4Prefixes {
        /// Distinct IPv4 prefixes.
        count: usize,
        /// `MAX_V4_PREFIXES`.
        max: usize,
    },
    /// More distinct IPv6 prefixes than the capacity per generation.
    #[error("{count} distinct IPv6 prefixes, but the kernel table holds at most {max} (`capacity.ipv6_prefixes`)")]
    TooManyV6Prefixes {
        /// Distinct IPv6 prefixes.
        count: usize,
        /// `MAX_V6_PREFIXES`.
        max: usize,
    },
    /// The prefixes fit the capacity in number, but their lookup table does not fit the
    /// memory that capacity reserves (clustered sets need more table per prefix).
    #[error("the {prefixes} {family} prefixes need a {bytes}-byte lookup table, but the capacity reserves {room} bytes per generation: raise `capacity.{key}_prefixes`")]
    TableTooLarge {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Distinct prefixes of the family.
        prefixes: usize,
        /// Table bytes needed per generation.
        bytes: usize,
        /// Table bytes the capacity reserves per generation.
        room: usize,
        /// `ipv4` or `ipv6`.
        key: &'static str,
    },
    /// Too many distinct combinations of rules covering a source prefix.
    #[error("source prefixes fall into {count} distinct rule combinations (classes), but the kernel table holds at most {max}")]
    TooManyClasses {
        /// Classes needed.
        count: usize,
        /// `MAX_CLASSES`.
        max: usize,
    },
    /// Too many distinct port/type runs in one service kind.
    #[error("rules cut the {kind} key space into {count} distinct segments, but the kernel table holds at most {max}")]
    TooManySegments {
        /// The service kind, lowercase (`tcp`, `udp`, `icmp`, `icmpv6`, `other`).
        kind: &'static str,
        /// Non-empty segments needed.
        count: usize,
        /// [`MAX_KIND_SEGMENTS`].
        max: usize,
    },
    /// Rules name interfaces in more distinct combinations than the kernel has profiles.
    #[error("rules that name interfaces give {count} distinct sets of rules per interface (including the one of interfaces no rule names), but the kernel holds at most {max}")]
    TooManyProfiles {
        /// Profiles needed.
        count: usize,
        /// `MAX_PROFILES`.
        max: usize,
    },
    /// Every free slot is still reserved by the active generation's rules.
    #[error("no free rule slot for `{name}`: the active generation still holds {reserved} slots")]
    SlotsExhausted {
        /// The rule that got no slot.
        name: String,
        /// Slots held by the committed assignment.
        reserved: usize,
    },
}

/// Sizes of the compiled tables, for `nodegate check` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Rules (= used rule slots).
    pub rules: usize,
    /// Distinct IPv4 prefixes in the trie.
    pub v4_prefixes: usize,
    /// Distinct IPv6 prefixes in the trie.
    pub v6_prefixes: usize,
    /// Words of the IPv4 source lookup table (one generation).
    pub v4_table_words: usize,
    /// Words of the IPv6 source lookup table (one generation).
    pub v6_table_words: usize,
    /// Source classes.
    pub classes: usize,
    /// Cell rows (equal to the classes unless rules name interfaces).
    pub rows: usize,
    /// Rule profiles (1 unless rules name interfaces).
    pub profiles: usize,
    /// Non-empty segments per service kind, indexed by `ServiceKind as usize`.
    pub segments: [usize; SERVICE_KINDS as usize],
}

impl fmt::Display for TableStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rules          {:>7} / {}", self.rules, MAX_POLICY_RULES)?;
        writeln!(
            f,
            "ipv4 prefixes  {:>7} / {}",
            self.v4_prefixes, MAX_V4_PREFIXES
        )?;
        writeln!(
            f,
            "ipv6 prefixes  {:>7} / {}",
            self.v6_prefixes, MAX_V6_PREFIXES
        )?;
        writeln!(f, "source classes {:>7} / {}", self.classes, MAX_CLASSES)?;
        write!(f, "segments      ")?;
        for kind in ServiceKind::ALL {
            write!(
                f,
                " {} {}/{}",
                kind_name(kind),
                self.segments[kind as usize],
                MAX_KIND_SEGMENTS
            )?;
        }
        Ok(())
    }
}

/// Lowercase name of a service kind, as used in messages.
pub fn kind_name(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Tcp => "tcp",
        ServiceKind::Udp => "udp",
        ServiceKind::Icmp => "icmp",
        ServiceKind::Icmpv6 => "icmpv6",
        ServiceKind::Other => "other",
    }
}

/// Result of [`Tables::lookup`], the way the XDP program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No rule (that applies on the interface) has a prefix containing the source
    /// (`no-source-match`).
    NoSource,
    /// The source has a class; this is its cell for (kind, key). [`Cell::EMPTY`] means no
    /// rule covers the packet (`no-rule-match`).
    Cell(Cell),
}

/// The kernel tables of one rule generation.
#[derive(Clone)]
pub struct Tables {
    /// Settings of the generation (`NG_GENCFG`); `epoch` is 0, the loader sets it.
    pub gen_config: GenConfig,
    /// IPv4 source prefixes and their class ids, sorted by (address, length).
    pub v4: Vec<(Ipv4Net, u32)>,
    /// IPv6 source prefixes and their class ids, sorted by (address, length).
    pub v6: Vec<(Ipv6Net, u32)>,
    /// The IPv4 source lookup table (`filter_common::lookup`), indices relative to its start.
    pub v4_table: Vec<u32>,
    /// The IPv6 source lookup table.
    pub v6_table: Vec<u32>,
    /// Segment id per service index (length `SERVICE_INDEX_SPACE`); see
    /// [`Tables::segment_entries`] for the map layout.
    pub segments: Vec<u16>,
    /// Cells per row id (index) and service kind (`ServiceKind as usize`).
    pub class_cells: Vec<[ClassCells; SERVICE_KINDS as usize]>,
    /// Row id (or `NO_ROW`) per profile and class id; see `compiler/profiles.rs`.
    pub class_rows: Vec<Vec<u32>>,
    /// The complete rule slot assignment of this generation, sorted by slot. Slots of rules
    /// that were removed are absent (they stay reserved in [`RuleSlots`] until
    /// [`RuleSlots::commit`]).
    pub rule_names: Vec<(u16, String)>,
    /// Slots this generation assigns to names that had none: their counters start from
    /// zero, so the loader clears them before publishing.
    pub fresh_slots: Vec<u16>,
    /// [`filter_common::iface_override`] bits per interface the config names (one
    /// generation's byte; the loader places it in every registered interface's entry).
    pub interfaces: BTreeMap<String, u32>,
    /// Table sizes.
    pub stats: TableStats,
    /// Rule bitset per class id (precedence indices).
    pub(crate) class_rules: Vec<Bits>,
    /// `Policy::rules` index per precedence index.
    pub(crate) precedence: Vec<usize>,
    /// Table words appended by incremental updates since the last full build, per family
    /// (IPv4, IPv6): an upper bound of the unreachable words in each table.
    pub(crate) garbage: [usize; 2],
    /// Whether the source side was updated from the previous generation's
    /// ([`compile_after`]) rather than built from scratch.
    pub incremental: bool,
}

impl Tables {
    /// These tables as a layout-5 loader would have published them: its IPv4 table has a
    /// record wherever this one has an inline prefix (IPv6 tables are the same). What a
    /// take-over from layout 5 finds active; for tests that the program judges such a
    /// generation right.
    pub fn as_layout5(&self) -> Tables {
        self.rebuilt_with(lookup::build_layout5, false)
    }

    /// These tables as a layout-4 loader would have published them: tail records of one
    /// prefix each (a node wherever two longer prefixes share a slot), in both families.
    /// What a take-over from layout 4 finds active; for tests that the program judges such
    /// a generation right.
    pub fn as_layout4(&self) -> Tables {
        self.rebuilt_with(lookup::build_layout4, true)
    }

    /// A copy with the IPv4 table (and the IPv6 one if `v6`) built by `build` from the same
    /// prefixes, at the same roots.
    fn rebuilt_with(
        &self,
        build: fn(lookup::Family, &mut [lookup::TablePrefix], u32) -> Vec<u32>,
        v6: bool,
    ) -> Tables {
        let mut legacy = self.clone();
        legacy.v4_table = build(
            lookup::Family::V4,
            &mut v4_table_prefixes(&self.v4),
            filter_common::lookup::v4_root_bits(self.gen_config.flags),
        );
        legacy.stats.v4_table_words = legacy.v4_table.len();
        if v6 {
            // IPv6 tables have one root size, whatever the capacity.
            legacy.v6_table = build(
                lookup::Family::V6,
                &mut v6_table_prefixes(&self.v6),
                filter_common::lookup::V6_ROOT_BITS,
            );
            legacy.stats.v6_table_words = legacy.v6_table.len();
        }
        legacy.incremental = false;
        legacy
    }

    /// These tables as a layout-3 loader would have published them: layout 4's IPv6 table,
    /// and the IPv4 table with a 16-bit root and no wide nodes, the generation's root flags
    /// clear. What a take-over from layout 3 finds active.
    pub fn as_layout3(&self) -> Tables {
        let mut legacy = self.as_layout4();
        legacy.v4_table = lookup::build_layout3_v4(&mut v4_table_prefixes(&self.v4));
        legacy.stats.v4_table_words = legacy.v4_table.len();
        legacy.gen_config.flags &= !(flags::V4_ROOT_18 | flags::V4_ROOT_20);
        legacy
    }
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables")
            .field("gen_config", &self.gen_config)
            .field("rule_names", &self.rule_names)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TryFrom<&Policy> for Tables {
    type Error = CompileError;

    /// Compile with fresh rule slots (for `check`, tests and benches).
    fn try_from(policy: &Policy) -> Result<Tables, CompileError> {
        compile(policy, &RuleSlots::new())
    }
}

/// Compile `policy` into the tables of one generation.
///
/// `slots` is the assignment committed for the active generation; it is not modified: rules
/// keep their slots, new names take the lowest slot free in both the committed and the new
/// assignment, and the result ([`Tables::rule_names`]) becomes the committed assignment when
/// the caller calls [`RuleSlots::commit`] after publishing.
pub fn compile(policy: &Policy, slots: &RuleSlots) -> Result<Tables, CompileError> {
    compile_with(policy, slots, None, &mut false)
}

/// A published generation, kept for the next reload's [`compile_after`].
pub struct Compiled {
    /// The policy it was compiled from.
    pub policy: Policy,
    /// Its tables.
    pub tables: Tables,
}

impl Compiled {
    /// As the `previous` of [`compile_after`].
    pub fn previous(&self) -> Previous<'_> {
        Previous {
            policy: &self.policy,
            tables: &self.tables,
        }
    }
}

/// A generation already compiled: the policy and what [`compile`] made of it.
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    /// The policy it was compiled from.
    pub policy: &'a Policy,
    /// Its tables.
    pub tables: &'a Tables,
}

/// [`compile`], reusing `previous` (the active generation) where `policy` changes only a few
/// source prefixes (`compiler::incremental`): a one-prefix reload of 110k prefixes in
/// about a millisecond instead of a full compile. Same tables in every lookup; falls back to
/// the full compile whenever an update does not apply or fails.
pub fn compile_after(
    policy: &Policy,
    slots: &RuleSlots,
    previous: Previous<'_>,
) -> Result<Tables, CompileError> {
    let mut incremental = false;
    match compile_with(policy, slots, Some(previous), &mut incremental) {
        // The updated class list can hold classes no prefix uses any more, and so exceed a
        // limit that a fresh compile meets.
        Err(_) if incremental => compile(policy, slots),
        result => result,
    }
}

/// The compile; sets `incremental` once the source side was updated from `previous`.
fn compile_with(
    policy: &Policy,
    slots: &RuleSlots,
    previous: Option<Previous<'_>>,
    incremental: &mut bool,
) -> Result<Tables, CompileError> {
    let rules = &policy.rules;
    if rules.len() > MAX_POLICY_RULES {
        return Err(CompileError::TooManyRules {
            count: rules.len(),
            max: MAX_POLICY_RULES,
        });
    }
    let mut seen = HashSet::new();
    for rule in rules {
        if rule.name.is_empty() || rule.name.len() > RULE_NAME_LEN - 1 {
            return Err(CompileError::BadRuleName {
                name: rule.name.clone(),
                max: RULE_NAME_LEN - 1,
            });
        }
        if !seen.insert(rule.name.as_str()) {
            return Err(CompileError::DuplicateRuleName {
                name: rule.name.clone(),
            });
        }
    }

    // Precedence index → rule index; the address of a rule in every bitset below.
    let precedence: Vec<usize> = policy
        .rules_in_precedence()
        .map(|r| {
            rules
                .iter()
                .position(|x| std::ptr::eq(x, r))
                .expect("rule from the policy")
        })
        .collect();
    let prec_rules: Vec<&Rule> = precedence.iter().map(|&i| &rules[i]).collect();

    let (assignment, fresh_slots) = slots.propose(rules.iter().map(|r| r.name.as_str()))?;
    let prec_slots: Vec<u16> = prec_rules.iter().map(|r| assignment[&r.name]).collect();

    let update =
        previous.and_then(|p| incremental::update(policy, p.policy, p.tables, &precedence));
    *incremental = update.is_some();
    let (classes, (v4_table, v6_table), garbage) = match update {
        Some(u) => (u.classes, (u.v4_table, u.v6_table), u.garbage),
        None => {
            let classes = prefixes::classify(&prec_rules, policy.capacity)?;
            let tables = source_tables(&classes, policy.capacity);
            (classes, tables, [0; 2])
        }
    };
    let segs = segments::segment(&prec_rules)?;

    let profiles = profiles::profiles(&prec_rules)?;
    let rows = profiles::rows(&classes.class_rules, &profiles)?;
    let class_cells = rows
        .rules
        .iter()
        .map(|class| {
            std::array::from_fn(|k| {
                let mut cells = ClassCells {
                    cell: [0; MAX_SEGMENTS as usize],
                };
                for (seg, seg_rules) in segs.rules[k].iter().enumerate().skip(1) {
                    if let Some(i) = first_common(class, seg_rules) {
                        cells.cell[seg] = Cell::new(action(prec_rules[i].kind), prec_slots[i]).0;
                    }
                }
                cells
            })
        })
        .collect();

    let mut rule_names: Vec<(u16, String)> =
        assignment.iter().map(|(n, &s)| (s, n.clone())).collect();
    rule_names.sort();

    let (v4_room, v6_room) = policy.capacity.table_words_per_gen();
    for (family, words, room, prefixes, key) in [
        ("IPv4", v4_table.len(), v4_room, classes.v4.len(), "ipv4"),
        ("IPv6", v6_table.len(), v6_room, classes.v6.len(), "ipv6"),
    ] {
        if words > room {
            return Err(CompileError::TableTooLarge {
                family,
                prefixes,
                bytes: words * 4,
                room: room * 4,
                key,
            });
        }
    }
    let stats = TableStats {
        rules: rules.len(),
        v4_prefixes: classes.v4.len(),
        v6_prefixes: classes.v6.len(),
        v4_table_words: v4_table.len(),
        v6_table_words: v6_table.len(),
        classes: classes.class_rules.len(),
        rows: rows.rules.len(),
        profiles: profiles.masks.len(),
        segments: std::array::from_fn(|k| segs.rules[k].len() - 1),
    };
    // Every interface the policy names: its mode/default overrides and its rule profile.
    let mut interfaces: BTreeMap<String, u32> = policy
        .interfaces
        .iter()
        .map(|(name, i)| (name.clone(), interface_overrides(i)))
        .collect();
    for (name, profile) in &profiles.of_iface {
        *interfaces.entry(name.clone()).or_default() |= profile << iface_override::PROFILE_SHIFT;
    }
    Ok(Tables {
        gen_config: gen_config(policy),
        v4: classes.v4,
        v6: classes.v6,
        v4_table,
        v6_table,
        segments: segs.index,
        class_cells,
        class_rows: rows.of,
        rule_names,
        fresh_slots,
        interfaces,
        stats,
        class_rules: classes.class_rules,
        precedence,
        garbage,
        incremental: *incremental,
    })
}

/// The flat source lookup tables of both families (`compiler::lookup`), with the roots the
/// capacity sizes.
fn source_tables(
    classes: &prefixes::Classes,
    capacity: crate::policy::PrefixCapacity,
) -> (Vec<u32>, Vec<u32>) {
    let (v4_root, v6_root) = capacity.root_bits();
    (
        lookup::build(
            lookup::Family::V4,
            &mut v4_table_prefixes(&classes.v4),
            v4_root,
        ),
        lookup::build(
            lookup::Family::V6,
            &mut v6_table_prefixes(&classes.v6),
            v6_root,
        ),
    )
}

/// Classified IPv6 prefixes as the table builder takes them.
fn v6_table_prefixes(entries: &[(Ipv6Net, u32)]) -> Vec<lookup::TablePrefix> {
    entries
        .iter()
        .map(|(net, class)| lookup::TablePrefix {
            addr: u128::from(net.addr()),
            len: net.prefix_len(),
            leaf: filter_common::lookup::entry::leaf(*class),
        })
        .collect()
}

/// Classified IPv4 prefixes as the table builder takes them.
fn v4_table_prefixes(entries: &[(Ipv4Net, u32)]) -> Vec<lookup::TablePrefix> {
    entries
        .iter()
        .map(|(net, class)| lookup::TablePrefix {
            addr: u128::from(u32::from(net.addr())) << 96,
            len: net.prefix_len(),
            leaf: filter_common::lookup::entry::leaf(*class),
        })
        .collect()
}

fn action(kind: RuleKind) -> CellAction {
    match kind {
        RuleKind::Failsafe => CellAction::Failsafe,
        RuleKind::Deny => CellAction::Deny,
        RuleKind::Allow => CellAction::Allow,
    }
}

/// Lowest precedence index in both sets.
pub(crate) fn first_common(a: &Bits, b: &Bits) -> Option<usize> {
    a.iter().zip(b).enumerate().find_map(|(w, (x, y))| {
        let m = x & y;
        (m != 0).then(|| w * 64 + m.trailing_zeros() as usize)
    })
}

/// An interface's `interfaces:` entry as [`iface_override`] bits.
fn interface_overrides(settings: &InterfaceSettings) -> u32 {
    let mode = match settings.mode {
        None => 0,
        Some(Mode::Enforce) => iface_override::MODE,
        Some(Mode::Monitor) => iface_override::MODE | iface_override::MONITOR,
    };
    let default = match settings.default {
        None => 0,
        Some(DefaultAction::Drop) => iface_override::DEFAULT,
        Some(DefaultAction::Pass) => iface_override::DEFAULT | iface_override::DEFAULT_PASS,
    };
    mode | default
}

fn gen_config(policy: &Policy) -> GenConfig {
    // Which layout-4 IPv4 root the tables have (`lookup::V4`), for the program.
    let mut f = filter_common::lookup::v4_root_flag(policy.capacity.root_bits().0);
    let e = &policy.essentials;
    for (on, bit) in [
        (e.arp, flags::ESSENTIAL_ARP),
        (e.neighbor_discovery, flags::ESSENTIAL_ND),
        (e.icmp_errors, flags::ESSENTIAL_ICMP_ERRORS),
        (policy.ipv4_options_allow, flags::IPV4_OPTIONS_ALLOW),
        (
            policy.unknown_ethertypes_pass,
            flags::UNKNOWN_ETHERTYPE_PASS,
        ),
        (policy.fragments == Fragments::Track, flags::FRAGMENT_TRACK),
        (policy.default == DefaultAction::Pass, flags::DEFAULT_PASS),
    ] {
        if on {
            f |= bit;
        }
    }
    let (return_mode, lo, hi) = match &policy.return_traffic {
        ReturnTraffic::Off => (return_mode::OFF, 0, 0),
        ReturnTraffic::Ephemeral { ports } => {
            (return_mode::EPHEMERAL, *ports.start(), *ports.end())
        }
        ReturnTraffic::Stateful => (return_mode::STATEFUL, 0, 0),
    };
    GenConfig {
        mode: match policy.mode {
            Mode::Enforce => mode::ENFORCE,
            Mode::Monitor => mode::MONITOR,
        },
        flags: f,
        return_mode,
        ephemeral_lo: lo,
        ephemeral_hi: hi,
        epoch: 0,
        samples_per_sec: policy.samples_per_sec,
        flow_tcp_secs: policy.flows.tcp_secs,
        flow_tcp_closing_secs: policy.flows.tcp_closing_secs,
        flow_udp_secs: policy.flows.udp_secs,
        flow_icmp_secs: policy.flows.icmp_secs,
        // The loader places each generation's tables and fills these in.
        src_v4_base: 0,
        src_v6_base: 0,
        src_v4_words: 0,
        src_v6_words: 0,
    }
}

impl Tables {
    /// Judge (source, kind, key) the way the XDP program does on an interface no rule
    /// names: longest prefix, row, segment, cell. A `key` outside the kind's key space (an
    /// ICMP type above 255) finds no segment.
    pub fn lookup(&self, src: IpAddr, kind: ServiceKind, key: u16) -> Lookup {
        self.lookup_in_profile(0, src, kind, key)
    }

    /// [`Tables::lookup`] for the interfaces of rule profile `profile` (see
    /// [`Tables::interfaces`]).
    pub fn lookup_in_profile(
        &self,
        profile: u32,
        src: IpAddr,
        kind: ServiceKind,
        key: u16,
    ) -> Lookup {
        let class = match src {
            IpAddr::V4(a) => lpm_v4(&self.v4, a),
            IpAddr::V6(a) => lpm_v6(&self.v6, a),
        };
        let Some(class) = class else {
            return Lookup::NoSource;
        };
        let row = self.class_rows[profile as usize][class as usize];
        if row == NO_ROW {
            return Lookup::NoSource;
        }
        if u32::from(key) >= kind.key_space() {
            return Lookup::Cell(Cell::EMPTY);
        }
        let seg = self.segments[(kind.key_offset() + u32::from(key)) as usize];
        Lookup::Cell(Cell(
            self.class_cells[row as usize][kind as usize].cell[seg as usize],
        ))
    }

    /// The rule name of a slot in this generation.
    pub fn rule_name(&self, slot: u32) -> Option<&str> {
        self.rule_names
            .binary_search_by_key(&slot, |(s, _)| u32::from(*s))
            .ok()
            .map(|i| self.rule_names[i].1.as_str())
    }

    /// `NG_SEGMENTS` entries of generation `generation`: (map index, chunk), all `SERVICE_CHUNKS`.
    pub fn segment_entries(
        &self,
        generation: u32,
    ) -> impl Iterator<Item = (u32, SegmentChunk)> + '_ {
        (0..SERVICE_CHUNKS).map(move |c| {
            let start = (c * SEGMENT_CHUNK) as usize;
            let mut chunk = SegmentChunk {
                seg: [0; SEGMENT_CHUNK as usize],
            };
            chunk
                .seg
                .copy_from_slice(&self.segments[start..start + SEGMENT_CHUNK as usize]);
            (segment_chunk_index(generation, c * SEGMENT_CHUNK), chunk)
        })
    }

    /// `NG_ROWS` entries of generation `generation`: (map index, row) for every profile and class.
    /// Entries of profiles past [`TableStats::profiles`] and classes past
    /// [`TableStats::classes`] are unreachable and need not be written.
    pub fn row_entries(&self, generation: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.class_rows
            .iter()
            .enumerate()
            .flat_map(move |(profile, rows)| {
                rows.iter().enumerate().map(move |(class, row)| {
                    (
                        class_row_index(generation, profile as u32, class as u32),
                        *row,
                    )
                })
            })
    }

    /// `NG_CELLS` entries of generation `generation`: (map index, cells) for every row and kind.
    /// Entries of row ids past [`TableStats::rows`] are unreachable (no class maps to them)
    /// and need not be written.
    pub fn cell_entries(&self, generation: u32) -> impl Iterator<Item = (u32, &ClassCells)> + '_ {
        self.class_cells
            .iter()
            .enumerate()
            .flat_map(move |(class, per_kind)| {
                ServiceKind::ALL.into_iter().map(move |kind| {
                    (
                        class_cells_index(generation, class as u32, kind),
                        &per_kind[kind as usize],
                    )
                })
            })
    }

    /// `NG_RULE_NAMES` entries: (slot, NUL-padded name) for every rule of this generation.
    pub fn rule_name_entries(&self) -> impl Iterator<Item = (u32, RuleName)> + '_ {
        self.rule_names.iter().map(|(slot, name)| {
            let mut v = RuleName {
                name: [0; RULE_NAME_LEN],
            };
            let n = name.len().min(RULE_NAME_LEN - 1);
            v.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            (u32::from(*slot), v)
        })
    }

    /// Those of the `candidates` rules (precedence indices) that cover every source prefix
    /// of the policy rule `rule`, or `None` when there is none (or the rule has no source).
    /// Stops at the first source no candidate covers: a rule of 100k sources is usually
    /// settled by its first few.
    pub(crate) fn candidates_covering_all_sources(
        &self,
        rule: &Rule,
        candidates: Bits,
    ) -> Option<Bits> {
        let mut acc = candidates;
        if rule.sources.is_empty() {
            return None;
        }
        for src in &rule.sources {
            let class = match src {
                ipnet::IpNet::V4(n) => self
                    .v4
                    .binary_search_by(|(p, _)| p.cmp(n))
                    .ok()
                    .map(|i| self.v4[i].1),
                ipnet::IpNet::V6(n) => self
                    .v6
                    .binary_search_by(|(p, _)| p.cmp(n))
                    .ok()
                    .map(|i| self.v6[i].1),
            }
            .expect("every rule prefix is in the trie");
            let bits = &self.class_rules[class as usize];
            let mut any = 0;
            for (a, b) in acc.iter_mut().zip(bits) {
                *a &= b;
                any |= *a;
            }
            if any == 0 {
                return None;
            }
        }
        Some(acc)
    }
}

fn lpm_v4(table: &[(Ipv4Net, u32)], a: Ipv4Addr) -> Option<u32> {
    (0..=32u8).rev().find_map(|len| {
        let net = Ipv4Net::new(a, len).expect("length ≤ 32").trunc();
        table
            .binary_search_by(|(p, _)| p.cmp(&net))
            .ok()
            .map(|i| table[i].1)
    })
}

fn lpm_v6(table: &[(Ipv6Net, u32)], a: Ipv6Addr) -> Option<u32> {
    (0..=128u8).rev().find_map(|len| {
        let net = Ipv6Net::new(a, len).expect("length ≤ 128").trunc();
        table
            .binary_search_by(|(p, _)| p.cmp(&net))
            .ok()
            .map(|i| table[i].1)
    })
}

const _: () = assert!(SERVICE_INDEX_SPACE == SERVICE_CHUNKS * SEGMENT_CHUNK);
