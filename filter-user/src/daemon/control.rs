//! The control socket: `nodegate reload` asks the daemon that owns a pin directory to reload
//! and waits for the answer.
//!
//! SIGHUP and a PID file could only say "I asked": a rejected file still exited 0, and a
//! stale PID file (left by any crash) pointed the signal at an unrelated process. The daemon
//! listens on a Unix socket beside its owner lock (`/run/nodegate/<pin root>.sock`, mode
//! 0600 in a 0700 directory; bpffs holds no sockets), one line per request, one JSON line
//! per answer:
//!
//! ```text
//! → reload            ← {"ok":true,"epoch":7,"message":"..."}   (after the flip)
//!                     ← {"ok":false,"epoch":6,"message":"rules.yaml:3:5: ..."}
//! → reload-nowait     ← {"ok":true,"epoch":6,"message":"reload queued"}  (before it runs)
//! → apply {"file":"/etc/nodegate/next.yaml","confirm_within_secs":120,"probes":[…],"watch_established":true}
//!                     ← {"ok":true,"epoch":8,"message":"epoch 8 active on probation …"}
//! → confirm           ← {"ok":true,"epoch":8,"message":"confirmed: …"}
//! → rollback          ← {"ok":true,"epoch":9,"message":"rolled back …"}
//! → status            ← {"pid":…}  (a DaemonStatus)
//! → observe           ← {"time_ms":…,"reason":…}  one line per drop sample, until the client
//!                       hangs up (see [`super::observe`])
//! ```

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::UnixStream as StdUnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
};

use crate::loader::pins::PinLayout;

/// A client has this long to send its request line.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest request line read (an `apply` names a file and up to 16 probes).
const MAX_REQUEST_BYTES: u64 = 8192;
/// Connections whose request is still being read, at most.
const MAX_PENDING: usize = 64;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Reload the rule file; answer once the new generation is active, or rejected.
    Reload,
    /// Reload the rule file; answer at once.
    ReloadNoWait,
    /// Describe the daemon ([`DaemonStatus`]).
    Status,
    /// Publish a file on probation (`nodegate apply`).
    Apply(ApplyRequest),
    /// Keep the change on probation (`nodegate confirm`).
    Confirm,
    /// Flip back now (`nodegate rollback`).
    Rollback,
    /// Stream drop samples until the client hangs up (`nodegate observe`).
    Observe,
}

/// `nodegate apply`'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The rule file to publish (absolute).
    pub file: PathBuf,
    /// The probation window.
    pub confirm_within_secs: u64,
    /// Probes that must keep passing.
    pub probes: Vec<crate::probe::ReachProbe>,
    /// Roll back on a dropped packet of a connection established before the change.
    pub watch_established: bool,
}

impl Request {
    /// The request line.
    fn line(&self) -> String {
        match self {
            Request::Reload => "reload\n".into(),
            Request::ReloadNoWait => "reload-nowait\n".into(),
            Request::Status => "status\n".into(),
            Request::Apply(apply) => format!(
                "apply {}\n",
                serde_json::to_string(apply).expect("plain data serializes")
            ),
            Request::Confirm => "confirm\n".into(),
            Request::Rollback => "rollback\n".into(),
            Request::Observe => "observe\n".into(),
        }
    }

    fn parse(line: &str) -> Result<Request, String> {
        Ok(match line {
            "reload" => Request::Reload,
            "reload-nowait" => Request::ReloadNoWait,
            "status" => Request::Status,
            "confirm" => Request::Confirm,
            "rollback" => Request::Rollback,
            "observe" => Request::Observe,
            other => match other.strip_prefix("apply ") {
                Some(json) => Request::Apply(
                    serde_json::from_str(json).map_err(|e| format!("unreadable apply request: {e}"))?,
                ),
                None => {
                    return Err(format!(
                        "unknown request {other:?}; this nodegate understands `reload`, `reload-nowait`, `status`, `apply`, `confirm`, `rollback` and `observe`"
                    ))
                }
            },
        })
    }
}

/// One rule of the active generation as the daemon knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSummary {
    /// Its name.
    pub name: String,
    /// failsafe, deny or allow.
    pub kind: String,
    /// IPv4 source prefixes it lists (its sets resolved).
    pub ipv4_sources: usize,
    /// IPv6 source prefixes it lists.
    pub ipv6_sources: usize,
}

/// A named set of the active rule file and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSummary {
    /// Its name.
    pub name: String,
    /// IPv4 prefixes listed.
    pub ipv4: usize,
    /// IPv6 prefixes listed.
    pub ipv6: usize,
}

/// One entry of the daemon's audit trail: a publish, or a rejected reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix time.
    pub at: u64,
    /// What asked: `start`, `file change`, `SIGHUP`, `nodegate reload`.
    pub trigger: String,
    /// Whether a generation was published.
    pub published: bool,
    /// The active epoch afterwards.
    pub epoch: u64,
    /// `config::content_hash` of the file, hex (published entries).
    pub config_hash: Option<String>,
    /// What changed (`diff::summary`), or why the file was rejected.
    pub detail: String,
    /// An event that neither published nor rejected anything (a confirmation, the reason
    /// of a rollback).
    #[serde(default)]
    pub note: bool,
}

/// What the daemon says about itself (`nodegate status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its PID.
    pub pid: u32,
    /// The rule file it reloads.
    pub config: PathBuf,
    /// `config::content_hash` of the file the active generation came from, hex.
    pub config_hash: Option<String>,
    /// Active epoch.
    pub epoch: u64,
    /// When the active generation was published (Unix seconds).
    pub published_at: Option<u64>,
    /// Reloads that published (the first load counts).
    pub reloads_ok: u64,
    /// Reloads that were rejected.
    pub reloads_failed: u64,
    /// Why the last reload was rejected, until one succeeds.
    pub last_reload_error: Option<String>,
    /// Interfaces attached: (name, how).
    pub interfaces: Vec<(String, String)>,
    /// Interfaces asked for.
    pub requested: Vec<String>,
    /// `ProgramVariant::name`.
    pub program_variant: String,
    /// Rules of the active generation, in file order.
    pub rules: Vec<RuleSummary>,
    /// Why it is not ready (`None`: ready).
    pub not_ready: Option<String>,
    /// The last publishes and rejected reloads, oldest first.
    #[serde(default)]
    pub history: Vec<AuditEntry>,
    /// The active rule file's named sets.
    #[serde(default)]
    pub sets: Vec<SetSummary>,
    /// A confirmed change on probation, or the last one rolled back while the rule file
    /// still holds it.
    #[serde(default)]
    pub rollout: Option<super::rollout::RolloutStatus>,
    /// Distinct packets the drop samples showed lately, newest last (`nodegate diff`
    /// judges them under the new rules).
    #[serde(default)]
    pub recent_drops: Vec<SeenPacket>,
}

/// A dropped packet, as the drop samples show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeenPacket {
    /// Source address.
    pub src: std::net::IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port, or ICMP type.
    pub port: u16,
}

/// The last [`RecentDrops::CAPACITY`] distinct dropped packets.
#[derive(Debug, Default)]
pub struct RecentDrops(std::collections::VecDeque<SeenPacket>);

impl RecentDrops {
    /// Packets kept.
    pub const CAPACITY: usize = 256;

    /// Remember `packet` as the newest (moving it up if known).
    pub fn record(&mut self, packet: SeenPacket) {
        self.0.retain(|p| *p != packet);
        if self.0.len() == Self::CAPACITY {
            self.0.pop_front();
        }
        self.0.push_back(packet);
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<SeenPacket> {
        self.0.iter().copied().collect()
    }
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The request succeeded (for `reload`: the new generation is active).
    pub ok: bool,
    /// The active epoch after the request.
    pub epoch: u64,
    /// What happened, or why not (a rejected file's diagnostics with file:line:column).
    pub message: String,
}

/// Errors of the control socket, both sides.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nobody listens: no daemon owns that pin directory.
    #[error(
        "no `nodegate run` owns pin directory {pins} (nothing listens on {socket}: {source}); start it, \
         or give the --pin-dir it runs with"
    )]
    NoDaemon {
        /// The pin root.
        pins: PathBuf,
        /// The socket path.
        socket: PathBuf,
        /// Why connecting failed.
        source: std::io::Error,
    },
    /// Setting up or talking over the socket failed.
    #[error("control socket {}: {what}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The daemon answered something we cannot read.
    #[error("control socket {}: unreadable answer {answer:?}", path.display())]
    BadAnswer {
        /// The socket path.
        path: PathBuf,
        /// What came back.
        answer: String,
    },
}

/// The control socket of `pins` under `run_dir`, beside its owner lock.
pub fn socket_path(run_dir: &Path, pins: &PinLayout) -> PathBuf {
    super::owner::OwnerLock::path_for(run_dir, pins).with_extension("sock")
}

/// The daemon's listening side.
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode: dropping removes the path only while it is still ours (a
    /// successor that took over may have bound its own there).
    inode: u64,
}

impl ControlListener {
    /// Listen at `path`, replacing a socket a dead owner left (the caller holds the owner
    /// lock, so no live daemon listens there). Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |what, source| ControlError::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the stale socket", e)),
        }
        let listener = UnixListener::bind(path).map_err(|e| io("listen", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restrict to the owner", e))?;
        let inode = std::fs::symlink_metadata(path)
            .map_err(|e| io("inspect", e))?
            .ino();
        Ok(ControlListener {
            listener,
            path: path.to_path_buf(),
            inode,
        })
    }

    /// Accept connections on a task of their own and read each one's request on a task of
    /// its own (a client that holds its connection open without a word delays nobody else);
    /// well-formed requests arrive on the returned channel with the connection to answer
    /// on. Receiving from it is cancel-safe, so the daemon's event loop can wait on it
    /// beside file changes and signals without ever dropping a half-read request.
    pub fn spawn(self) -> tokio::sync::mpsc::Receiver<(UnixStream, Request)> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let readers = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = self.listener.accept() => accepted,
                    // Nobody takes requests any more: stop listening (the socket goes).
                    () = tx.closed() => return,
                };
                let Ok((stream, _)) = accepted else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Beyond MAX_PENDING silent clients, new ones are closed at once.
                let Ok(permit) = readers.clone().try_acquire_owned() else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(request) = read_request(stream).await {
                        let _ = tx.send(request).await;
                    }
                    drop(permit);
                });
            }
        });
        rx
    }
}

/// The request on a fresh connection, with the connection to answer on. A client that sends
/// nothing in time is dropped, one that sends garbage is answered here; neither returns.
async fn read_request(stream: UnixStream) -> Option<(UnixStream, Request)> {
    let mut reader = AsyncBufReader::new(tokio::io::AsyncReadExt::take(stream, MAX_REQUEST_BYTES));
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_DEADLINE, reader.read_line(&mut line)).await;
    let mut stream = reader.into_inner().into_inner();
    match Request::parse(line.trim()) {
        Ok(request) => Some((stream, request)),
        Err(message) => {
            if read.is_ok() {
                let answer = Answer {
                    ok: false,
                    epoch: 0,
                    message,
                };
                let _ = reply(&mut stream, &answer).await;
            }
            None
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Send `answer` (an [`Answer`], a [`DaemonStatus`]) as one JSON line and close.
pub async fn reply(stream: &mut UnixStream, answer: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_string(answer).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    stream.shutdown().await
}

/// Ask the daemon owning `pins` for a reload, waiting up to `timeout` for its answer.
pub fn ask(
    run_dir: &Path,
    pins: &PinLayout,
    request: Request,
    timeout: Duration,
) -> Result<Answer, ControlError> {
    exchange(run_dir, pins, request, timeout)
}

/// Ask the daemon owning `pins` about itself.
pub fn ask_status(
    run_dir: &Path,
    pins: &PinLayout,
    timeout: Duration,
) -> Result<DaemonStatus, ControlError> {
    exchange(run_dir, pins, Request::Status, timeout)
}

fn exchange<T: serde::de::DeserializeOwned>(
    run_dir: &Path,
    pins: &PinLayout,
    request: Request,
    timeout: Duration,
) -> Result<T, ControlError> {
    let path = socket_path(run_dir, pins);
    let io = |what, source| ControlError::Io {
        path: path.clone(),
        what,
        source,
    };
    let mut stream = StdUnixStream::connect(&path).map_err(|source| ControlError::NoDaemon {
        pins: pins.root().to_path_buf(),
        socket: path.clone(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io("set a timeout", e))?;
    let line = request.line();
    stream
        .write_all(line.as_bytes())
        .map_err(|e| io("send", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| io("wait for the answer", e))?;
    serde_json::from_str(answer.trim()).map_err(|_| ControlError::BadAnswer {
        path: path.clone(),
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_drops_keep_the_newest_distinct_packets() {
        let mut recent = RecentDrops::default();
        let packet = |n: u16| SeenPacket {
            src: "192.0.2.9".parse().unwrap(),
            proto: 6,
            port: n,
        };
        for n in 0..300 {
            recent.record(packet(n % 280));
        }
        let list = recent.list();
        assert_eq!(list.len(), RecentDrops::CAPACITY);
        assert_eq!(list.last(), Some(&packet(19)));
        assert_eq!(list.iter().filter(|p| **p == packet(19)).count(), 1);
        assert!(!list.contains(&packet(20)), "the oldest went first");
    }

    #[tokio::test]
    async fn a_request_gets_its_answer_and_garbage_gets_an_error() {
        let dir = std::env::temp_dir().join(format!("ng-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pins = PinLayout::new("/sys/fs/bpf/ng-control-test");
        let path = socket_path(&dir, &pins);
        // A stale socket file from a dead owner is replaced.
        std::fs::write(&path, "stale").unwrap();
        let listener = ControlListener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let mut requests = listener.spawn();
        let server = tokio::spawn(async move {
            let (mut stream, request) = requests.recv().await.unwrap();
            assert_eq!(request, Request::Reload);
            let answer = Answer {
                ok: false,
                epoch: 3,
                message: "rules.yaml:2:7: bad".into(),
            };
            reply(&mut stream, &answer).await.unwrap();
            requests
        });
        // Clients that connect and say nothing delay nobody.
        let idle: Vec<StdUnixStream> = (0..50)
            .map(|_| StdUnixStream::connect(&path).unwrap())
            .collect();
        // Garbage first: answered with an error, not taken for a request.
        let (dir2, pins2) = (dir.clone(), pins.clone());
        let garbage = tokio::task::spawn_blocking(move || {
            let mut s = StdUnixStream::connect(socket_path(&dir2, &pins2)).unwrap();
            s.write_all(b"bogus\n").unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            line
        })
        .await
        .unwrap();
        assert!(garbage.contains("unknown request"), "{garbage}");
        for request in [
            Request::Observe,
            Request::Confirm,
            Request::Rollback,
            Request::Apply(ApplyRequest {
                file: "/etc/nodegate/next.yaml".into(),
                confirm_within_secs: 120,
                probes: vec!["https://10.0.0.10:6443/readyz".parse().unwrap()],
                watch_established: true,
            }),
        ] {
            assert_eq!(Request::parse(request.line().trim()), Ok(request));
        }
        assert!(Request::parse("apply {")
            .unwrap_err()
            .contains("unreadable apply request"));
        let (dir2, pins2) = (dir.clone(), pins.clone());
        let asked = std::time::Instant::now();
        let answer = tokio::task::spawn_blocking(move || {
            ask(&dir2, &pins2, Request::Reload, Duration::from_secs(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "answered in {:?} beside 50 idle clients",
            asked.elapsed()
        );
        assert_eq!(answer.message, "rules.yaml:2:7: bad");
        assert!(!answer.ok);
        drop(idle);
        drop(server.await.unwrap());
        // Dropping the receiver stops the listener; its socket goes with it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!path.exists(), "the socket goes with the listener");
        let err = ask(&dir, &pins, Request::Reload, Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("no `nodegate run` owns pin directory"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
