//! Tiny XDP programs loaded with the raw `bpf(2)` syscall: the empty-program baseline of the
//! timing runs (`r0 = XDP_PASS; exit`), the bare `XDP_DROP` ceiling of the veth pipeline and
//! the live-frames generator (`r0 = XDP_TX; exit`), plus `BPF_PROG_TEST_RUN` (also in
//! live-frames mode) and `BPF_LINK_CREATE` attachment for them; and [`PeerProgram`], a
//! program another loader put in the kernel (a peer's), opened by id and timed the same way.
//!
//! Why raw syscalls: the project has one BPF object (nodegate's), and aya 0.14 can only run
//! or attach programs it loaded from an object. Two-instruction programs need no object, no
//! BTF and no verifier log; the few `bpf_attr` layouts used here are stable kernel ABI
//! (`include/uapi/linux/bpf.h`). The link returned by [`RawProgram::attach_xdp`] detaches when
//! dropped, so a failed benchmark never leaves a program on an interface.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    time::Duration,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` value of XDP.
const BPF_XDP: u32 = 37;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native (driver) mode; veth supports it.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// XDP return codes.
pub mod action {
    /// XDP_ABORTED.
    pub const ABORTED: u32 = 0;
    /// XDP_DROP.
    pub const DROP: u32 = 1;
    /// XDP_PASS.
    pub const PASS: u32 = 2;
    /// XDP_TX.
    pub const TX: u32 = 3;
}

/// `struct xdp_md`, the context a live-frames run needs (`data_end` = frame length,
/// `ingress_ifindex` = the interface frames are sent out of; anything else is EINVAL).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

pub(crate) fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised bpf_attr prefix of the size passed; the kernel
    // zero-checks the tail it does not know.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A loaded two-instruction XDP program that returns a constant.
#[derive(Debug)]
pub struct RawProgram {
    fd: OwnedFd,
    ret: u32,
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRun {
    /// The program's return value (of the last repetition).
    pub retval: u32,
    /// Mean time per repetition, as measured by the kernel.
    pub duration: Duration,
}

impl RawProgram {
    /// Load `r0 = ret; exit` as an XDP program named `name` (at most 15 bytes).
    pub fn load(name: &str, ret: u32) -> io::Result<RawProgram> {
        // BPF_MOV64_IMM(BPF_REG_0, ret): opcode 0xb7, dst r0; BPF_EXIT_INSN: 0x95.
        RawProgram::from_insns(name, &[0xb7 | (u64::from(ret) << 32), 0x95], ret)
    }

    /// Load `insns` (encoded `struct bpf_insn`s) as an XDP program named `name`; `ret` is
    /// what [`RawProgram::returns`] reports.
    pub(crate) fn from_insns(name: &str, insns: &[u64], ret: u32) -> io::Result<RawProgram> {
        let license = b"GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        for (dst, src) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src;
        }
        let fd = sys_bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(RawProgram { fd, ret })
    }

    /// The empty program: `XDP_PASS`, the floor of any `BPF_PROG_TEST_RUN` timing.
    pub fn pass() -> io::Result<RawProgram> {
        RawProgram::load("ng_empty_pass", action::PASS)
    }

    /// The bare `XDP_DROP` program: the ceiling of the veth pipeline.
    pub fn drop_all() -> io::Result<RawProgram> {
        RawProgram::load("ng_bare_drop", action::DROP)
    }

    /// The live-frames generator: `XDP_TX` sends each frame out of the ingress interface.
    pub fn transmit() -> io::Result<RawProgram> {
        RawProgram::load("ng_gen_tx", action::TX)
    }

    /// The constant the program returns.
    pub fn returns(&self) -> u32 {
        self.ret
    }

    /// Run `frame` through the program `repeat` times (`BPF_PROG_TEST_RUN`).
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<RawRun> {
        test_run(self.fd.as_fd(), frame, repeat)
    }

    /// Live-frames mode: inject `count` copies of `frame` as if received on `ifindex` (in
    /// the calling thread's network namespace), `batch` at a time, and act on the program's
    /// verdict for real — with [`RawProgram::transmit`] each copy goes out of `ifindex`.
    /// Returns when all copies were processed, with the kernel's mean time per copy (the
    /// generator loop including the receive work it triggered on this CPU, excluding the
    /// dispatcher switch around it).
    pub fn run_live(
        &self,
        frame: &[u8],
        count: u32,
        batch: u32,
        ifindex: u32,
    ) -> io::Result<RawRun> {
        let ctx = XdpMd {
            data_end: frame.len() as u32,
            ingress_ifindex: ifindex,
            ..Default::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: count.max(1),
            ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
            ctx_in: &ctx as *const XdpMd as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: batch,
            ..Default::default()
        };
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(RawRun {
            retval: attr.retval,
            duration: Duration::from_nanos(u64::from(attr.duration)),
        })
    }

    /// Whether the kernel runs this program in live-frames mode at all, asked without
    /// sending anything: a live run on an interface that does not exist fails with ENODEV
    /// where the mode is allowed (the context is checked before any frame is made) and
    /// with EPERM where a locked-down kernel refuses the mode itself (seen on 6.18 sandbox
    /// kernels whose plain test runs still work).
    pub fn live_frames_allowed(&self) -> io::Result<bool> {
        const NO_SUCH_IFINDEX: u32 = i32::MAX as u32;
        let frame = [0u8; super::MIN_FRAME];
        match self.run_live(&frame, 1, 1, NO_SUCH_IFINDEX) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(true),
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other(
                "a live-frames run on a nonexistent interface succeeded",
            )),
        }
    }

    /// Attach to `ifindex` (in the calling thread's network namespace) in driver mode with a
    /// bpf_link; dropping the [`RawLink`] detaches.
    pub fn attach_xdp(&self, ifindex: u32) -> io::Result<RawLink> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
            ..Default::default()
        };
        let fd = sys_bpf(BPF_LINK_CREATE, &mut attr)?;
        Ok(RawLink {
            // SAFETY: fresh descriptor owned by nobody else.
            _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }
}

/// `frame` through the XDP program `prog` `repeat` times (`BPF_PROG_TEST_RUN`).
fn test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<RawRun> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: repeat.max(1),
        ..Default::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(RawRun {
        retval: attr.retval,
        duration: Duration::from_nanos(u64::from(attr.duration)),
    })
}

/// An XDP program another loader put in the kernel (a peer's, e.g. xdp-filter's), opened
/// by its id so that `BPF_PROG_TEST_RUN` times it exactly as it times ours.
#[derive(Debug)]
pub struct PeerProgram {
    fd: OwnedFd,
}

impl PeerProgram {
    /// Open program `id` (`BPF_PROG_GET_FD_BY_ID`; needs CAP_SYS_ADMIN).
    pub fn by_id(id: u32) -> io::Result<PeerProgram> {
        let mut attr = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(PeerProgram { fd })
    }

    /// Run `frame` through the program `repeat` times (`BPF_PROG_TEST_RUN`).
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<RawRun> {
        test_run(self.fd.as_fd(), frame, repeat)
    }
}

/// An XDP attachment; detaches when dropped (the link is never pinned).
#[derive(Debug)]
pub struct RawLink {
    _fd: OwnedFd,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel_abi() {
        // Offsets of include/uapi/linux/bpf.h; a wrong layout is EINVAL at best.
        assert_eq!(std::mem::size_of::<XdpMd>(), 24);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, flags), 12);
        assert_eq!(std::mem::offset_of!(GetFdByIdAttr, open_flags), 8);
    }
}
