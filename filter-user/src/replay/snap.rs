//! Frames cut by the snap length (`tcpdump -s 96`): the capture keeps the first bytes, the
//! wire carried more. A frame whose headers were captured whole is judged as it was on the
//! wire — padded with zeros to its original length, so every length field agrees — since
//! nothing past the headers moves a verdict. One whose headers were cut is reported as
//! truncated and not judged: the filter never saw it that way, and judging the stump would
//! only count a malformed packet that never existed.

const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// VLAN tags followed, at most (beyond, the verdict is the parser's own).
const MAX_TAGS: usize = 8;
/// IPv6 extension headers followed, at most.
const MAX_EXTENSIONS: usize = 16;

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

/// How many leading bytes of Ethernet frame `f` its verdict depends on: the link, network
/// and transport headers as far as the filter reads them. `None` when the bytes that say
/// where the headers end were not captured.
pub fn headers_end(f: &[u8]) -> Option<usize> {
    let mut ethertype = be16(f, 12)?;
    let mut at = 14;
    for _ in 0..MAX_TAGS {
        if !TPIDS.contains(&ethertype) {
            break;
        }
        ethertype = be16(f, at + 2)?;
        at += 4;
    }
    match ethertype {
        0x0800 => {
            let ihl = usize::from(f.get(at)? & 0x0f) * 4;
            let fragment_offset = be16(f, at + 6)? & 0x1fff;
            let proto = *f.get(at + 9)?;
            let l4 = at + ihl.max(20);
            if fragment_offset != 0 {
                return Some(l4);
            }
            Some(transport_end(proto, l4))
        }
        0x86dd => {
            let mut next = *f.get(at + 6)?;
            let mut at = at + 40;
            for _ in 0..MAX_EXTENSIONS {
                let len = match next {
                    // Hop-by-Hop, Routing, Destination Options: what the filter walks
                    // (VERDICTS §2b.3; anything else is the upper layer).
                    0 | 43 | 60 => (usize::from(*f.get(at + 1)?) + 1) * 8,
                    // Authentication Header: its length is in 4-byte units, minus 2.
                    51 => (usize::from(*f.get(at + 1)?) + 2) * 4,
                    44 => {
                        let offset = be16(f, at + 2)? >> 3;
                        next = *f.get(at)?;
                        at += 8;
                        if offset != 0 {
                            return Some(at);
                        }
                        continue;
                    }
                    _ => return Some(transport_end(next, at)),
                };
                next = *f.get(at)?;
                at += len;
            }
            Some(at)
        }
        // ARP and other ethertypes: judged by the ethertype alone.
        _ => Some(at),
    }
}

/// Where the transport header's judged part ends.
fn transport_end(proto: u8, at: usize) -> usize {
    match proto {
        // Ports, and the flags (return traffic tells a SYN from the rest).
        6 => at + 14,
        17 | 136 => at + 8,
        1 => at + 8,
        // Neighbor Discovery is validated as a whole message: never judged cut.
        58 => at + 8,
        _ => at,
    }
}

/// What to judge for a captured frame of `original_len` bytes on the wire: the frame
/// padded to that length when its headers are complete, `None` when they were cut.
pub fn as_on_the_wire(captured: &[u8], original_len: usize) -> Option<Vec<u8>> {
    if original_len <= captured.len() {
        return Some(captured.to_vec());
    }
    let needed = headers_end(captured)?;
    let nd = is_neighbor_discovery(captured);
    if needed > captured.len() || nd {
        return None;
    }
    let mut frame = captured.to_vec();
    frame.resize(original_len.min(MAX_PADDED), 0);
    Some(frame)
}

/// The longest frame a cut one is padded to (a GRO'd capture may claim 64 KiB and more).
const MAX_PADDED: usize = 256 * 1024;

/// ICMPv6 types 133-137 straight after the IPv6 header: validated whole by the filter.
fn is_neighbor_discovery(f: &[u8]) -> bool {
    be16(f, 12) == Some(0x86dd)
        && f.get(20) == Some(&58)
        && f.get(54).is_some_and(|t| (133..=137).contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{parse_str_with, LoadOptions},
        model::Model,
        traffic::{generate, Profile},
    };

    #[test]
    fn a_frame_cut_after_its_headers_is_judged_as_on_the_wire() {
        let fixture = include_str!("../../tests/fixtures/testcases.yaml");
        let policy = parse_str_with(
            "t.yaml",
            fixture,
            &LoadOptions::fixed_ephemeral(32768..=60999),
        )
        .unwrap()
        .policy;
        let model = Model::new(&policy);
        let frames = generate(&Profile::default(), 3000, 7);
        let (mut cut_and_judged, mut refused) = (0, 0);
        for g in &frames {
            let full = &g.data;
            let whole = model.judge(full);
            // Every cut from 14 bytes on: either refused, or judged exactly as the whole.
            for cut in (14..full.len()).step_by(7) {
                match as_on_the_wire(&full[..cut], full.len()) {
                    Some(padded) => {
                        let j = model.judge(&padded);
                        assert_eq!(
                            (j.pass, j.reason, &j.rule),
                            (whole.pass, whole.reason, &whole.rule),
                            "cut at {cut} of {} bytes changed the verdict: {full:02x?}",
                            full.len()
                        );
                        cut_and_judged += 1;
                    }
                    None => refused += 1,
                }
            }
        }
        assert!(
            cut_and_judged > 10_000 && refused > 1_000,
            "{cut_and_judged} judged, {refused} refused"
        );
    }

    #[test]
    fn a_whole_frame_is_left_alone_and_a_cut_header_is_refused() {
        let frame = [0u8; 60];
        assert_eq!(as_on_the_wire(&frame, 60).unwrap(), frame.to_vec());
        assert_eq!(headers_end(&frame[..13]), None);
        let mut tcp = vec![0u8; 12];
        tcp.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6]);
        tcp.resize(54, 0);
        assert_eq!(headers_end(&tcp), Some(14 + 20 + 14));
        assert_eq!(
            as_on_the_wire(&tcp[..40], 100),
            None,
            "TCP flags not captured"
        );
        assert_eq!(as_on_the_wire(&tcp, 100).unwrap().len(), 100);
    }
}
