//! The state one evaluation carries from stage to stage (VERDICTS.md), and the [`Summary`]
//! the parser hands to the verdict/epilogue half (`finish.rs`).

use core::{
    mem::{size_of, MaybeUninit},
    ops::ControlFlow,
    ptr::write_volatile,
};

use filter_common::{flags, iface_override, mode, GenConfig, Reason, ServiceKind};

use crate::{proto::L4_HEAD, scratch::Key, walk::Address};

/// A stage either ends the evaluation with a verdict (`Break`) or hands its result to the
/// next stage (`Continue`), so `?` reads like the document: "the first stage that reaches a
/// reason ends the evaluation".
pub type Flow<T> = ControlFlow<Verdict, T>;

/// The end of an evaluation: why, and which rule decided (slot, 0 = none).
#[derive(Clone, Copy)]
pub struct Verdict {
    pub reason: Reason,
    pub rule: u32,
}

impl Verdict {
    /// A verdict no rule took part in.
    #[inline(always)]
    pub const fn of(reason: Reason) -> Self {
        Verdict { reason, rule: 0 }
    }

    /// End the evaluation with `reason`.
    #[inline(always)]
    pub const fn stop<T>(reason: Reason) -> Flow<T> {
        ControlFlow::Break(Verdict::of(reason))
    }
}

/// Unwrap a value that cannot be missing (an in-bounds read, an array slot); if it is missing
/// anyway the packet ends as `internal-error` (dropped: fail closed).
#[inline(always)]
pub fn need<T>(value: Option<T>) -> Flow<T> {
    match value {
        Some(v) => ControlFlow::Continue(v),
        None => Verdict::stop(Reason::Internal),
    }
}

/// `Packet::family` values (also those of `DropSample` and `FragKey`).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

// The types below cross into the second half (finish.rs) through the per-CPU scratch
// (scratch.rs): plain integers only and no implicit padding, so that `zeroed` writes every
// byte (what clears an earlier packet's leftovers from the scratch).

/// What the parser learned about the packet: for later stages, the drop sample and fragment
/// tracking. Fields stay zero until the parser gets that far.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Packet {
    /// 0 (not IP), [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// IP protocol after the extension headers read so far.
    pub proto: u8,
    /// IPv6 hop limit (Neighbor Discovery check).
    pub hop_limit: u8,
    /// 1 for a first fragment (offset 0, more fragments): its pass is remembered.
    pub first_frag: u8,
    /// 1 when an IPv6 Fragment header was present (atomic fragments included).
    pub fragmented: u8,
    /// Protocol as the datagram's fragment headers carry it.
    pub frag_proto: u8,
    /// Source port, 0 if none.
    pub sport: u16,
    /// Destination port or ICMP type, 0 if none.
    pub dport: u16,
    pub _pad: [u8; 2],
    /// Fragment identification when fragmented.
    pub frag_id: u32,
    /// Addresses in network order; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
const _: () = assert!(size_of::<Packet>() == 48);

impl Packet {
    #[inline(always)]
    pub fn is_first_frag(&self) -> bool {
        self.first_frag != 0
    }

    /// The source address as the table walk reads it.
    #[inline(always)]
    pub fn source(&self) -> &Address {
        // SAFETY: `Address` is four u32s over 16 bytes, any bits valid; `src` is 4-byte
        // aligned (asserted below).
        unsafe { &*self.src.as_ptr().cast::<Address>() }
    }

    /// Store the addresses as the header copy's words give them (`cursor::Front::words`):
    /// `W` = 1 for IPv4 (the first 4 bytes of each field), 4 for IPv6. Stored as words, not
    /// bytes: both fields are 4-byte aligned (asserted below).
    #[inline(always)]
    pub fn set_addresses<const W: usize>(&mut self, src: [u32; W], dst: [u32; W]) {
        const { assert!(W * 4 <= 16) };
        // SAFETY: W words fit the 16-byte fields (asserted); both are 4-byte aligned.
        unsafe {
            self.src.as_mut_ptr().cast::<[u32; W]>().write(src);
            self.dst.as_mut_ptr().cast::<[u32; W]>().write(dst);
        }
    }
}
const _: () = assert!(
    core::mem::align_of::<Packet>() >= 4
        && core::mem::offset_of!(Packet, src).is_multiple_of(4)
        && core::mem::offset_of!(Packet, dst).is_multiple_of(4)
);

/// The service a packet asks for: the (kind, key) the rule tables are indexed by.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Service {
    /// `ServiceKind` discriminant.
    pub kind: u32,
    /// Destination port, ICMP type or protocol number (layout.rs).
    pub key: u32,
    /// TCP flags byte (return traffic); 0 otherwise.
    pub tcp_flags: u8,
    /// ICMP code (PMTU essential); 0 otherwise.
    pub icmp_code: u8,
    /// Identifier of an ICMP/ICMPv6 echo reply (stateful return traffic); 0 otherwise.
    pub echo_id: u16,
}
const _: () = assert!(size_of::<Service>() == 12);

impl Service {
    pub const NONE: Service = Service {
        kind: ServiceKind::Other as u32,
        key: 0,
        tcp_flags: 0,
        icmp_code: 0,
        echo_id: 0,
    };

    #[inline(always)]
    pub fn kind(&self) -> ServiceKind {
        match self.kind {
            0 => ServiceKind::Tcp,
            1 => ServiceKind::Udp,
            2 => ServiceKind::Icmp,
            3 => ServiceKind::Icmpv6,
            _ => ServiceKind::Other,
        }
    }
}

/// The active generation's settings, copied once per packet so one packet never sees two
/// versions of them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Settings {
    /// Generation slot that judges this packet.
    pub generation: u32,
    /// 1 in monitor mode.
    pub monitor: u32,
    pub flags: u32,
    pub return_mode: u32,
    pub ephemeral_lo: u16,
    pub ephemeral_hi: u16,
    pub samples_per_sec: u32,
    /// Flow timeouts (stateful return traffic), seconds: TCP, TCP closing, UDP, ICMP echo.
    pub flow_tcp_secs: u32,
    pub flow_tcp_closing_secs: u32,
    pub flow_udp_secs: u32,
    pub flow_icmp_secs: u32,
    /// Rule profile of the arriving interface (`NG_ROWS`); 0 unless rules name interfaces.
    pub profile: u32,
    /// Word offsets of this generation's source lookup tables (`lookup`).
    pub src_v4_base: u32,
    pub src_v6_base: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Settings>() == 56);

impl Settings {
    #[inline(always)]
    pub fn new(generation: u32, cfg: &GenConfig) -> Self {
        Settings {
            generation,
            monitor: u32::from(cfg.mode == mode::MONITOR),
            flags: cfg.flags,
            return_mode: cfg.return_mode,
            ephemeral_lo: cfg.ephemeral_lo,
            ephemeral_hi: cfg.ephemeral_hi,
            samples_per_sec: cfg.samples_per_sec,
            flow_tcp_secs: cfg.flow_tcp_secs,
            flow_tcp_closing_secs: cfg.flow_tcp_closing_secs,
            flow_udp_secs: cfg.flow_udp_secs,
            flow_icmp_secs: cfg.flow_icmp_secs,
            profile: 0,
            src_v4_base: cfg.src_v4_base,
            src_v6_base: cfg.src_v6_base,
            _pad: 0,
        }
    }

    /// Apply the [`iface_override`] bits the arriving interface has for this generation
    /// (the config's `interfaces:` section).
    #[inline(always)]
    pub fn override_for_iface(&mut self, bits: u32) {
        self.profile = iface_override::profile(bits);
        if bits & iface_override::MODE != 0 {
            self.monitor = u32::from(bits & iface_override::MONITOR != 0);
        }
        if bits & iface_override::DEFAULT != 0 {
            self.flags &= !flags::DEFAULT_PASS;
            if bits & iface_override::DEFAULT_PASS != 0 {
                self.flags |= flags::DEFAULT_PASS;
            }
        }
    }

    /// Whether a `filter_common::flags` bit is set.
    #[inline(always)]
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// `Summary::reason` while §5–§8 still have to judge the service.
pub const PENDING: u32 = u32::MAX;

/// What the parser hands to `finish`: a verdict, or [`PENDING`] with the service to judge.
#[repr(C, align(8))]
pub struct Summary {
    /// [`Reason`] code, or [`PENDING`].
    pub reason: u32,
    /// Deciding rule slot, 0 if none.
    pub rule: u32,
    /// Frame length in bytes.
    pub len: u32,
    /// 1 once `settings` holds the active generation's (0: not configured, or its config
    /// could not be read).
    pub configured: u32,
    pub settings: Settings,
    pub packet: Packet,
    pub service: Service,
    /// Counter slot of the arriving interface (0: not registered by the loader).
    pub iface_slot: u32,
    /// Where the spectre-hardened variant's map lookups put their key (`scratch::Key`): in
    /// the summary, so that one pointer reaches both.
    pub key: Key,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Summary>() == 144);

/// Types that are valid all-zero and whose size is a whole number of aligned 8-byte words.
///
/// # Safety
/// Every field must be an integer or an array of integers, and `align_of::<T>() >= 8`.
pub unsafe trait Words {}
// SAFETY: integers only (the key's in a cell); align(8) and size asserted above.
unsafe impl Words for Summary {}

/// Zero `slot` and hand it out initialised.
///
/// NB: LLVM folds runs of zero stores into `memset`, which bpf-linker's codegen does not
/// expand inline but calls: a byte loop costing hundreds of instructions per packet.
/// Volatile word stores cannot be folded.
#[inline(always)]
pub fn zeroed<T: Words>(slot: &mut MaybeUninit<T>) -> &mut T {
    const { assert!(size_of::<T>().is_multiple_of(8) && core::mem::align_of::<T>() >= 8) };
    let words = slot.as_mut_ptr().cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: in bounds of `slot`, 8-aligned (asserted above).
        unsafe { write_volatile(words.add(i), 0) };
    }
    // SAFETY: all bytes are zero, a valid value of T (`Words`).
    unsafe { slot.assume_init_mut() }
}

/// Copy a 16-byte address in four 4-byte words. A plain array write compiles to a `memmove`
/// call whose overlap check subtracts pointers, which the verifier refuses without
/// CAP_PERFMON.
///
/// # Safety
/// `dst` must be valid for writes and 4-byte aligned (the address fields of DropSample and
/// FragKey are).
#[inline(always)]
pub unsafe fn copy_address(dst: *mut [u8; 16], src: &[u8; 16]) {
    let dst = dst as *mut u32;
    for i in 0..4 {
        // SAFETY: i < 4 keeps both sides inside their 16 bytes; dst is aligned (caller).
        unsafe {
            let word = core::ptr::read_unaligned(src.as_ptr().add(i * 4) as *const u32);
            core::ptr::write_volatile(dst.add(i), word);
        }
    }
}

/// What the IPv4 and IPv6 parsers hand the transport parser: where L4 starts, where the IP
/// packet ends, and the protocol found there.
pub struct L3 {
    pub l4: usize,
    pub end: usize,
    pub proto: u8,
    /// The first bytes at `l4`, when they came with the IP header's read. They may run past
    /// `end`; the L4 parser only uses what its length checks allow.
    pub l4_head: Option<[u8; L4_HEAD]>,
}
