//! Drop samples: the XDP program puts a [`DropSample`] in the `NG_SAMPLES` ring buffer for
//! some drops (rate-limited per CPU); the daemon reads them here and logs one line each.
//!
//! [`decode`] is the pure part: bytes of one ring record → [`DecodedSample`], checked.
//! [`SampleReader`] waits for the ring's file descriptor with tokio's `AsyncFd` and decodes
//! records as they come. The `Display` of a sample is a `key=value` log line:
//!
//! ```text
//! reason=no-source-match src=198.51.100.7 dst=192.0.2.10 proto=tcp sport=40312 dport=443 rule=- interface=3 would_drop=false
//! ```

use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use filter_common::{DropSample, Reason};
use tokio::io::unix::AsyncFd;

/// Errors from decoding one ring record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is not exactly one [`DropSample`]: object and loader disagree on the layout.
    #[error("drop sample has {len} bytes, expected {expected}")]
    Length {
        /// Bytes in the record.
        len: usize,
        /// `size_of::<DropSample>()`.
        expected: usize,
    },
    /// The address family is neither 0, 4 nor 6.
    #[error("drop sample has unknown address family {family}")]
    Family {
        /// The family byte.
        family: u8,
    },
}

/// Errors from reading the sample ring.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The ring map could not be registered with the tokio reactor, or waiting on it failed.
    #[error("cannot wait on the drop sample ring: {source}")]
    Poll {
        /// The OS error.
        source: io::Error,
    },
    /// The object has no sample ring: loader and object are from different builds.
    #[error("the XDP object has no map named {name}: loader and object are from different builds")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// The sample map is not a usable ring buffer.
    #[error("cannot open the drop sample ring {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
}

/// One drop sample, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedSample {
    /// Interface index the packet arrived on.
    pub ifindex: u32,
    /// The reason, if this build knows the code.
    pub reason: Option<Reason>,
    /// The raw reason code (for codes this build does not know).
    pub reason_code: u32,
    /// Rule slot that decided; `None` when no rule did (slot 0).
    pub rule_slot: Option<u32>,
    /// 4 or 6; 0 for a non-IP frame.
    pub family: u8,
    /// IP protocol number (after IPv6 extension headers); 0 when not IP.
    pub proto: u8,
    /// Source address; `None` for a non-IP frame.
    pub src: Option<IpAddr>,
    /// Destination address; `None` for a non-IP frame.
    pub dst: Option<IpAddr>,
    /// Source port, 0 if none.
    pub sport: u16,
    /// Destination port, or the ICMP/ICMPv6 message type; 0 if none.
    pub dport: u16,
    /// The packet was not dropped, only would have been (monitor mode).
    pub monitor: bool,
}

/// Decode one ring record. The record must be exactly `size_of::<DropSample>()` bytes; any
/// alignment is fine.
pub fn decode(bytes: &[u8]) -> Result<DecodedSample, DecodeError> {
    let expected = size_of::<DropSample>();
    if bytes.len() != expected {
        return Err(DecodeError::Length {
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length is checked above, read_unaligned accepts any alignment, and every
    // bit pattern is a valid DropSample (integers and byte arrays only, no padding).
    let raw: DropSample = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DropSample>()) };
    let (src, dst) = match raw.family {
        0 => (None, None),
        4 => (Some(v4(&raw.src)), Some(v4(&raw.dst))),
        6 => (
            Some(IpAddr::V6(Ipv6Addr::from(raw.src))),
            Some(IpAddr::V6(Ipv6Addr::from(raw.dst))),
        ),
        family => return Err(DecodeError::Family { family }),
    };
    Ok(DecodedSample {
        ifindex: raw.ifindex,
        reason: Reason::from_u32(raw.reason),
        reason_code: raw.reason,
        rule_slot: (raw.rule != 0).then_some(raw.rule),
        family: raw.family,
        proto: raw.proto,
        src,
        dst,
        sport: raw.sport,
        dport: raw.dport,
        monitor: raw.monitor != 0,
    })
}

fn v4(bytes: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

impl DecodedSample {
    /// The protocol's name (`tcp`, `udp`, `icmp`, `icmpv6`), its number otherwise; `None`
    /// for a non-IP frame.
    pub fn proto_name(&self) -> Option<String> {
        (self.family != 0).then(|| match self.proto {
            IPPROTO_TCP => "tcp".to_owned(),
            IPPROTO_UDP => "udp".to_owned(),
            IPPROTO_ICMP => "icmp".to_owned(),
            IPPROTO_ICMPV6 => "icmpv6".to_owned(),
            other => other.to_string(),
        })
    }

    /// The reason's name, or `code-N` for a code this build does not know.
    pub fn reason_name(&self) -> String {
        self.reason.map_or_else(
            || format!("code-{}", self.reason_code),
            |r| r.name().to_owned(),
        )
    }

    /// Log the sample at `info` (target `nodegate::drop`) as structured fields: `reason`,
    /// `src`, `dst`, `proto`, `sport`/`dport` (TCP, UDP) or `icmp_type`, `rule`, `interface`
    /// (names where known) and `would_drop` (monitor mode). The text log shows them as
    /// `key=value`, the JSON log as keys of `fields`.
    pub fn log(&self, rule: Option<&str>, iface: Option<&str>) {
        let ports = matches!(self.proto, IPPROTO_TCP | IPPROTO_UDP) && self.family != 0;
        let icmp = matches!(self.proto, IPPROTO_ICMP | IPPROTO_ICMPV6) && self.family != 0;
        let rule = rule
            .map(str::to_owned)
            .or_else(|| self.rule_slot.map(|slot| format!("#{slot}")));
        let iface = iface.map_or_else(|| self.ifindex.to_string(), str::to_owned);
        tracing::info!(
            target: "nodegate::drop",
            reason = %self.reason_name(),
            src = self.src.map(tracing::field::display),
            dst = self.dst.map(tracing::field::display),
            proto = self.proto_name(),
            sport = ports.then_some(self.sport),
            dport = ports.then_some(self.dport),
            icmp_type = icmp.then_some(self.dport),
            rule,
            interface = %iface,
            would_drop = self.monitor,
            "drop sample"
        );
    }
}

/// Reads drop samples from the `NG_SAMPLES` ring buffer as they arrive.
pub struct SampleReader {
    ring: AsyncFd<RingBuf<MapData>>,
    malformed: u64,
}

impl fmt::Debug for SampleReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SampleReader")
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl SampleReader {
    /// Wrap the ring. Must be called inside a tokio runtime.
    pub fn new(ring: RingBuf<MapData>) -> Result<Self, SampleError> {
        // SAFETY: the ring owns its map's file descriptor (inside `MapData`), which stays
        // open and is never replaced while the AsyncFd owns the ring; `as_raw_fd` always
        // returns that same descriptor.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|err| SampleError::Poll {
                source: err.into_parts().1,
            })?;
        Ok(SampleReader { ring, malformed: 0 })
    }

    /// Take the ring out of a freshly loaded object (the `NG_SAMPLES` map).
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, SampleError> {
        let name = filter_common::MAP_SAMPLES;
        let map = ebpf
            .take_map(name)
            .ok_or(SampleError::MissingMap { name })?;
        let ring = RingBuf::try_from(map).map_err(|source| SampleError::Map { name, source })?;
        Self::new(ring)
    }

    /// Records skipped so far because they did not decode (each is logged at `warn`).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The next sample, waiting for one if the ring is empty. Cancel-safe: a record is only
    /// consumed when it is returned. Records that do not decode are counted, logged and
    /// skipped.
    pub async fn recv(&mut self) -> Result<DecodedSample, SampleError> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(|source| SampleError::Poll { source })?;
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Ok(sample) => return Ok(sample),
                    Err(err) => {
                        self.malformed += 1;
                        tracing::warn!(error = %err, "skipping a malformed drop sample");
                    }
                }
            }
            // Empty: only now forget the readiness, so no wakeup is lost between the last
            // record and going back to sleep.
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::observe::Observed;

    /// The sample's text line (`nodegate observe`) without its time stamp.
    fn line(sample: &DecodedSample, rule: Option<&str>, iface: Option<&str>) -> String {
        let text =
            Observed::new(sample, rule.map(str::to_owned), iface.map(str::to_owned)).to_string();
        let (_time, rest) = text.split_once(' ').expect("a time stamp first");
        rest.to_owned()
    }

    fn bytes_of(sample: &DropSample) -> Vec<u8> {
        // SAFETY: DropSample is repr(C), Copy and free of padding (size asserted in
        // filter-common), so all of its bytes are initialised.
        unsafe {
            std::slice::from_raw_parts(
                (sample as *const DropSample).cast::<u8>(),
                size_of::<DropSample>(),
            )
        }
        .to_vec()
    }

    fn sample_v4() -> DropSample {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 51, 100, 7]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[192, 0, 2, 10]);
        DropSample {
            ifindex: 3,
            reason: Reason::NoSourceMatch as u32,
            rule: 0,
            family: 4,
            proto: IPPROTO_TCP,
            monitor: 0,
            _pad: 0,
            sport: 40312,
            dport: 443,
            src,
            dst,
        }
    }

    #[test]
    fn decodes_ipv4_tcp() {
        let sample = decode(&bytes_of(&sample_v4())).unwrap();
        assert_eq!(
            sample,
            DecodedSample {
                ifindex: 3,
                reason: Some(Reason::NoSourceMatch),
                reason_code: 17,
                rule_slot: None,
                family: 4,
                proto: 6,
                src: Some("198.51.100.7".parse().unwrap()),
                dst: Some("192.0.2.10".parse().unwrap()),
                sport: 40312,
                dport: 443,
                monitor: false,
            }
        );
        assert_eq!(
            line(&sample, None, None),
            "reason=no-source-match src=198.51.100.7 dst=192.0.2.10 proto=tcp sport=40312 dport=443 rule=- interface=3 would_drop=false"
        );
    }

    #[test]
    fn decodes_ipv6_icmp_monitor_with_rule() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let raw = DropSample {
            ifindex: 7,
            reason: Reason::DenyRule as u32,
            rule: 12,
            family: 6,
            proto: IPPROTO_ICMPV6,
            monitor: 1,
            _pad: 0,
            sport: 0,
            dport: 128,
            src: src.octets(),
            dst: dst.octets(),
        };
        let sample = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(sample.src, Some(IpAddr::V6(src)));
        assert_eq!(sample.rule_slot, Some(12));
        assert!(sample.monitor);
        assert_eq!(
            line(&sample, None, None),
            "reason=deny-rule src=2001:db8::7 dst=2001:db8::1 proto=icmpv6 type=128 rule=#12 interface=7 would_drop=true"
        );
        assert_eq!(
            line(&sample, Some("block scanners"), Some("eth0")),
            "reason=deny-rule src=2001:db8::7 dst=2001:db8::1 proto=icmpv6 type=128 rule=\"block scanners\" interface=eth0 would_drop=true"
        );
    }

    #[test]
    fn decodes_non_ip_and_unknown_reason() {
        let raw = DropSample {
            family: 0,
            proto: 0,
            reason: 63,
            sport: 0,
            dport: 0,
            src: [0; 16],
            dst: [0; 16],
            ..sample_v4()
        };
        let sample = decode(&bytes_of(&raw)).unwrap();
        assert_eq!((sample.src, sample.dst, sample.reason), (None, None, None));
        assert_eq!(
            line(&sample, None, None),
            "reason=code-63 src=- dst=- proto=- rule=- interface=3 would_drop=false"
        );
    }

    #[test]
    fn decodes_unaligned() {
        let mut buf = vec![0u8; 1];
        buf.extend(bytes_of(&sample_v4()));
        assert_eq!(decode(&buf[1..]).unwrap().dport, 443);
    }

    #[test]
    fn rejects_bad_records() {
        let bytes = bytes_of(&sample_v4());
        assert_eq!(
            decode(&bytes[..51]),
            Err(DecodeError::Length {
                len: 51,
                expected: 52
            })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer),
            Err(DecodeError::Length {
                len: 53,
                expected: 52
            })
        );
        assert_eq!(
            decode(&[]),
            Err(DecodeError::Length {
                len: 0,
                expected: 52
            })
        );
        let raw = DropSample {
            family: 5,
            ..sample_v4()
        };
        assert_eq!(
            decode(&bytes_of(&raw)),
            Err(DecodeError::Family { family: 5 })
        );
    }

    #[test]
    fn other_protocols_have_no_ports() {
        let raw = DropSample {
            proto: 47,
            ..sample_v4()
        };
        let text = line(&decode(&bytes_of(&raw)).unwrap(), None, None);
        assert!(text.contains(" proto=47 rule=-"), "{text}");
    }

    /// A writer the test reads back: what the JSON log layer wrote.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_logs_carry_the_sample_as_structured_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let mut monitored = sample_v4();
        monitored.monitor = 1;
        let sample = decode(&bytes_of(&monitored)).unwrap();
        tracing::subscriber::with_default(subscriber, || sample.log(Some("web"), Some("eth0")));
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        let fields = &line["fields"];
        assert_eq!(line["target"], "nodegate::drop", "{text}");
        assert_eq!(fields["message"], "drop sample", "{text}");
        assert_eq!(fields["reason"], "no-source-match", "{text}");
        assert_eq!(fields["src"], "198.51.100.7", "{text}");
        assert_eq!(fields["dst"], "192.0.2.10", "{text}");
        assert_eq!(fields["proto"], "tcp", "{text}");
        assert_eq!(fields["sport"], 40312, "{text}");
        assert_eq!(fields["dport"], 443, "{text}");
        assert_eq!(fields["rule"], "web", "{text}");
        assert_eq!(fields["interface"], "eth0", "{text}");
        assert_eq!(fields["would_drop"], true, "{text}");
        assert!(fields.get("icmp_type").is_none(), "{text}");
    }
}
