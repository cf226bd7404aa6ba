//! A live-frames generator that sends every copy of a frame from another source: before
//! `XDP_TX`, it stamps an IPv4 source address (with the IPv4 and TCP checksums that go with
//! it) picked at random from a table of up to 131,072, so the receiver sees as many distinct
//! sources as the table holds instead of one repeated frame — its source lookup runs cold.
//!
//! Raw `bpf(2)` like the other baseline programs (`rawbpf`, `rawlpm`): an array map and a
//! couple of dozen hand-encoded instructions. The frame is untagged Ethernet + IPv4 without
//! options + TCP, at least [`STAMP_END`] bytes long.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::{
    rawbpf::{action, sys_bpf, RawProgram},
    rawlpm::{
        insn, MapCreateAttr, MapElemAttr, ADD64_IMM, BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, CALL,
        EXIT, JEQ_IMM, JGT_REG, LDX_W, LD_IMM64, MAP_LOOKUP_ELEM, MOV64_IMM, MOV64_REG,
        PSEUDO_MAP_FD, STX_W,
    },
};

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const GET_PRANDOM_U32: i32 = 7;
const AND64_IMM: u8 = 0x57;
const LDX_H: u8 = 0x69;
const STX_H: u8 = 0x6b;

/// Frame offsets (Ethernet 14 + IPv4 20 + TCP).
const IP_CSUM: i16 = 24;
const IP_SRC: i16 = 26;
const TCP_CSUM: i16 = 50;
/// Bytes the frame must have for the stamp.
pub const STAMP_END: usize = 52;
/// Most stamps a table holds (the random index is masked to 17 bits).
pub const MAX_SOURCES: usize = 1 << 17;

/// One source and the checksums a frame carries with it, as they lie in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceStamp {
    /// The source address.
    pub src: Ipv4Addr,
    /// The IPv4 header checksum of the frame from `src`.
    pub ip_csum: [u8; 2],
    /// The TCP checksum of the frame from `src`.
    pub tcp_csum: [u8; 2],
}

impl SourceStamp {
    /// The stamp that turns `template` into `frame` (the same frame from another source).
    pub fn of_frame(frame: &[u8]) -> Option<SourceStamp> {
        let at = |o: i16| o as usize;
        let f = frame.get(..STAMP_END)?;
        Some(SourceStamp {
            src: Ipv4Addr::new(
                f[at(IP_SRC)],
                f[at(IP_SRC) + 1],
                f[at(IP_SRC) + 2],
                f[at(IP_SRC) + 3],
            ),
            ip_csum: [f[at(IP_CSUM)], f[at(IP_CSUM) + 1]],
            tcp_csum: [f[at(TCP_CSUM)], f[at(TCP_CSUM) + 1]],
        })
    }

    /// Write this stamp into `frame` (what the generator program does to each copy); `None`
    /// when the frame is shorter than [`STAMP_END`].
    pub fn apply(&self, frame: &mut [u8]) -> Option<()> {
        let f = frame.get_mut(..STAMP_END)?;
        let at = |o: i16| o as usize;
        f[at(IP_SRC)..at(IP_SRC) + 4].copy_from_slice(&self.src.octets());
        f[at(IP_CSUM)..at(IP_CSUM) + 2].copy_from_slice(&self.ip_csum);
        f[at(TCP_CSUM)..at(TCP_CSUM) + 2].copy_from_slice(&self.tcp_csum);
        Some(())
    }

    /// The map value: source, IPv4 checksum, TCP checksum, in frame byte order.
    fn value(&self) -> [u8; 8] {
        let o = self.src.octets();
        [
            o[0],
            o[1],
            o[2],
            o[3],
            self.ip_csum[0],
            self.ip_csum[1],
            self.tcp_csum[0],
            self.tcp_csum[1],
        ]
    }
}

/// The program: `i = prandom & (n - 1)`, look stamp `i` up, write it into the frame, `XDP_TX`.
fn program(map_fd: i32, mask: i32) -> Vec<u64> {
    let mut p = vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(CALL, 0, 0, 0, GET_PRANDOM_U32),
        insn(AND64_IMM, 0, 0, 0, mask),
        insn(STX_W, 10, 0, -4, 0),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        0,
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, -4),
        insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM),
    ];
    let missing = p.len();
    p.push(0); // patched: if r0 == 0 goto transmit
    p.extend([
        insn(LDX_W, 7, 0, 0, 0),
        insn(LDX_H, 8, 0, 4, 0),
        insn(LDX_H, 9, 0, 6, 0),
        insn(LDX_W, 2, 6, 0, 0), // data
        insn(LDX_W, 3, 6, 4, 0), // data_end
        insn(MOV64_REG, 4, 2, 0, 0),
        insn(ADD64_IMM, 4, 0, 0, STAMP_END as i32),
    ]);
    let short = p.len();
    p.push(0); // patched: if r4 > r3 goto transmit
    p.extend([
        insn(STX_W, 2, 7, IP_SRC, 0),
        insn(STX_H, 2, 8, IP_CSUM, 0),
        insn(STX_H, 2, 9, TCP_CSUM, 0),
    ]);
    let transmit = p.len();
    p.push(insn(MOV64_IMM, 0, 0, 0, action::TX as i32));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p[missing] = insn(JEQ_IMM, 0, 0, (transmit - missing - 1) as i16, 0);
    p[short] = insn(JGT_REG, 4, 3, (transmit - short - 1) as i16, 0);
    p
}

/// Load the table (a power of two of stamps, at most [`MAX_SOURCES`]) and the generator
/// program. The program holds the only reference to the table that outlives this call.
pub fn load(stamps: &[SourceStamp]) -> io::Result<RawProgram> {
    let n = stamps.len();
    if n == 0 || n > MAX_SOURCES || !n.is_power_of_two() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a source table holds a power of two of stamps, 1 to {MAX_SOURCES}; got {n}"),
        ));
    }
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: n as u32,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: fresh descriptor owned by nobody else.
    let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for (i, stamp) in stamps.iter().enumerate() {
        let key = i as u32;
        let value = stamp.value();
        let mut attr = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
    }
    let insns = program(map.as_raw_fd(), (n - 1) as i32);
    RawProgram::from_insns("ng_gen_srcs", &insns, action::TX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_jumps_land_on_the_transmit_exit() {
        let p = program(3, 0x1ffff);
        let exit = p.len() - 2;
        for op in [JEQ_IMM, JGT_REG] {
            let at = p.iter().position(|i| (i & 0xff) as u8 == op).unwrap();
            let off = ((p[at] >> 16) & 0xffff) as i16 as usize;
            assert_eq!(at + 1 + off, exit);
        }
        assert_eq!((p[exit] >> 32) as u32, action::TX);
    }

    /// What the AF_PACKET engine does to each copy: the stamp of one frame turns another
    /// frame (the same but for the source) into it, checksums included.
    #[test]
    fn a_stamp_turns_a_frame_into_the_same_frame_from_its_source() {
        let from = |src: &str| {
            crate::craft::Frame::tcp(
                src.parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                40000,
                443,
            )
            .syn()
            .pad_to(64)
            .build()
        };
        let (template, wanted) = (from("198.18.0.1"), from("10.77.3.9"));
        let mut copy = template.clone();
        SourceStamp::of_frame(&wanted)
            .unwrap()
            .apply(&mut copy)
            .unwrap();
        assert_eq!(copy, wanted);
        assert!(SourceStamp::of_frame(&wanted)
            .unwrap()
            .apply(&mut copy[..40])
            .is_none());
    }
}
