//! A minimal XDP program (`r0 = XDP_PASS; exit`) loaded straight from two raw instructions,
//! the baseline for `BPF_PROG_TEST_RUN` ns/packet figures: "our program" minus "an empty
//! program" in the same run is the cost of the filter itself (SPEC §5).
//!
//! aya has no API that loads raw instructions, so this talks to `bpf(2)` directly:
//! `BPF_PROG_LOAD` with two instructions, then `BPF_PROG_TEST_RUN` with `repeat`. The attr
//! structs below are the prefixes of `union bpf_attr` (include/uapi/linux/bpf.h) that these
//! two commands read; the kernel requires every byte it knows beyond what we pass to be zero,
//! which a zero-initialised, fully sized struct guarantees.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `struct bpf_insn`: opcode, dst/src registers (4 bits each), offset, immediate.
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm.
const BPF_MOV64_IMM: u8 = 0x07 | 0xb0;
/// `BPF_JMP | BPF_EXIT`.
const BPF_EXIT: u8 = 0x05 | 0x90;
/// XDP_PASS.
const XDP_PASS: i32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, zero-padded to 128 bytes.
#[repr(C)]
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
    _rest: [u8; 128 - 72],
}

/// The `test` member of `union bpf_attr` (`BPF_PROG_TEST_RUN`), zero-padded to 128 bytes.
#[repr(C)]
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
    _rest: [u8; 128 - 76],
}

const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 128);
const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 128);

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `union bpf_attr` prefix of the size passed;
    // the kernel reads (and for TEST_RUN writes back) only within it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An XDP program that returns XDP_PASS and does nothing else.
pub struct EmptyXdp {
    fd: OwnedFd,
}

impl EmptyXdp {
    /// Loads `r0 = XDP_PASS; exit` (needs CAP_BPF + CAP_NET_ADMIN or root).
    pub fn load() -> io::Result<EmptyXdp> {
        let insns = [
            BpfInsn {
                code: BPF_MOV64_IMM,
                regs: 0,
                off: 0,
                imm: XDP_PASS,
            },
            BpfInsn {
                code: BPF_EXIT,
                regs: 0,
                off: 0,
                imm: 0,
            },
        ];
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..9].copy_from_slice(b"ng_empty\0");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
            _rest: [0; 128 - 72],
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(EmptyXdp { fd })
    }

    /// Runs `frame` through the program `repeat` times; returns the XDP action and the
    /// kernel's mean time per run.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            retval: 0,
            data_size_in: frame.len() as u32,
            data_size_out: 0,
            data_in: frame.as_ptr() as u64,
            data_out: 0,
            repeat: repeat.max(1),
            duration: 0,
            ctx_size_in: 0,
            ctx_size_out: 0,
            ctx_in: 0,
            ctx_out: 0,
            flags: 0,
            cpu: 0,
            batch_size: 0,
            _rest: [0; 128 - 76],
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok((attr.retval, Duration::from_nanos(u64::from(attr.duration))))
    }
}
