//! Map key and value types. Every one is `#[repr(C)]`, `Copy`, free of implicit padding (a
//! padded key is a classic cause of failed lookups), and has its size asserted.

use core::mem::size_of;

use crate::layout::SEGMENT_CHUNK;
use crate::maps::{MAX_SEGMENTS, RULE_NAME_LEN};

/// `NG_CONTROL[0]`: the single word the loader flips to switch generations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Generation slot (0 or 1) the program reads for every packet.
    pub active_gen: u32,
    /// Non-zero once a generation has been fully written.
    pub ready: u32,
}
const _: () = assert!(size_of::<Control>() == 8);

/// `mode` values of [`GenConfig`].
pub mod mode {
    /// Drops are enforced.
    pub const ENFORCE: u32 = 0;
    /// Dry run: everything passes, would-drops are counted.
    pub const MONITOR: u32 = 1;
}

/// `return_mode` values of [`GenConfig`].
pub mod return_mode {
    /// No return-traffic rule.
    pub const OFF: u32 = 0;
    /// Stateless: TCP without SYN-only and UDP to the ephemeral port range pass.
    pub const EPHEMERAL: u32 = 1;
    /// A TC egress program learns outgoing flows; their replies pass.
    pub const STATEFUL: u32 = 2;
}

/// Bits of [`GenConfig::flags`].
pub mod flags {
    /// ARP passes as an essential.
    pub const ESSENTIAL_ARP: u32 = 1 << 0;
    /// IPv6 Neighbor Discovery (hop limit 255) passes as an essential.
    pub const ESSENTIAL_ND: u32 = 1 << 1;
    /// ICMP/ICMPv6 errors (incl. PMTU) pass as essentials.
    pub const ESSENTIAL_ICMP_ERRORS: u32 = 1 << 2;
    /// IPv4 packets with options are evaluated (else dropped as `ipv4-options`).
    pub const IPV4_OPTIONS_ALLOW: u32 = 1 << 3;
    /// Unknown ethertypes pass (else dropped as `unknown-ethertype`).
    pub const UNKNOWN_ETHERTYPE_PASS: u32 = 1 << 4;
    /// Non-first fragments follow their tracked first fragment.
    pub const FRAGMENT_TRACK: u32 = 1 << 5;
    /// Default verdict for IP traffic that matches nothing is pass.
    pub const DEFAULT_PASS: u32 = 1 << 6;
    /// The generation's IPv4 source table has an 18-bit root (`lookup::V4_ROOT_BITS`).
    /// A layout-4 loader sets this or [`V4_ROOT_20`]; a generation with neither was published
    /// by a layout-3 loader and has a 16-bit root (read only during a take-over).
    /// `lookup::v4_root_bits` turns the two into the root's bits.
    pub const V4_ROOT_18: u32 = 1 << 7;
    /// The generation's IPv4 source table has a 20-bit root (`lookup::V4_LARGE_ROOT_BITS`).
    pub const V4_ROOT_20: u32 = 1 << 8;
}

/// `NG_GENCFG[generation]`: the settings of one rule generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    /// [`mode`] value.
    pub mode: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// [`return_mode`] value.
    pub return_mode: u32,
    /// Lowest ephemeral port (inclusive), for `return_mode::EPHEMERAL`.
    pub ephemeral_lo: u16,
    /// Highest ephemeral port (inclusive).
    pub ephemeral_hi: u16,
    /// Monotonic generation number (never reused), for logs and tests.
    pub epoch: u64,
    /// Drop samples allowed per CPU per second (0 disables sampling).
    pub samples_per_sec: u32,
    /// `return_mode::STATEFUL`: seconds an established TCP flow lives after the node's last
    /// packet on it.
    pub flow_tcp_secs: u32,
    /// Seconds a TCP flow lives once a FIN or RST was seen (either direction).
    pub flow_tcp_closing_secs: u32,
    /// Seconds a UDP flow lives after the node's last datagram on it.
    pub flow_udp_secs: u32,
    /// Seconds an ICMP/ICMPv6 echo flow lives after the node's last echo request.
    pub flow_icmp_secs: u32,
    /// Word offset of this generation's IPv4 source lookup table in `NG_SRC4`.
    pub src_v4_base: u32,
    /// Word offset of this generation's IPv6 source lookup table in `NG_SRC6`.
    pub src_v6_base: u32,
    /// Words this generation's IPv4 table uses (for `stats`; the program does not read it).
    pub src_v4_words: u32,
    /// Words this generation's IPv6 table uses.
    pub src_v6_words: u32,
}
const _: () = assert!(size_of::<GenConfig>() == 64);

/// `NG_IFACES[ifindex]`, and `NG_IFINDEX[ifindex]` for small ifindexes (all zero: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceEntry {
    /// Counter slot, 1..MAX_IFACES.
    pub slot: u32,
    /// The config's settings for this interface (mode, default, rule profile), one byte of
    /// [`iface_override`] bits per generation slot.
    pub overrides: u32,
}
const _: () = assert!(size_of::<IfaceEntry>() == 8);

/// Per-interface settings of a generation ([`IfaceEntry::overrides`]): mode and default
/// overrides and the rule profile.
///
/// Each generation slot has its own byte, so a reload writes the inactive slot's byte of
/// every interface before it flips the control word: an interface's settings change in the
/// same instant as the rules they belong to, never before or after.
pub mod iface_override {
    use crate::GENERATIONS;

    /// The interface overrides the generation's mode.
    pub const MODE: u32 = 1 << 0;
    /// With [`MODE`]: monitor (else enforce).
    pub const MONITOR: u32 = 1 << 1;
    /// The interface overrides the generation's default verdict.
    pub const DEFAULT: u32 = 1 << 2;
    /// With [`DEFAULT`]: pass (else drop).
    pub const DEFAULT_PASS: u32 = 1 << 3;
    /// Rule profile (`NG_ROWS`): which rules apply on the interface, when rules name
    /// interfaces. 0 is the profile of interfaces no rule names.
    pub const PROFILE_SHIFT: u32 = 4;
    /// Mask of the profile bits.
    pub const PROFILE: u32 = (crate::MAX_PROFILES - 1) << PROFILE_SHIFT;
    /// Every meaningful bit of one generation's byte.
    pub const ALL: u32 = MODE | MONITOR | DEFAULT | DEFAULT_PASS | PROFILE;

    /// The profile in one generation's bits.
    #[inline(always)]
    pub const fn profile(bits: u32) -> u32 {
        (bits & PROFILE) >> PROFILE_SHIFT
    }

    const GEN_SHIFT: u32 = 8;
    const _: () = assert!(GENERATIONS * GEN_SHIFT <= u32::BITS && ALL < 1 << GEN_SHIFT);
    const _: () = assert!(crate::MAX_PROFILES.is_power_of_two());

    /// The bits of generation slot `generation` (masked to a valid slot).
    #[inline(always)]
    pub const fn of_gen(overrides: u32, generation: u32) -> u32 {
        (overrides >> ((generation & (GENERATIONS - 1)) * GEN_SHIFT)) & ALL
    }

    /// `overrides` with generation slot `generation`'s bits replaced by `bits`.
    #[inline(always)]
    pub const fn with_gen(overrides: u32, generation: u32, bits: u32) -> u32 {
        let shift = (generation & (GENERATIONS - 1)) * GEN_SHIFT;
        (overrides & !(ALL << shift)) | ((bits & ALL) << shift)
    }
}

/// `NG_SEGMENTS` value: segment ids of [`SEGMENT_CHUNK`] consecutive service keys.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentChunk {
    /// Segment id per key; 0 = no rule covers that key.
    pub seg: [u16; SEGMENT_CHUNK as usize],
}
const _: () = assert!(size_of::<SegmentChunk>() == 512);

/// `NG_CELLS` value: the decision per segment for one (generation, class, kind).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassCells {
    /// Packed [`crate::Cell`] per segment id.
    pub cell: [u32; MAX_SEGMENTS as usize],
}
const _: () = assert!(size_of::<ClassCells>() == 512);

/// A per-CPU packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (frame length as seen by XDP).
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// `NG_RULE_NAMES[slot]`: NUL-padded UTF-8 rule name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleName {
    /// Name bytes; unused tail is zero.
    pub name: [u8; RULE_NAME_LEN],
}
const _: () = assert!(size_of::<RuleName>() == 64);

/// A drop sample sent to the loader through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropSample {
    /// Interface the packet arrived on.
    pub ifindex: u32,
    /// [`crate::Reason`] code.
    pub reason: u32,
    /// Rule slot that decided, 0 if none.
    pub rule: u32,
    /// 4 or 6; 0 for non-IP frames.
    pub family: u8,
    /// IP protocol (after extension headers).
    pub proto: u8,
    /// 1 when the packet was only a would-drop (monitor mode).
    pub monitor: u8,
    /// Explicit padding; zero.
    pub _pad: u8,
    /// Source port (host order), 0 if none.
    pub sport: u16,
    /// Destination port or ICMP type (host order), 0 if none.
    pub dport: u16,
    /// Source address; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    /// Destination address; IPv4 in the first 4 bytes.
    pub dst: [u8; 16],
}
const _: () = assert!(size_of::<DropSample>() == 52);

/// `NG_SAMPLE_RL[0]` per CPU: token bucket state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleBucket {
    /// When the bucket was last refilled (bpf_ktime_get_ns).
    pub last_ns: u64,
    /// Tokens left (at most the rate, a u32).
    pub tokens: u32,
    /// Low 32 bits of the kernel tick (jiffies) when the clock was last read: within one
    /// tick the bucket cannot have earned anything a look at the clock would show at tick
    /// resolution, so the drop path reads the clock only once per tick. Was the high half of
    /// a u64 `tokens` in earlier builds (always 0 there): a bucket taken over from one reads
    /// the clock on its first drop.
    pub tick: u32,
}
const _: () = assert!(size_of::<SampleBucket>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (for each impl below): all of these are repr(C), Copy, and free of padding
    // (sizes asserted above), so any bit pattern is a valid value.
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Control {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GenConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfaceEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SegmentChunk {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClassCells {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleName {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropSample {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SampleBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowState {}
}

/// `NG_FRAGS` key: one fragmented datagram (RFC 791 / RFC 8200 reassembly identity).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// 4 or 6.
    pub family: u8,
    /// IP protocol of the fragmented payload.
    pub proto: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 2],
    /// Identification (IPv4: 16 bits widened; IPv6: 32 bits), host order.
    pub id: u32,
    /// Source address; IPv4 in the first 4 bytes, rest zero.
    pub src: [u8; 16],
    /// Destination address; IPv4 in the first 4 bytes, rest zero.
    pub dst: [u8; 16],
}
const _: () = assert!(size_of::<FragKey>() == 40);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no padding (size asserted above).
unsafe impl aya::Pod for FragKey {}

/// `NG_FLOWS` key: a flow the node opened, in *inbound orientation* — the tuple its replies
/// carry. The TC egress program sees local → remote and stores it swapped; the XDP program
/// looks up an inbound packet's (src, dst, sport, dport) as they are.
///
/// ICMP/ICMPv6 echo: `remote_port` is the echo identifier, `local_port` 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// 4 or 6.
    pub family: u8,
    /// IP protocol: TCP, UDP, ICMP (v4) or ICMPv6 (v6).
    pub proto: u8,
    /// Explicit padding; zero.
    pub _pad: [u8; 2],
    /// The remote port (the inbound reply's source port), or the echo identifier; host order.
    pub remote_port: u16,
    /// The node's port (the inbound reply's destination port), 0 for echo; host order.
    pub local_port: u16,
    /// The remote address (the reply's source); IPv4 in the first 4 bytes, rest zero.
    pub remote: [u8; 16],
    /// The node's address (the reply's destination); IPv4 in the first 4 bytes, rest zero.
    pub local: [u8; 16],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Bits of [`FlowState::flags`].
pub mod flow_flags {
    /// A FIN or RST was seen in either direction: the shorter `tcp_closing` timeout applies.
    pub const CLOSING: u32 = 1 << 0;
}

/// `NG_FLOWS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// When the node last sent a packet on the flow (bpf_ktime_get_ns).
    pub last_seen_ns: u64,
    /// [`flow_flags`] bits.
    pub flags: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<FlowState>() == 16);

/// `NG_FLOW_STATS` slots (per-CPU `u64`).
pub mod flow_stat {
    /// New flow entries the egress program inserted.
    pub const INSERTS: u32 = 0;
    /// Egress packets that refreshed an existing entry.
    pub const REFRESHES: u32 = 1;
    /// Entries that entered the closing state (FIN/RST seen).
    pub const CLOSING: u32 = 2;
    /// Number of slots.
    pub const SLOTS: u32 = 3;
}
