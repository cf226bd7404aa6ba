//! The one place that touches packet memory. Packet bytes are copied into local arrays —
//! [`Front`] for the ethertype read that also brings the network header and L4 head,
//! [`Cursor::read`] for any other header — and parsers take fields from those copies at
//! constant positions ([`be16`], [`be32`]). Every read is checked logically against the end
//! the parser has established so far: the frame, then the IP packet. Ethernet padding after
//! the IP packet may be copied along with a header, but no decision uses it: every use of a
//! byte is behind the length check VERDICTS.md §2–§4 prescribes.
//!
//! Three ways bytes are copied:
//! - the untagged frame's front, at the constant offset 12, straight from packet memory
//!   ([`Front::load_direct`]): the verifier checks a constant offset against `data_end`
//!   itself and needs no CAP_PERFMON, and no helper call is paid;
//! - in the `native` variant ([`NG_PERFMON`]), anything else inside the linear part, straight
//!   from packet memory at its *variable* offset (VLAN depth, IHL, extension headers:
//!   [`Cursor::copy_direct`]), which is pointer arithmetic the verifier allows only with
//!   CAP_PERFMON;
//! - otherwise with `bpf_xdp_load_bytes`: in the spectre-hardened variant (CAP_BPF +
//!   CAP_NET_ADMIN on 6.18, README), whose verifier refuses a packet pointer plus a variable
//!   offset (its Spectre v1 sanitation has no bound for packet pointers) as it does variable
//!   offsets into the stack; past the linear part; and for the transport header a long IP
//!   header pushed out of the front ([`Cursor::read_by_helper`]). The helper takes the
//!   offset as a number and checks the range itself, at a few tens of nanoseconds a call.

use core::mem::{size_of, MaybeUninit};

use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::XdpContext,
};

use crate::proto::{ETH_TYPE, IPV4_HEAD, IPV6_HEAD};

/// Bounds-checked reader over the frame of one XDP context.
pub struct Cursor<'a> {
    ctx: &'a XdpContext,
    /// Offset one past the last byte that may be read.
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over the whole frame.
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        Cursor {
            ctx,
            end: frame_len(ctx),
        }
    }

    /// A cursor whose readable range ends at `end`, which the caller has established.
    #[inline(always)]
    pub fn within(ctx: &'a XdpContext, end: usize) -> Self {
        Cursor { ctx, end }
    }

    /// The raw context, for handing to a global BPF function.
    #[inline(always)]
    pub fn raw_ctx(&self) -> *mut xdp_md {
        self.ctx.ctx
    }

    /// Offset one past the last readable byte: the frame length, or the end of the IP packet
    /// once [`Cursor::limit_to`] has been called.
    #[inline(always)]
    pub fn end(&self) -> usize {
        self.end
    }

    /// Forbid reads at or after `end` (the IP packet's end; what follows is padding).
    #[inline(always)]
    pub fn limit_to(&mut self, end: usize) {
        if end < self.end {
            self.end = end;
        }
    }

    /// Whether the `n` bytes at `off` are readable.
    #[inline(always)]
    pub fn has(&self, off: usize, n: usize) -> bool {
        off + n <= self.end
    }

    /// A copy of the `N` bytes at `off`, or `None` if any of them lies outside the readable
    /// range. Callers check lengths themselves (each shortfall has its own reason); `None`
    /// here means a parser bug and becomes `internal-error`.
    #[inline(always)]
    pub fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.read_via::<N, true>(off)
    }

    /// [`Cursor::read`] through the helper in every variant. For the transport header of a
    /// frame whose IP header did not bring it along (IPv4 options, IPv6 extension headers):
    /// the direct copy there took the verifier from 26,664 to 79,532 instructions (6.18, as
    /// root) and the hardened load from 55,247 to 94,065, for frames that are rare.
    #[inline(always)]
    pub fn read_by_helper<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.read_via::<N, false>(off)
    }

    /// [`Cursor::read`], straight from packet memory when `DIRECT` and
    /// [`Cursor::copy_direct`] can, else with the helper.
    #[inline(always)]
    fn read_via<const N: usize, const DIRECT: bool>(&self, off: usize) -> Option<[u8; N]> {
        if off > u32::MAX as usize || off + N > self.end {
            return None;
        }
        let mut buf = MaybeUninit::<Aligned<N>>::uninit();
        if !DIRECT || !self.copy_direct::<N>(off, buf.as_mut_ptr().cast()) {
            // SAFETY: the helper writes exactly N bytes into `buf` or fails; it checks the
            // range against the packet itself.
            let rc = unsafe {
                bpf_xdp_load_bytes(self.ctx.ctx, off as u32, buf.as_mut_ptr().cast(), N as u32)
            };
            if rc != 0 {
                return None;
            }
        }
        // SAFETY: the direct copy or the helper wrote all N bytes.
        Some(unsafe { buf.assume_init() }.0)
    }

    /// Copy the `N` bytes at packet offset `off` to `dst` straight from packet memory, in
    /// the `native` variant ([`NG_PERFMON`]) only: a packet pointer plus a *variable* offset
    /// is pointer arithmetic the verifier allows only with CAP_PERFMON. `false` when the
    /// caller must use the helper instead: the hardened variant, an odd offset or length, or
    /// bytes past the linear part (frags, under `BPF_PROG_TEST_RUN`). Every header offset of
    /// a frame is even (Ethernet 14, tags 4, IP header lengths in units of 4 or 8).
    ///
    /// Each helper call costs a call and a return, which the kernel's return thunks make
    /// dear: an allowed SYN behind one VLAN tag measured 160 ns with helper reads and 104 ns
    /// with direct ones, against 97 ns untagged (docs/ARCHITECTURE.md, "Per-packet cost").
    #[inline(always)]
    fn copy_direct<const N: usize>(&self, off: usize, dst: *mut u16) -> bool {
        if !N.is_multiple_of(2) || !native() || off > DIRECT_MAX_OFF || !off.is_multiple_of(2) {
            return false;
        }
        let (data, data_end) = (self.ctx.data(), self.ctx.data_end());
        let from = data + off;
        if from + N > data_end {
            return false;
        }
        let src = from as *const u16;
        let mut i = 0;
        // Constant bound: unrolled into N / 2 load/store pairs.
        while i < N / 2 {
            // SAFETY: 2-byte aligned reads (packet data is 2-byte aligned, see
            // `Front::load_direct`, and `off` is even) inside the linear part (checked
            // against data_end) into `dst`, which the caller makes 2-byte aligned and N
            // bytes long.
            unsafe { dst.add(i).write(src.add(i).read()) };
            i += 1;
        }
        true
    }
}

/// `N` bytes, 2-byte aligned so that [`Cursor::copy_direct`] can fill them in halfwords (the
/// BPF backend splits any store it cannot prove aligned into single bytes).
#[repr(C, align(2))]
struct Aligned<const N: usize>([u8; N]);

/// Highest packet offset the `native` variant reads straight from packet memory: the
/// verifier wants a variable offset bounded, and no linear part is longer (3,520 bytes at
/// most under `BPF_PROG_TEST_RUN`, one page from a driver).
const DIRECT_MAX_OFF: usize = 4096;

/// Whether this load is the `native` variant ([`NG_PERFMON`]).
#[inline(always)]
pub fn native() -> bool {
    // SAFETY: a plain read of a global the loader sets before the load.
    unsafe { core::ptr::read_volatile(&NG_PERFMON) != 0 }
}

/// The frame's ethertype and the bytes after it, copied out in one read; later the network
/// header (with the L4 head) when a VLAN tag or a short frame kept the first read from
/// holding it.
///
/// Every packet read is a helper call, so the common untagged frame is read once for its
/// ethertype, network header and L4 head together. Fields are taken at constant positions
/// (the verifier forbids variable stack offsets without CAP_PERFMON): the network header
/// always sits at [`L3`].
pub struct Front<'a> {
    /// Where the copy lives decides what a packet costs in each variant:
    /// - `native`: on the stack. LLVM then sees every store and load of the copy, keeps
    ///   fields in registers and drops copies nothing reads: measured 13 ns a packet less
    ///   than the same copy in a map value. Bytes never written are never read either
    ///   ([`Front::view`] checks `held`); LLVM may still load them ahead of that check (a
    ///   select instead of a branch), which the verifier allows with CAP_PERFMON.
    /// - `spectre-hardened`: in the per-CPU scratch (`scratch.rs`), where the verifier puts
    ///   no speculation barrier after a store, and whose bytes are always readable: what an
    ///   earlier packet left there is never used, by the same `held` check. On the stack the
    ///   copy needed clearing first (seven barriers a packet), and each change of `held`
    ///   was one more.
    copy: &'a mut FrontCopy,
}

/// The copy and how much of it the current packet wrote; 8-byte aligned: the direct read
/// copies in words.
#[repr(C, align(8))]
pub struct FrontCopy {
    /// How many bytes of network header (and beyond) `bytes[L3..]` holds.
    held: usize,
    bytes: MaybeUninit<[u8; FRONT_LEN]>,
}

// `Front::words` relies on it.
const _: () = assert!(core::mem::offset_of!(FrontCopy, bytes).is_multiple_of(8));

/// Room before the ethertype, the ethertype, the IPv6 header and the L4 head.
const FRONT_LEN: usize = L3 + IPV6_HEAD;

/// Where the network header sits in the copy: 8 bytes in, so that every address and 4-byte
/// field of an IPv4 or IPv6 header, and the L4 head after a header without options or
/// extensions, sits at its natural alignment. LLVM then moves them in words; with the header
/// 2 bytes in, an IPv6 packet's two addresses went to the summary as 32 single-byte loads
/// and 32 stores.
const L3: usize = 8;

/// Where the ethertype sits: right before the network header.
const ETHERTYPE_AT: usize = L3 - ETHERTYPE_LEN;
const ETHERTYPE_LEN: usize = size_of::<u16>();

impl<'a> Front<'a> {
    /// An empty copy in `slot`.
    #[inline(always)]
    pub fn new(slot: &'a mut MaybeUninit<FrontCopy>) -> Self {
        Front {
            copy: slot.write(FrontCopy {
                held: 0,
                bytes: MaybeUninit::uninit(),
            }),
        }
    }

    /// Read the `N` bytes at packet offset `off` into the copy at `AT`.
    #[inline(always)]
    fn load<const AT: usize, const N: usize>(&mut self, cur: &Cursor, off: usize) -> Option<()> {
        const { assert!(AT + N <= FRONT_LEN) };
        if off > u32::MAX as usize || off + N > cur.end {
            return None;
        }
        // SAFETY: AT + N <= FRONT_LEN bytes of our buffer (asserted), which is 8-byte aligned,
        // at an even AT (ETHERTYPE_AT or L3).
        let dst = unsafe { self.copy.bytes.as_mut_ptr().cast::<u8>().add(AT) };
        const { assert!(AT.is_multiple_of(2)) };
        if !cur.copy_direct::<N>(off, dst.cast()) {
            // SAFETY: as above; the helper checks the packet range.
            let rc = unsafe { bpf_xdp_load_bytes(cur.ctx.ctx, off as u32, dst.cast(), N as u32) };
            if rc != 0 {
                return None;
            }
        }
        self.copy.held = AT + N - L3;
        Some(())
    }

    /// Copy the `N` bytes at the constant packet offset `OFF` straight from packet memory
    /// into the start of the copy, if the frame has them.
    ///
    /// Direct packet access needs no helper call, and with a *constant* offset no
    /// CAP_PERFMON either: the verifier checks `data + OFF + N <= data_end` itself. The
    /// common frame (untagged, any IP header with its L4 head) gets all its bytes this way.
    /// The copy moves 16-bit words: the BPF backend splits anything it cannot prove aligned
    /// into single bytes. Packet data is 2-byte aligned: the verifier's own alignment
    /// model places it at `NET_IP_ALIGN` (2) mod 4, and refuses to let a program test a
    /// packet pointer's alignment (`&=` on a pointer), so the kernel's invariant is what we
    /// rely on; the JITs (x86-64, arm64) load unaligned halfwords correctly regardless.
    #[inline(always)]
    fn load_direct<const OFF: usize, const AT: usize, const N: usize>(
        &mut self,
        cur: &Cursor,
    ) -> bool {
        const {
            assert!(
                AT + N <= FRONT_LEN
                    && N.is_multiple_of(2)
                    && OFF.is_multiple_of(2)
                    && AT.is_multiple_of(2)
            )
        };
        let (data, data_end) = (cur.ctx.data(), cur.ctx.data_end());
        if OFF + N > cur.end || data + OFF + N > data_end {
            return false;
        }
        let src = (data + OFF) as *const u16;
        // SAFETY: AT + N <= FRONT_LEN (asserted): inside our buffer, at an even offset.
        let dst = unsafe { self.copy.bytes.as_mut_ptr().cast::<u8>().add(AT) }.cast::<u16>();
        let mut i = 0;
        // Constant bound: unrolled into N / 2 load/store pairs.
        while i < N / 2 {
            // SAFETY: 2-byte aligned reads (OFF is even, asserted; packet data is aligned as
            // above) inside the frame (checked against data_end) into the 8-byte aligned
            // copy at an even AT, which holds FRONT_LEN >= AT + N bytes.
            unsafe { dst.add(i).write(src.add(i).read()) };
            i += 1;
        }
        self.copy.held = AT + N - L3;
        true
    }

    /// Read the ethertype at `off` and as much after it as fits the frame and the copy:
    /// an IPv6 header and L4 head, or an IPv4 header and L4 head, or nothing.
    #[inline(always)]
    pub fn read_ethertype(&mut self, cur: &Cursor, off: usize) -> Option<u16> {
        const V6: usize = ETHERTYPE_LEN + IPV6_HEAD;
        const V4: usize = ETHERTYPE_LEN + IPV4_HEAD;
        if off == ETH_TYPE
            && (self.load_direct::<ETH_TYPE, ETHERTYPE_AT, V6>(cur)
                || self.load_direct::<ETH_TYPE, ETHERTYPE_AT, V4>(cur))
        {
            // Fast path: the untagged frame's front, no helper. The shorter copy is what a
            // minimum-size IPv4 frame (60 bytes: a SYN, an ACK) has room for.
        } else if cur.has(off, V6) {
            self.load::<ETHERTYPE_AT, V6>(cur, off)?;
        } else if cur.has(off, V4) {
            self.load::<ETHERTYPE_AT, V4>(cur, off)?;
        } else {
            self.load::<ETHERTYPE_AT, ETHERTYPE_LEN>(cur, off)?;
        }
        // SAFETY: a load wrote at least the ethertype's 2 bytes.
        let b = unsafe { &*self.copy.bytes.as_ptr() };
        Some(u16::from_be_bytes([b[ETHERTYPE_AT], b[ETHERTYPE_AT + 1]]))
    }

    /// The copy no longer describes where the network header is (a VLAN tag moved it).
    #[inline(always)]
    pub fn forget(&mut self) {
        self.copy.held = 0;
    }

    /// Make sure the copy holds `N` bytes of network header from `l3`: kept from the first
    /// read, or read now — `WANT` bytes (header and L4 head) if the frame has them.
    #[inline(always)]
    pub fn network<const N: usize, const WANT: usize>(
        &mut self,
        cur: &Cursor,
        l3: usize,
    ) -> Option<()> {
        if self.copy.held < N {
            if cur.has(l3, WANT) {
                self.load::<{ L3 }, WANT>(cur, l3)?;
            } else {
                self.load::<{ L3 }, N>(cur, l3)?;
            }
        }
        Some(())
    }

    /// `M` bytes at `at` past the network header's start, if the copy holds them.
    #[inline(always)]
    pub fn view<const AT: usize, const M: usize>(&self) -> Option<&[u8; M]> {
        const { assert!(L3 + AT + M <= FRONT_LEN) };
        if self.copy.held < AT + M {
            return None;
        }
        // SAFETY: in bounds (asserted above) and written (`held` counts written bytes).
        Some(unsafe {
            &*self
                .copy
                .bytes
                .as_ptr()
                .cast::<u8>()
                .add(L3 + AT)
                .cast::<[u8; M]>()
        })
    }

    /// The `W` 4-byte words at `at` past the network header's start (addresses), if the copy
    /// holds them; bytes in packet order. Read as words, which needs `L3 + AT` aligned: the
    /// byte view of the same place costs LLVM a move per byte.
    #[inline(always)]
    pub fn words<const AT: usize, const W: usize>(&self) -> Option<[u32; W]> {
        const { assert!(L3 + AT + 4 * W <= FRONT_LEN && (L3 + AT).is_multiple_of(4)) };
        if self.copy.held < AT + 4 * W {
            return None;
        }
        // SAFETY: in bounds (asserted) and written (`held`); 4-byte aligned: the copy is
        // 8-byte aligned (`FrontCopy`, whose `bytes` follow an 8-byte field) and L3 + AT is a
        // multiple of 4 (asserted).
        Some(unsafe {
            self.copy
                .bytes
                .as_ptr()
                .cast::<u8>()
                .add(L3 + AT)
                .cast::<[u32; W]>()
                .read()
        })
    }
}

/// The first `M` bytes of a header copy.
#[inline(always)]
pub fn prefix<const N: usize, const M: usize>(h: &[u8; N]) -> [u8; M] {
    const { assert!(M <= N) };
    let mut out = [0u8; M];
    out.copy_from_slice(&h[..M]);
    out
}

/// The big-endian 16-bit field at `at` of a header copy.
#[inline(always)]
pub fn be16<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

/// The big-endian 32-bit field at `at` of a header copy.
#[inline(always)]
pub fn be32<const N: usize>(h: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// 1 when the loader holds CAP_PERFMON (set at load, `loader::Filter::load`; the native
/// variant). A read-only global: the verifier knows its value and checks only the branch it
/// selects, so a verifier that would refuse the native branch's pointer arithmetic (no
/// CAP_PERFMON) never sees it.
#[no_mangle]
static NG_PERFMON: u32 = 0;

/// Linear parts shorter than this are the whole frame (see [`frame_len`]).
const LINEAR_IS_WHOLE_BELOW: usize = 2048;

/// Frame length in bytes.
///
/// The program is not loaded with `BPF_F_XDP_HAS_FRAGS`, so a driver hands it one linear
/// buffer and the length is `data_end - data`. That is pointer minus pointer, which the
/// verifier accepts only with CAP_PERFMON; without it, the helper answers, at the price of
/// a call (measured 5-6 ns per packet on 6.18, where the kernel's return thunks make every
/// call dear). The one place a frame continues past its linear part is
/// `BPF_PROG_TEST_RUN`, which puts bytes past its first 3,520 into frags: a linear part that
/// long asks the helper, which counts the frags too.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    if native() {
        let linear = ctx.data_end().wrapping_sub(ctx.data());
        if linear < LINEAR_IS_WHOLE_BELOW {
            return linear;
        }
    }
    // SAFETY: the helper only reads the XDP buffer the context describes.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}
