//! Following drop samples live (`nodegate observe`), daemon running or not.
//!
//! The sample ring (`NG_SAMPLES`) has one consumer position: two readers would split its
//! records between them, and an observer would take samples away from the daemon's log. So
//! the daemon, when it runs, is the ring's only reader: it logs each sample and relays it to
//! every `observe` connection on its control socket through a bounded broadcast channel. A
//! subscriber too slow for the stream loses samples and is told how many (`{"lost":N}`);
//! the daemon and its log never wait for it. Without a daemon, `observe` reads the pinned
//! ring itself, so the drops of a filter left enforcing on its own can still be followed.
//!
//! Every sample is an [`Observed`]: the decoded packet with rule and interface names, one
//! JSON object per line on the socket and in `nodegate observe -o json`.

use std::{
    fmt,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    sync::broadcast,
};

use super::{
    control,
    samples::{DecodedSample, SampleError, SampleReader},
};
use crate::loader::{pins::PinLayout, FilterMaps};

/// Samples a subscriber may fall behind by before it loses the oldest.
pub const RELAY_CAPACITY: usize = 1024;

/// How long rule names read from the pins are trusted before a sample re-reads them (a
/// reload may have added rules or reused a slot).
const NAMES_FRESH_FOR: Duration = Duration::from_secs(2);

/// One drop sample (or monitor-mode would-drop), with names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// When the sample was read, Unix time in milliseconds.
    pub time_ms: u64,
    /// Interface name (its index when it has no name here).
    pub interface: String,
    /// `drop`, or `pass` for a monitor-mode would-drop.
    pub verdict: String,
    /// Monitor mode: passed, and enforcing would drop it.
    pub would_drop: bool,
    /// Reason name (docs/VERDICTS.md), `code-N` for a code this build does not know.
    pub reason: String,
    /// The deciding rule, if one decided (`#N` when its name is unknown).
    pub rule: Option<String>,
    /// Source address; null for a non-IP frame.
    pub src: Option<IpAddr>,
    /// Destination address; null for a non-IP frame.
    pub dst: Option<IpAddr>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number; null for a non-IP frame.
    pub proto: Option<String>,
    /// TCP/UDP source port.
    pub sport: Option<u16>,
    /// TCP/UDP destination port.
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 message type.
    pub icmp_type: Option<u16>,
}

impl Observed {
    /// The sample with the names `namer` finds, stamped now.
    pub fn new(sample: &DecodedSample, rule: Option<String>, interface: Option<String>) -> Self {
        let ip = sample.family != 0;
        let ports = ip && matches!(sample.proto, 6 | 17);
        let icmp = ip && matches!(sample.proto, 1 | 58);
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Observed {
            time_ms,
            interface: interface.unwrap_or_else(|| sample.ifindex.to_string()),
            verdict: if sample.monitor { "pass" } else { "drop" }.to_owned(),
            would_drop: sample.monitor,
            reason: sample.reason_name(),
            rule: rule.or_else(|| sample.rule_slot.map(|slot| format!("#{slot}"))),
            src: sample.src,
            dst: sample.dst,
            proto: sample.proto_name(),
            sport: ports.then_some(sample.sport),
            dport: ports.then_some(sample.dport),
            icmp_type: icmp.then_some(sample.dport),
        }
    }
}

/// `HH:MM:SS.mmm` (UTC) and the sample's fields as `key=value`, the log line's order: the one
/// text form of a sample.
impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms_of_day = self.time_ms % 86_400_000;
        write!(
            f,
            "{:02}:{:02}:{:02}.{:03} reason={}",
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
            self.reason
        )?;
        let dash = |a: Option<IpAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        write!(f, " src={} dst={}", dash(self.src), dash(self.dst))?;
        write!(f, " proto={}", self.proto.as_deref().unwrap_or("-"))?;
        if let (Some(sport), Some(dport)) = (self.sport, self.dport) {
            write!(f, " sport={sport} dport={dport}")?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " type={t}")?;
        }
        write!(
            f,
            " rule={} interface={} would_drop={}",
            LogValue(self.rule.as_deref().unwrap_or("-")),
            LogValue(&self.interface),
            self.would_drop
        )
    }
}

/// A user-supplied name in a `key=value` line: quoted (Debug-escaped) unless it is plain, so
/// a rule named `block scanners` cannot read as two fields.
struct LogValue<'a>(&'a str);

impl fmt::Display for LogValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self.0.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'#')
            });
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// What a follower receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Event {
    /// One sample.
    Sample(Observed),
    /// Samples this follower missed because it read too slowly.
    Lost {
        /// How many.
        lost: u64,
    },
}

/// Which samples to show; an empty list lets everything through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleFilter {
    /// Reason names.
    pub reasons: Vec<String>,
    /// Rule names.
    pub rules: Vec<String>,
    /// Source prefixes.
    pub sources: Vec<IpNet>,
    /// Interface names.
    pub interfaces: Vec<String>,
}

impl SampleFilter {
    /// Whether `sample` passes every list that is not empty.
    pub fn matches(&self, sample: &Observed) -> bool {
        let any = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
        };
        any(&self.reasons, Some(&sample.reason))
            && any(&self.rules, sample.rule.as_deref())
            && any(&self.interfaces, Some(&sample.interface))
            && (self.sources.is_empty()
                || sample
                    .src
                    .is_some_and(|src| self.sources.iter().any(|net| net.contains(&src))))
    }
}

/// Names for a sample's interface index and rule slot. Rule names come from the pinned
/// `NG_RULE_NAMES`, re-read when a slot is unknown or the copy is older than
/// [`NAMES_FRESH_FOR`], so rules a reload added are named too.
pub struct SampleNamer {
    maps: Option<FilterMaps>,
    rules: Vec<(String, u16)>,
    read_at: Option<Instant>,
}

impl fmt::Debug for SampleNamer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SampleNamer")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl SampleNamer {
    /// Names from the pinned maps under `pins` (numbers only when they cannot be opened).
    pub fn pinned(pins: &PinLayout) -> Self {
        SampleNamer {
            maps: FilterMaps::open_pinned(&pins.maps_dir()).ok(),
            rules: Vec::new(),
            read_at: None,
        }
    }

    fn rule(&mut self, slot: u32) -> Option<String> {
        let find = |rules: &[(String, u16)]| {
            rules
                .iter()
                .find(|(_, s)| u32::from(*s) == slot)
                .map(|(name, _)| name.clone())
        };
        let stale = self.read_at.is_none_or(|t| t.elapsed() > NAMES_FRESH_FOR);
        if !stale {
            if let Some(name) = find(&self.rules) {
                return Some(name);
            }
        }
        let maps = self.maps.as_ref()?;
        self.rules = maps.pinned_rule_slots();
        self.read_at = Some(Instant::now());
        find(&self.rules)
    }

    /// The sample with names.
    pub fn observe(&mut self, sample: &DecodedSample) -> Observed {
        let rule = sample.rule_slot.and_then(|slot| self.rule(slot));
        Observed::new(sample, rule, crate::loader::attach::ifname(sample.ifindex))
    }
}

/// Errors of following samples.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// No daemon to subscribe to, and the pinned ring cannot be opened.
    #[error(
        "cannot follow drop samples: no `nodegate run` owns pin directory {} and its sample ring {} cannot be opened ({source}); is nodegate installed there, and do you run as root?",
        pins.display(), ring.display()
    )]
    Unavailable {
        /// The pin root.
        pins: std::path::PathBuf,
        /// The ring's pin.
        ring: std::path::PathBuf,
        /// Why the ring did not open.
        source: aya::maps::MapError,
    },
    /// Reading the pinned ring failed.
    #[error(transparent)]
    Ring(#[from] SampleError),
    /// The daemon's socket failed, or it ended the stream (it stopped).
    #[error("the daemon's sample stream {what}")]
    Daemon {
        /// What happened.
        what: String,
    },
}

/// Where samples come from.
pub enum Follow {
    /// Relayed by the daemon over its control socket.
    Daemon(BufReader<UnixStream>),
    /// Read from the pinned ring directly (no daemon).
    Ring(Box<(SampleReader, SampleNamer)>),
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via())
    }
}

impl Follow {
    /// Subscribe to the daemon owning `pins` or, when none answers, open its pinned ring.
    /// Must run inside a tokio runtime.
    pub async fn start(run_dir: &Path, pins: &PinLayout) -> Result<Follow, ObserveError> {
        let socket = control::socket_path(run_dir, pins);
        if let Ok(mut stream) = UnixStream::connect(&socket).await {
            stream
                .write_all(b"observe\n")
                .await
                .map_err(|e| ObserveError::Daemon {
                    what: format!("could not be asked for: {e}"),
                })?;
            return Ok(Follow::Daemon(BufReader::new(stream)));
        }
        let ring_path = pins.maps_dir().join(filter_common::MAP_SAMPLES);
        let ring = aya::maps::MapData::from_pin(&ring_path)
            .and_then(aya::maps::Map::from_map_data)
            .and_then(aya::maps::RingBuf::try_from)
            .map_err(|source| ObserveError::Unavailable {
                pins: pins.root().to_path_buf(),
                ring: ring_path.clone(),
                source,
            })?;
        Ok(Follow::Ring(Box::new((
            SampleReader::new(ring)?,
            SampleNamer::pinned(pins),
        ))))
    }

    /// `daemon` or `ring`: who reads the ring.
    pub fn via(&self) -> &'static str {
        match self {
            Follow::Daemon(_) => "daemon",
            Follow::Ring(..) => "ring",
        }
    }

    /// The next event, waiting for it. Cancel-safe for the ring; for the daemon a line
    /// half-read when cancelled is lost.
    pub async fn next(&mut self) -> Result<Event, ObserveError> {
        match self {
            Follow::Ring(ring) => {
                let (reader, namer) = &mut **ring;
                let sample = reader.recv().await?;
                Ok(Event::Sample(namer.observe(&sample)))
            }
            Follow::Daemon(stream) => {
                let mut line = String::new();
                let n = stream
                    .read_line(&mut line)
                    .await
                    .map_err(|e| ObserveError::Daemon {
                        what: format!("failed: {e}"),
                    })?;
                if n == 0 {
                    return Err(ObserveError::Daemon {
                        what: "ended: the daemon stopped (run `nodegate observe` again to read the pinned ring)".into(),
                    });
                }
                serde_json::from_str(line.trim()).map_err(|_| ObserveError::Daemon {
                    what: format!("sent an unreadable line {:?}", line.trim()),
                })
            }
        }
    }
}

/// The daemon's side of one `observe` connection: relay every sample from `samples` as a
/// JSON line until the client hangs up (or the daemon stops). A client that falls behind by
/// more than [`RELAY_CAPACITY`] samples is told how many it lost.
pub async fn relay(stream: UnixStream, mut samples: broadcast::Receiver<Observed>) {
    let (mut from_client, mut to_client) = stream.into_split();
    let mut scratch = [0u8; 64];
    loop {
        let event = tokio::select! {
            received = samples.recv() => match received {
                Ok(sample) => Event::Sample(sample),
                Err(broadcast::error::RecvError::Lagged(lost)) => Event::Lost { lost },
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // The client sends nothing after its request: any return is it going away.
            _ = from_client.read(&mut scratch) => return,
        };
        let mut line = serde_json::to_string(&event).expect("plain data serializes");
        line.push('\n');
        if to_client.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> Observed {
        Observed {
            time_ms: 1_764_873_301_123,
            interface: "eth0".into(),
            verdict: "drop".into(),
            would_drop: false,
            reason: "no-source-match".into(),
            rule: None,
            src: Some("198.51.100.7".parse().unwrap()),
            dst: Some("192.0.2.10".parse().unwrap()),
            proto: Some("tcp".into()),
            sport: Some(40312),
            dport: Some(443),
            icmp_type: None,
        }
    }

    #[test]
    fn a_sample_reads_as_its_log_line_with_the_time() {
        assert_eq!(
            observed().to_string(),
            "18:35:01.123 reason=no-source-match src=198.51.100.7 dst=192.0.2.10 proto=tcp sport=40312 dport=443 rule=- interface=eth0 would_drop=false"
        );
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        for event in [Event::Sample(observed()), Event::Lost { lost: 7 }] {
            let line = serde_json::to_string(&event).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
        }
        assert_eq!(
            serde_json::to_string(&Event::Lost { lost: 7 }).unwrap(),
            r#"{"lost":7}"#
        );
    }

    #[test]
    fn the_filter_needs_every_given_list_to_match() {
        let sample = observed();
        assert!(SampleFilter::default().matches(&sample));
        let by_source = |cidr: &str| SampleFilter {
            sources: vec![cidr.parse().unwrap()],
            ..SampleFilter::default()
        };
        assert!(by_source("198.51.100.0/24").matches(&sample));
        assert!(!by_source("203.0.113.0/24").matches(&sample));
        assert!(!by_source("2001:db8::/32").matches(&sample));
        let mut filter = SampleFilter {
            reasons: vec!["deny-rule".into(), "no-source-match".into()],
            interfaces: vec!["eth0".into()],
            ..SampleFilter::default()
        };
        assert!(filter.matches(&sample));
        filter.rules = vec!["ssh".into()];
        assert!(
            !filter.matches(&sample),
            "no rule decided, so no rule matches"
        );
        let non_ip = Observed {
            src: None,
            ..observed()
        };
        assert!(!by_source("0.0.0.0/0").matches(&non_ip));
    }

    #[tokio::test]
    async fn the_relay_streams_samples_and_tells_a_slow_client_what_it_lost() {
        let (server, client) = UnixStream::pair().unwrap();
        let (tx, rx) = broadcast::channel(4);
        // Six samples into a channel of four before the relay reads: the two oldest are lost.
        for n in 0..6u16 {
            tx.send(Observed {
                sport: Some(n),
                ..observed()
            })
            .unwrap();
        }
        let relay = tokio::spawn(relay(server, rx));
        let mut lines = BufReader::new(client).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Event>(&first).unwrap(),
            Event::Lost { lost: 2 }
        );
        let second = lines.next_line().await.unwrap().unwrap();
        let second: Event = serde_json::from_str(&second).unwrap();
        assert_eq!(
            second,
            Event::Sample(Observed {
                sport: Some(2),
                ..observed()
            })
        );
        drop(lines);
        // The client hung up: the relay ends without another sample.
        tokio::time::timeout(Duration::from_secs(2), relay)
            .await
            .expect("the relay ends when its client goes")
            .unwrap();
    }
}
