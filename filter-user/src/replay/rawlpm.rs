//! The peers' source lookup, for comparison: a plain XDP program that looks the IPv4 or
//! IPv6 source address up in a kernel LPM trie (`BPF_MAP_TYPE_LPM_TRIE`, what Cilium,
//! Calico, ingress-node-firewall and the AWS network policy agent use) and passes what it
//! finds, drops the rest. The benchmarks run it beside nodegate on the same prefixes and
//! frames, so "cost independent of table size" is measured against what a trie does.
//!
//! Loaded with raw `bpf(2)` like the other baseline programs (`rawbpf`): a dozen hand-encoded
//! instructions need no object file. The frame is assumed untagged Ethernet + IPv4 (IPv6)
//! without options: the benchmark frames are.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use ipnet::{Ipv4Net, Ipv6Net};

use super::rawbpf::{action, sys_bpf, RawProgram};

pub(crate) const BPF_MAP_CREATE: libc::c_long = 0;
pub(crate) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_PSEUDO_MAP_FD` in the source register of a 64-bit immediate load.
pub(crate) const PSEUDO_MAP_FD: u8 = 1;

#[repr(C)]
#[derive(Default)]
pub(crate) struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub _rest: [u32; 11],
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// One encoded `struct bpf_insn`.
pub(crate) fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(op)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// Opcodes (include/uapi/linux/bpf.h, instruction-set.rst).
pub(crate) const MOV64_REG: u8 = 0xbf;
pub(crate) const MOV64_IMM: u8 = 0xb7;
pub(crate) const ADD64_IMM: u8 = 0x07;
pub(crate) const LDX_W: u8 = 0x61;
pub(crate) const STX_W: u8 = 0x63;
const ST_W: u8 = 0x62;
pub(crate) const JGT_REG: u8 = 0x2d;
pub(crate) const JEQ_IMM: u8 = 0x15;
pub(crate) const LD_IMM64: u8 = 0x18;
pub(crate) const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;
pub(crate) const MAP_LOOKUP_ELEM: i32 = 1;

/// The program: bounds check, copy the source into an LPM key on the stack, look it up.
/// `addr_words` 32-bit words of address start at frame offset `addr_at`; `need` bytes must
/// be in the frame.
fn program(map_fd: i32, addr_at: i16, addr_words: i16, need: i32) -> Vec<u64> {
    let key = -4 * (addr_words + 1); // prefix length word, then the address
    let mut p = vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(LDX_W, 2, 6, 0, 0), // data
        insn(LDX_W, 3, 6, 4, 0), // data_end
        insn(MOV64_REG, 4, 2, 0, 0),
        insn(ADD64_IMM, 4, 0, 0, need),
    ];
    let too_short = p.len();
    p.push(0); // patched: if r4 > r3 goto pass
    p.push(insn(ST_W, 10, 0, key, i32::from(addr_words) * 32));
    for w in 0..addr_words {
        p.push(insn(LDX_W, 5, 2, addr_at + 4 * w, 0));
        p.push(insn(STX_W, 10, 5, key + 4 + 4 * w, 0));
    }
    p.push(insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd));
    p.push(0);
    p.push(insn(MOV64_REG, 2, 10, 0, 0));
    p.push(insn(ADD64_IMM, 2, 0, 0, i32::from(key)));
    p.push(insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM));
    p.push(insn(JEQ_IMM, 0, 0, 2, 0));
    let pass = p.len();
    p.push(insn(MOV64_IMM, 0, 0, 0, action::PASS as i32));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p.push(insn(MOV64_IMM, 0, 0, 0, action::DROP as i32));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p[too_short] = insn(JGT_REG, 4, 3, (pass - too_short - 1) as i16, 0);
    p
}

/// An LPM trie of source prefixes and the XDP program that looks sources up in it.
#[derive(Debug)]
pub struct LpmBaseline {
    map: OwnedFd,
    program: RawProgram,
}

impl LpmBaseline {
    fn new(
        name: &str,
        addr_bytes: usize,
        prefixes: impl ExactSizeIterator<Item = (u32, Vec<u8>)>,
    ) -> io::Result<LpmBaseline> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_LPM_TRIE,
            key_size: 4 + addr_bytes as u32,
            value_size: 4,
            max_entries: prefixes.len().max(1) as u32,
            map_flags: BPF_F_NO_PREALLOC,
            ..Default::default()
        };
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
        // SAFETY: fresh descriptor owned by nobody else.
        let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let value = 1u32;
        for (len, addr) in prefixes {
            let mut key = len.to_ne_bytes().to_vec();
            key.extend_from_slice(&addr);
            let mut attr = MapElemAttr {
                map_fd: map.as_raw_fd() as u32,
                key: key.as_ptr() as u64,
                value: &value as *const u32 as u64,
                ..Default::default()
            };
            sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
        }
        let words = (addr_bytes / 4) as i16;
        let (addr_at, need) = if addr_bytes == 4 { (26, 34) } else { (22, 54) };
        let insns = program(map.as_raw_fd(), addr_at, words, need);
        let program = RawProgram::from_insns(name, &insns, action::PASS)?;
        Ok(LpmBaseline { map, program })
    }

    /// A trie of IPv4 prefixes and its program.
    pub fn v4(prefixes: &[Ipv4Net]) -> io::Result<LpmBaseline> {
        LpmBaseline::new(
            "ng_lpm_v4",
            4,
            prefixes
                .iter()
                .map(|n| (u32::from(n.prefix_len()), n.network().octets().to_vec())),
        )
    }

    /// A trie of IPv6 prefixes and its program.
    pub fn v6(prefixes: &[Ipv6Net]) -> io::Result<LpmBaseline> {
        LpmBaseline::new(
            "ng_lpm_v6",
            16,
            prefixes
                .iter()
                .map(|n| (u32::from(n.prefix_len()), n.network().octets().to_vec())),
        )
    }

    /// The program (pass when the source is in the trie, else drop).
    pub fn program(&self) -> &RawProgram {
        &self.program
    }

    /// Kernel memory the trie uses, bytes, as the kernel accounts it (`memlock` of the map's
    /// fdinfo; exact for LPM tries since 6.5).
    pub fn kernel_bytes(&self) -> io::Result<u64> {
        let path = format!("/proc/self/fdinfo/{}", self.map.as_raw_fd());
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other("no memlock line in the map's fdinfo"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r0 = 2; exit
        assert_eq!(insn(MOV64_IMM, 0, 0, 0, 2), 0x0000_0002_0000_00b7);
        assert_eq!(insn(EXIT, 0, 0, 0, 0), 0x95);
        // *(u32 *)(r10 - 8) = r5
        assert_eq!(insn(STX_W, 10, 5, -8, 0), 0x0000_0000_fff8_5a63);
        let p = program(3, 26, 1, 34);
        // The bounds check jumps to the pass exit.
        let jgt = p.iter().position(|i| (i & 0xff) as u8 == JGT_REG).unwrap();
        let off = ((p[jgt] >> 16) & 0xffff) as i16 as usize;
        assert_eq!(p[jgt + 1 + off] & 0xff, u64::from(MOV64_IMM));
        assert_eq!((p[jgt + 1 + off] >> 32) as u32, action::PASS);
    }
}
