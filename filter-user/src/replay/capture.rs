//! Reading and writing captures: classic pcap and pcapng (detected by magic number, not by
//! file name), Ethernet link type only, with `pcap-file`.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
        Block, PcapNgReader, PcapNgWriter,
    },
    DataLink,
};

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
    #[error("{}: not a valid pcap/pcapng capture: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: pcap_file::PcapError,
    },
    /// The capture is not of Ethernet frames.
    #[error("{}: link type {linktype} is not supported (hint: capture on an Ethernet interface, e.g. `tcpdump -i eth0 -w file.pcap`)", path.display())]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The link type found.
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
    /// pcapng for a `.pcapng` file name, pcap otherwise.
    pub fn from_path(path: &Path) -> CaptureFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("pcapng") => CaptureFormat::PcapNg,
            _ => CaptureFormat::Pcap,
        }
    }
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Capture timestamp (since the epoch, as recorded).
    pub timestamp: Duration,
    /// The frame as captured (possibly cut at the snap length).
    pub data: Vec<u8>,
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

/// Read a pcap or pcapng file of Ethernet frames.
pub fn read_capture(path: impl AsRef<Path>) -> Result<Capture, CaptureError> {
    let path = path.as_ref();
    let io_err = |source| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let fmt_err = |source| CaptureError::Format {
        path: path.to_path_buf(),
        source,
    };
    let link_err = |linktype: DataLink| CaptureError::LinkType {
        path: path.to_path_buf(),
        linktype: format!("{linktype:?}"),
    };

    let mut file = BufReader::new(File::open(path).map_err(io_err)?);
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(io_err)?;
    let file = BufReader::new(File::open(path).map_err(io_err)?);

    let mut frames = Vec::new();
    if magic == PCAPNG_MAGIC {
        let mut reader = PcapNgReader::new(file).map_err(fmt_err)?;
        // Interface link types of the current section, by interface id.
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.map_err(fmt_err)? {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let linktype = links
                        .get(epb.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    if linktype != DataLink::ETHERNET {
                        return Err(link_err(linktype));
                    }
                    frames.push(CapturedFrame {
                        timestamp: epb.timestamp,
                        data: epb.data.into_owned(),
                    });
                }
                Block::SimplePacket(spb) => {
                    let linktype = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    if linktype != DataLink::ETHERNET {
                        return Err(link_err(linktype));
                    }
                    frames.push(CapturedFrame {
                        timestamp: Duration::ZERO,
                        data: spb.data.into_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(Capture {
            format: CaptureFormat::PcapNg,
            frames,
        })
    } else {
        let mut reader = PcapReader::new(file).map_err(fmt_err)?;
        let linktype = reader.header().datalink;
        if linktype != DataLink::ETHERNET {
            return Err(link_err(linktype));
        }
        while let Some(packet) = reader.next_packet() {
            let packet = packet.map_err(fmt_err)?;
            frames.push(CapturedFrame {
                timestamp: packet.timestamp,
                data: packet.data.into_owned(),
            });
        }
        Ok(Capture {
            format: CaptureFormat::Pcap,
            frames,
        })
    }
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
    let fmt_err = |source| CaptureError::Format {
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
            let interface = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![],
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
