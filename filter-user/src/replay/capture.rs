//! Reading and writing captures. Reading takes what libpcap reads (with rusticata's
//! `pcap-parser`): classic pcap in either byte order with micro- or nanosecond timestamps,
//! pcapng with any number of sections and interfaces, records cut by the snap length, and
//! the link types [`super::link`] turns into Ethernet. The format is detected by its magic
//! number, not by file name. Writing (Ethernet, with `pcap-file`) serves `gen-traffic`.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink,
};
use pcap_parser::{
    pcap::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header},
    pcapng::Block,
    PcapBlockOwned, PcapNGSlice,
};

use super::link::Link;

/// Why a capture could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Open/create/read failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a pcap or pcapng file, or a corrupt one.
    #[error("{}: not a valid pcap/pcapng capture: {detail}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        detail: String,
    },
    /// Writing failed in the writer.
    #[error("{}: cannot write the capture: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The writer's error.
        source: pcap_file::PcapError,
    },
    /// Frames of a link type that is not Ethernet and cannot be made Ethernet.
    #[error(
        "{}: link type {linktype} is not supported: nodegate judges Ethernet frames (also read: \
         Linux cooked SLL/SLL2, raw IP, BSD loopback); capture on an Ethernet interface, e.g. \
         `tcpdump -i eth0 -w file.pcap`",
        path.display()
    )]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The link type found, by name and number.
        linktype: String,
    },
}

/// Capture file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap format.
    Pcap,
    /// pcapng.
    PcapNg,
}

impl CaptureFormat {
    /// `pcap` or `pcapng`.
    pub fn name(self) -> &'static str {
        match self {
            CaptureFormat::Pcap => "pcap",
            CaptureFormat::PcapNg => "pcapng",
        }
    }

    /// pcapng for a `.pcapng` file name, pcap otherwise.
    pub fn from_path(path: &Path) -> CaptureFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("pcapng") => CaptureFormat::PcapNg,
            _ => CaptureFormat::Pcap,
        }
    }
}

/// One captured frame, as an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Capture timestamp (since the epoch, as recorded).
    pub timestamp: Duration,
    /// The frame as captured (possibly cut at the snap length).
    pub data: Vec<u8>,
    /// Its length on the wire (more than `data` when the snap length cut it).
    pub original_len: usize,
}

impl CapturedFrame {
    /// The snap length cut it.
    pub fn is_cut(&self) -> bool {
        self.original_len > self.data.len()
    }
}

/// The frames of a capture, in file order, and its format.
#[derive(Clone, Debug)]
pub struct Capture {
    /// Format the file had.
    pub format: CaptureFormat,
    /// Frames in file order.
    pub frames: Vec<CapturedFrame>,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// What is wrong with capture bytes (without the file name).
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a capture, or corrupt at some point.
    Format(String),
    /// A link type that cannot be made Ethernet.
    LinkType(String),
}

/// Read a pcap or pcapng file (see the module docs).
pub fn read_capture(path: impl AsRef<Path>) -> Result<Capture, CaptureError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_capture(&bytes).map_err(|e| match e {
        ParseError::Format(detail) => CaptureError::Format {
            path: path.to_path_buf(),
            detail,
        },
        ParseError::LinkType(linktype) => CaptureError::LinkType {
            path: path.to_path_buf(),
            linktype,
        },
    })
}

/// Parse capture bytes (what [`read_capture`] does after reading the file).
pub fn parse_capture(bytes: &[u8]) -> Result<Capture, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Format(
            "the file is empty (a capture starts with a pcap or pcapng header)".into(),
        ));
    }
    if bytes.starts_with(&PCAPNG_MAGIC) {
        parse_pcapng(bytes)
    } else {
        parse_pcap(bytes)
    }
}

fn nom_error<E: std::fmt::Debug>(what: String, e: pcap_parser::nom::Err<E>) -> ParseError {
    ParseError::Format(match e {
        pcap_parser::nom::Err::Incomplete(_) => {
            format!("{what}: the file ends inside it (cut short?)")
        }
        pcap_parser::nom::Err::Error(e) | pcap_parser::nom::Err::Failure(e) => {
            format!("{what}: {e:?}")
        }
    })
}

/// The Ethernet frame of one record; `None` when even its link header was cut.
fn frame(link: Link, timestamp: Duration, data: &[u8], original: u32) -> Option<CapturedFrame> {
    let (data, grown) = link.to_ethernet(data)?;
    let original_len = (original as usize)
        .saturating_add_signed(grown)
        .max(data.len());
    Some(CapturedFrame {
        timestamp,
        data,
        original_len,
    })
}

fn parse_pcap(bytes: &[u8]) -> Result<Capture, ParseError> {
    let (mut rest, header) =
        parse_pcap_header(bytes).map_err(|e| nom_error("the pcap file header".into(), e))?;
    let link = Link::of(header.network.0).map_err(ParseError::LinkType)?;
    let record = if header.is_modified_format() {
        parse_pcap_frame_modified
    } else if header.is_bigendian() {
        parse_pcap_frame_be
    } else {
        parse_pcap_frame
    };
    let fraction = if header.is_nanosecond_precision() {
        Duration::from_nanos
    } else {
        Duration::from_micros
    };
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let index = frames.len();
        let (next, block) = record(rest).map_err(|e| nom_error(format!("record {index}"), e))?;
        rest = next;
        let timestamp =
            Duration::from_secs(u64::from(block.ts_sec)) + fraction(u64::from(block.ts_usec));
        let data = &block.data[..(block.caplen as usize).min(block.data.len())];
        frames.extend(frame(link, timestamp, data, block.origlen));
    }
    Ok(Capture {
        format: CaptureFormat::Pcap,
        frames,
    })
}

/// One interface of a pcapng section.
struct Interface {
    link: Result<Link, String>,
    /// Timestamp units per second.
    resolution: u64,
    offset: i64,
}

fn pcapng_time(high: u32, low: u32, iface: &Interface) -> Duration {
    let ticks = (u64::from(high) << 32) | u64::from(low);
    let res = iface.resolution.max(1);
    let secs = (ticks / res).saturating_add_signed(iface.offset);
    let nanos = u128::from(ticks % res) * 1_000_000_000 / u128::from(res);
    Duration::new(secs, nanos as u32)
}

/// Check every block's length before pcap-parser sees it: a length below the 12 bytes of
/// a block's own framing makes pcap-parser 0.17 subtract past zero (a panic with overflow
/// checks on; found by the `capture` fuzz target, fuzz/regressions/capture).
fn check_pcapng_framing(bytes: &[u8]) -> Result<(), ParseError> {
    const SHB: [u8; 4] = PCAPNG_MAGIC;
    const BYTE_ORDER_LE: [u8; 4] = [0x4d, 0x3c, 0x2b, 0x1a];
    const BYTE_ORDER_BE: [u8; 4] = [0x1a, 0x2b, 0x3c, 0x4d];
    let mut at = 0;
    let mut big_endian = false;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let cut = || {
            ParseError::Format(format!(
                "block at byte {at}: the file ends inside it (cut short?)"
            ))
        };
        let head: [u8; 12] = rest
            .get(..12)
            .ok_or_else(cut)?
            .try_into()
            .expect("12 bytes");
        if head[..4] == SHB {
            big_endian = match head[8..12].try_into().expect("4 bytes") {
                BYTE_ORDER_LE => false,
                BYTE_ORDER_BE => true,
                _ => {
                    return Err(ParseError::Format(format!(
                        "section header at byte {at}: no byte-order magic"
                    )))
                }
            };
        }
        let word: [u8; 4] = head[4..8].try_into().expect("4 bytes");
        let len = if big_endian {
            u32::from_be_bytes(word)
        } else {
            u32::from_le_bytes(word)
        } as usize;
        if len < 12 {
            return Err(ParseError::Format(format!(
                "block at byte {at}: length {len} is shorter than a block's own 12 bytes"
            )));
        }
        if len > rest.len() {
            return Err(cut());
        }
        at += len;
    }
    Ok(())
}

fn parse_pcapng(bytes: &[u8]) -> Result<Capture, ParseError> {
    check_pcapng_framing(bytes)?;
    let blocks = PcapNGSlice::from_slice(bytes)
        .map_err(|e| nom_error("the pcapng section header".into(), e))?;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut frames = Vec::new();
    for (index, block) in blocks.enumerate() {
        let block = block.map_err(|e| nom_error(format!("block {index}"), e))?;
        let PcapBlockOwned::NG(block) = block else {
            continue;
        };
        let (if_id, timestamp, data, original) = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(Interface {
                    link: Link::of(idb.linktype.0),
                    resolution: idb.ts_resolution().unwrap_or(1_000_000),
                    offset: idb.ts_offset(),
                });
                continue;
            }
            Block::EnhancedPacket(epb) => {
                let iface = interfaces.get(epb.if_id as usize).ok_or_else(|| {
                    ParseError::Format(format!(
                        "block {index}: a packet of interface {} that its section never described",
                        epb.if_id
                    ))
                })?;
                let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                (
                    epb.if_id as usize,
                    pcapng_time(epb.ts_high, epb.ts_low, iface),
                    data,
                    epb.origlen,
                )
            }
            // Padded to 4 bytes: the original length says where the frame ends.
            Block::SimplePacket(spb) => {
                let data = &spb.data[..spb.data.len().min(spb.origlen as usize)];
                (0, Duration::ZERO, data, spb.origlen)
            }
            _ => continue,
        };
        let iface = interfaces.get(if_id).ok_or_else(|| {
            ParseError::Format(format!(
                "block {index}: a simple packet before any interface description"
            ))
        })?;
        let link = iface.link.clone().map_err(ParseError::LinkType)?;
        frames.extend(frame(link, timestamp, data, original));
    }
    Ok(Capture {
        format: CaptureFormat::PcapNg,
        frames,
    })
}

/// Write Ethernet frames as a capture in `format`; frame `i` gets timestamp `start + i * gap`.
pub fn write_capture(
    path: impl AsRef<Path>,
    format: CaptureFormat,
    frames: &[Vec<u8>],
    start: Duration,
    gap: Duration,
) -> Result<(), CaptureError> {
    let path = path.as_ref();
    let io_err = |source| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let fmt_err = |source| CaptureError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = BufWriter::new(File::create(path).map_err(io_err)?);
    let timestamp = |i: usize| start + gap * i as u32;
    let mut file = match format {
        CaptureFormat::Pcap => {
            let header = PcapHeader {
                datalink: DataLink::ETHERNET,
                ..Default::default()
            };
            let mut writer = PcapWriter::with_header(file, header).map_err(fmt_err)?;
            for (i, frame) in frames.iter().enumerate() {
                writer
                    .write_packet(&PcapPacket::new(timestamp(i), frame.len() as u32, frame))
                    .map_err(fmt_err)?;
            }
            writer.into_writer()
        }
        CaptureFormat::PcapNg => {
            let mut writer = PcapNgWriter::new(file).map_err(fmt_err)?;
            // pcap-file writes nanosecond timestamps; without `if_tsresol` a reader takes
            // them for microseconds (pcapng's default).
            let interface = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            };
            writer.write_pcapng_block(interface).map_err(fmt_err)?;
            for (i, frame) in frames.iter().enumerate() {
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: timestamp(i),
                    original_len: frame.len() as u32,
                    data: frame.as_slice().into(),
                    options: vec![],
                };
                writer.write_pcapng_block(epb).map_err(fmt_err)?;
            }
            writer.into_inner()
        }
    };
    file.flush().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_and_pcapng_round_trip() {
        let frames = vec![
            vec![0xffu8; 60],
            vec![1, 2, 3],
            (0..=255u8).collect::<Vec<_>>(),
        ];
        let dir = std::env::temp_dir().join(format!("ng-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, format) in [
            ("a.pcap", CaptureFormat::Pcap),
            ("a.pcapng", CaptureFormat::PcapNg),
        ] {
            let path = dir.join(name);
            assert_eq!(CaptureFormat::from_path(&path), format);
            write_capture(
                &path,
                format,
                &frames,
                Duration::from_secs(1_700_000_000),
                Duration::from_micros(10),
            )
            .unwrap();
            let capture = read_capture(&path).unwrap();
            assert_eq!(capture.format, format, "detected by magic");
            let data: Vec<Vec<u8>> = capture.frames.iter().map(|f| f.data.clone()).collect();
            assert_eq!(data, frames);
            assert_eq!(
                capture.frames[1].timestamp,
                Duration::from_secs(1_700_000_000) + Duration::from_micros(10)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn pcap_bytes(magic: [u8; 4], big_endian: bool, records: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let word = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let half = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = magic.to_vec();
        out.extend_from_slice(&half(2));
        out.extend_from_slice(&half(4));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&word(65535));
        out.extend_from_slice(&word(1));
        for (sec, frac, data, original) in records {
            out.extend_from_slice(&word(*sec));
            out.extend_from_slice(&word(*frac));
            out.extend_from_slice(&word(data.len() as u32));
            out.extend_from_slice(&word(*original));
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn both_byte_orders_both_resolutions_and_snapped_records_read() {
        let data = [0x11u8; 20];
        // Big-endian, microseconds, a record cut at 20 of 60 bytes.
        let be = pcap_bytes([0xa1, 0xb2, 0xc3, 0xd4], true, &[(7, 250_000, &data, 60)]);
        let capture = parse_capture(&be).unwrap();
        let f = &capture.frames[0];
        assert_eq!((f.data.len(), f.original_len, f.is_cut()), (20, 60, true));
        assert_eq!(f.timestamp, Duration::from_millis(7_250));
        // Little-endian, nanoseconds.
        let ns = pcap_bytes(
            [0x4d, 0x3c, 0xb2, 0xa1],
            false,
            &[(7, 123_456_789, &data, 20)],
        );
        let f = &parse_capture(&ns).unwrap().frames[0];
        assert_eq!(f.timestamp, Duration::new(7, 123_456_789));
        assert!(!f.is_cut());
        // No records: zero frames, not an error.
        let empty = pcap_bytes([0xd4, 0xc3, 0xb2, 0xa1], false, &[]);
        assert!(parse_capture(&empty).unwrap().frames.is_empty());
        // A file cut inside a record names it.
        let mut cut = pcap_bytes(
            [0xd4, 0xc3, 0xb2, 0xa1],
            false,
            &[(1, 0, &data, 20), (2, 0, &data, 20)],
        );
        cut.truncate(cut.len() - 5);
        match parse_capture(&cut) {
            Err(ParseError::Format(why)) => assert!(why.contains("record 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_capture(&[]), Err(ParseError::Format(_))));
        // A 12 MB frame (a GRO'd capture) is a frame, not an unexpected end of file.
        let big = vec![0u8; 12 << 20];
        let huge = pcap_bytes(
            [0xd4, 0xc3, 0xb2, 0xa1],
            false,
            &[(1, 0, &big, big.len() as u32)],
        );
        assert_eq!(parse_capture(&huge).unwrap().frames[0].data.len(), 12 << 20);
    }

    #[test]
    fn pcapng_sections_each_with_their_own_interfaces_and_link_types() {
        let section = |linktype: DataLink, frame: &[u8]| -> Vec<u8> {
            let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
            let idb = InterfaceDescriptionBlock {
                linktype,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            };
            writer.write_pcapng_block(idb).unwrap();
            let epb = EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_secs(5),
                original_len: frame.len() as u32,
                data: frame.into(),
                options: vec![],
            };
            writer.write_pcapng_block(epb).unwrap();
            writer.into_inner()
        };
        let ipv4 = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 9, 192, 0, 2, 1,
        ];
        let mut ethernet = vec![0u8; 12];
        ethernet.extend_from_slice(&[0x08, 0x00]);
        ethernet.extend_from_slice(&ipv4);
        // Two sections in one file: Ethernet, then raw IP.
        let mut file = section(DataLink::ETHERNET, &ethernet);
        file.extend(section(DataLink::RAW, &ipv4));
        let capture = parse_capture(&file).unwrap();
        assert_eq!(capture.format, CaptureFormat::PcapNg);
        assert_eq!(capture.frames.len(), 2);
        assert_eq!(
            capture.frames[1].data[12..],
            ethernet[12..],
            "raw IP made Ethernet"
        );
        assert_eq!(capture.frames[1].original_len, ethernet.len());
        assert_eq!(capture.frames[0].timestamp, Duration::from_secs(5));
        // A link type that cannot be Ethernet is named.
        let wifi = section(DataLink::IEEE802_11, &ipv4);
        match parse_capture(&wifi) {
            Err(ParseError::LinkType(name)) => assert_eq!(name, "IEEE802_11 (105)"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_format_error() {
        let path = std::env::temp_dir().join(format!("ng-garbage-{}.pcap", std::process::id()));
        std::fs::write(&path, b"this is not a capture file at all").unwrap();
        assert!(matches!(
            read_capture(&path),
            Err(CaptureError::Format { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
