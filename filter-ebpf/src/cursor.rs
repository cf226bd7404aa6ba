//! The one place that touches packet memory. Every read goes through [`Cursor`], which checks
//! it twice: logically against the end the parser has established so far (the frame, then the
//! IP packet — Ethernet padding after it is never read, VERDICTS.md §2), and physically against
//! `data_end` so the verifier can see the access is in bounds.

use core::hint::black_box;

use aya_ebpf::{bindings::xdp_md, helpers::bpf_xdp_get_buff_len, programs::XdpContext};

/// Largest offset the program reads at. Only for the verifier: it learns nothing from a
/// bounds check on a packet pointer whose variable offset plus constant may exceed 0xffff
/// (`MAX_PACKET_OFF`), and LLVM moves small constants between the two freely, so the bound
/// sits well below that. No legitimate read goes past 62 + 8 × 2048 + 60 bytes (VLAN tags,
/// IPv6 header, a full extension chain, a TCP header); a frame without XDP multi-buffer
/// support is one page anyway.
const MAX_READ_OFFSET: usize = 0x7fff;

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

    /// Pointer to the `N` bytes at `off`, or `None` if any of them lies outside the readable
    /// range. Callers check lengths themselves (each shortfall has its own reason); `None`
    /// here means a parser bug and becomes `internal-error`.
    #[inline(always)]
    fn ptr<const N: usize>(&self, off: usize) -> Option<*const u8> {
        if off > MAX_READ_OFFSET - N || off + N > self.end {
            return None;
        }
        let p = self.ctx.data() + off;
        // Verifier only: the logical check above already implies this one (`end` never
        // exceeds the frame), but the verifier tracks packet ranges against `data_end`.
        // NB: `black_box` keeps LLVM from rewriting `p + 1 > data_end` as `p >= data_end`,
        // from which the verifier learns no range when `p` has a variable offset.
        if black_box(p + N) > self.ctx.data_end() {
            return None;
        }
        Some(p as *const u8)
    }

    /// The `N` bytes at `off` (see [`Cursor::ptr`]).
    #[inline(always)]
    pub fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.ptr::<N>(off)?;
        // SAFETY: [p, p + N) lies inside the packet buffer (checked by `ptr`), and a byte
        // array has no alignment requirement.
        Some(unsafe { core::ptr::read(p as *const [u8; N]) })
    }

    /// Copy the `N` bytes at `off` into `dst` (addresses).
    ///
    /// NB: a plain array read would let LLVM turn the copy into a `memmove` (it cannot prove
    /// packet and stack do not overlap), which bpf-linker lowers to a call of a byte loop;
    /// `copy_nonoverlapping` becomes a `memcpy`, expanded inline.
    #[inline(always)]
    pub fn copy<const N: usize>(&self, off: usize, dst: &mut [u8; N]) -> Option<()> {
        let p = self.ptr::<N>(off)?;
        // SAFETY: [p, p + N) lies inside the packet (checked by `ptr`), `dst` is N writable
        // bytes on the stack, and the two cannot overlap.
        unsafe { core::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), N) };
        Some(())
    }

    /// The byte at `off`.
    #[inline(always)]
    pub fn u8(&self, off: usize) -> Option<u8> {
        self.bytes::<1>(off).map(|b| b[0])
    }

    /// The big-endian 16-bit field at `off`.
    #[inline(always)]
    pub fn be16(&self, off: usize) -> Option<u16> {
        self.bytes::<2>(off).map(u16::from_be_bytes)
    }

    /// The big-endian 32-bit field at `off`.
    #[inline(always)]
    pub fn be32(&self, off: usize) -> Option<u32> {
        self.bytes::<4>(off).map(u32::from_be_bytes)
    }
}

/// Frame length in bytes.
///
/// NB: `data_end - data` would be pointer-minus-pointer, which the verifier only accepts from
/// a loader with CAP_PERFMON; the helper keeps the program loadable with CAP_BPF +
/// CAP_NET_ADMIN. The program is not loaded with `BPF_F_XDP_HAS_FRAGS`, so the frame is one
/// linear buffer and this equals `data_end - data`.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: the helper only reads the XDP buffer the context describes.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}
