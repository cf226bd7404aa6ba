//! Noticing that the config file changed, with inotify.
//!
//! [`ConfigWatcher::changed`] resolves once the *content the path resolves to* has changed,
//! whichever way it was changed:
//!
//! - written in place (`IN_MODIFY`, `IN_CLOSE_WRITE` on the file);
//! - replaced by an editor or a deploy tool that writes a temporary file and renames it over
//!   the path (`IN_MOVED_TO` in the directory);
//! - swapped the way Kubernetes updates a mounted ConfigMap: `config.yaml -> ..data/config.yaml`,
//!   `..data -> ..2026_11_22_10_00_00.123`, and an update renames a new `..data_tmp` symlink
//!   over `..data` (`IN_MOVED_TO ..data`);
//! - deleted and created again, or with a directory on the way replaced.
//!
//! How: the path is resolved one component at a time, following symlinks by hand, and every
//! directory met on the way is watched for the one name that matters in it (the directory
//! holding the final file is also watched for writes). Any event on such a name starts a quiet
//! period (debounce); when it ends the path is resolved again, the watches are moved to the
//! new chain, and the file is read and hashed. Only a hash different from the last one seen
//! is reported, so touching unrelated files, saving an unchanged file, or an editor's burst of
//! renames and writes gives at most one event.
//!
//! A deleted (missing) file is not reported: the daemon keeps enforcing the last good rule
//! set and the file's reappearance with different content is reported then.
//!
//! ```no_run
//! # async fn run() -> Result<(), filter_user::daemon::watch::WatchError> {
//! use filter_user::daemon::watch::ConfigWatcher;
//!
//! // Create the watcher *before* reading the file, so no change can slip in between.
//! let mut watcher = ConfigWatcher::new("/etc/nodegate/config.yaml")?;
//! // ... load the config ...
//! loop {
//!     watcher.changed().await?;
//!     // ... reload ...
//! }
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::time::Instant;

/// Default quiet period: a change is reported once no relevant event came for this long.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Symlinks followed while resolving the path before giving up (the kernel's `ELOOP` limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// A burst that never goes quiet is still reported after this many quiet periods.
const MAX_DELAY_FACTOR: u32 = 10;

/// How many times the watches are re-armed when the chain changes under our feet.
const REARM_ATTEMPTS: usize = 4;

/// Events that change which file a path resolves to.
const STRUCTURE: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// Events that change a file's content.
const CONTENT: WatchMask = WatchMask::MODIFY.union(WatchMask::CLOSE_WRITE);

/// Flags on every watch: directories only, never through a symlink (the chain is resolved by
/// hand), no events for names already unlinked, and add to (not replace) an existing mask
/// when two chain entries are the same directory.
const WATCH_FLAGS: WatchMask = WatchMask::ONLYDIR
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK)
    .union(WatchMask::MASK_ADD);

/// Errors from watching the config file.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// inotify itself could not be set up.
    #[error("cannot set up inotify: {source}")]
    Init {
        /// The OS error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The path is relative and the working directory is unknown.
    #[error("cannot resolve {path}: {source}")]
    Resolve {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A directory on the way to the file could not be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Reading events failed (the inotify descriptor broke).
    #[error("reading inotify events failed: {source}")]
    Read {
        /// The OS error.
        source: io::Error,
    },
}

impl crate::hint::Hint for WatchError {
    fn hint(&self) -> Option<&str> {
        match self {
            WatchError::Init { hint, .. } | WatchError::Watch { hint, .. } => {
                crate::hint::non_empty(hint)
            }
            _ => None,
        }
    }
}

fn init_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EMFILE) => {
            "the per-user inotify instance limit is exhausted; raise fs.inotify.max_user_instances"
        }
        _ => "",
    }
}

fn watch_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOSPC) => {
            "the per-user inotify watch limit is exhausted; raise fs.inotify.max_user_watches"
        }
        Some(libc::EACCES) => "nodegate needs search permission on every directory on the way",
        _ => "",
    }
}

/// What to watch in one directory of the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Interest {
    /// Names in the directory that the path goes through.
    names: BTreeSet<OsString>,
    /// Whether the directory holds the final file (so writes matter too).
    content: bool,
}

impl Interest {
    fn merge(&mut self, other: &Interest) {
        self.names.extend(other.names.iter().cloned());
        self.content |= other.content;
    }
}

/// Every directory met while resolving the path, with what matters in it.
type Plan = BTreeMap<PathBuf, Interest>;

/// Resolve `path` (absolute) one component at a time, following symlinks by hand, and record
/// each (directory, name) step. Stops at the first missing or unreadable step: the watch on
/// the directory holding it reports when it appears.
fn resolve(path: &Path) -> Plan {
    let mut plan = Plan::new();
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_components(&mut pending, path);
    let mut dir = PathBuf::from("/");
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // NB: `dir` never contains a symlink, so lexical `..` is the real parent.
            dir.pop();
            continue;
        }
        let last = pending.is_empty();
        let candidate = dir.join(&name);
        plan.entry(dir.clone()).or_default().names.insert(name);
        let Ok(meta) = std::fs::symlink_metadata(&candidate) else {
            break;
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            let Ok(target) = std::fs::read_link(&candidate) else {
                break;
            };
            if hops > MAX_SYMLINK_HOPS {
                break;
            }
            if target.is_absolute() {
                dir = PathBuf::from("/");
            }
            let mut rest = VecDeque::new();
            push_components(&mut rest, &target);
            rest.extend(pending.drain(..));
            pending = rest;
        } else if meta.is_dir() {
            dir = candidate;
        } else {
            if last {
                if let Some(interest) = plan.get_mut(&dir) {
                    interest.content = true;
                }
            }
            // A non-directory in the middle: ENOTDIR, nothing further to resolve.
            break;
        }
    }
    plan
}

fn push_components(out: &mut VecDeque<OsString>, path: &Path) {
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push_back(name.to_os_string()),
            Component::ParentDir => out.push_back(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// What the path resolves to, as far as reloading is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fingerprint {
    /// Length and hash of the bytes.
    Content { len: u64, hash: u64 },
    /// Nothing there (or a component is not a directory).
    Missing,
    /// Something there that cannot be read: worth a reload attempt so the error is logged.
    Unreadable(io::ErrorKind),
}

fn fingerprint(path: &Path) -> Fingerprint {
    // The same reader as the reload's: a FIFO or device at the path must not block the
    // watcher either.
    match crate::config::read_rule_file(path) {
        Ok(bytes) => {
            let mut hasher = DefaultHasher::new();
            bytes.hash(&mut hasher);
            Fingerprint::Content {
                len: bytes.len() as u64,
                hash: hasher.finish(),
            }
        }
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Fingerprint::Missing
        }
        Err(err) => Fingerprint::Unreadable(err.kind()),
    }
}

/// Watches one config path and reports changes of the content it resolves to.
///
/// Must be created and polled inside a tokio runtime (the inotify descriptor is registered
/// with its reactor).
pub struct ConfigWatcher {
    path: PathBuf,
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    interest: HashMap<WatchDescriptor, Interest>,
    last: Fingerprint,
    quiet: Duration,
    max_delay: Duration,
    first_event: Option<Instant>,
    last_event: Option<Instant>,
    /// The event stream failed; the error was returned once and `changed` now never resolves.
    broken: bool,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("path", &self.path)
            .field("watched_dirs", &self.interest.len())
            .field("last", &self.last)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl ConfigWatcher {
    /// Watch `path` with the default quiet period ([`DEFAULT_DEBOUNCE`]).
    pub fn new(path: impl AsRef<Path>) -> Result<Self, WatchError> {
        Self::with_debounce(path, DEFAULT_DEBOUNCE)
    }

    /// Watch `path`; a change is reported once no relevant event came for `quiet` (or, for
    /// a burst that never goes quiet, after ten times that).
    pub fn with_debounce(path: impl AsRef<Path>, quiet: Duration) -> Result<Self, WatchError> {
        let path = path.as_ref();
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| WatchError::Resolve {
                    path: path.to_path_buf(),
                    source,
                })?
                .join(path)
        };
        let inotify = Inotify::init().map_err(|source| WatchError::Init {
            hint: init_hint(&source),
            source,
        })?;
        let stream = inotify
            .into_event_stream(vec![0u8; 16 * 1024])
            .map_err(|source| WatchError::Init { hint: "", source })?;
        let watches = stream.watches();
        let mut watcher = ConfigWatcher {
            path,
            stream,
            watches,
            interest: HashMap::new(),
            last: Fingerprint::Missing,
            quiet,
            max_delay: quiet * MAX_DELAY_FACTOR,
            first_event: None,
            last_event: None,
            broken: false,
        };
        watcher.rearm()?;
        watcher.last = fingerprint(&watcher.path);
        Ok(watcher)
    }

    /// The watched path (absolute, symlinks not resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait until the content the path resolves to has changed since the watcher was created
    /// or since this last returned. Cancel-safe: dropping the future (e.g. in `select!`) loses
    /// no event, a pending quiet period carries over to the next call.
    ///
    /// Errors only when the inotify descriptor itself fails, and then only once: afterwards
    /// the watcher is dead and `changed` never resolves, so a `select!` loop that logs the
    /// error and goes on (reloading on SIGHUP only) does not spin. Problems re-arming watches
    /// on a changed directory chain are logged and retried on the next event.
    pub async fn changed(&mut self) -> Result<(), WatchError> {
        if self.broken {
            return std::future::pending().await;
        }
        loop {
            let event = match self.deadline() {
                Some(deadline) => tokio::select! {
                    event = self.stream.next() => Some(event),
                    () = tokio::time::sleep_until(deadline) => None,
                },
                None => Some(self.stream.next().await),
            };
            match event {
                Some(Some(Ok(event))) => {
                    if self.is_relevant(&event) {
                        tracing::trace!(path = %self.path.display(), mask = ?event.mask, name = ?event.name, "config watch event");
                        let now = Instant::now();
                        self.first_event.get_or_insert(now);
                        self.last_event = Some(now);
                    }
                }
                Some(Some(Err(source))) => {
                    self.broken = true;
                    return Err(WatchError::Read { source });
                }
                Some(None) => {
                    self.broken = true;
                    let source =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "inotify event stream ended");
                    return Err(WatchError::Read { source });
                }
                None => {
                    self.first_event = None;
                    self.last_event = None;
                    if self.settle() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// When the pending quiet period ends, if one is pending.
    fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first_event?, self.last_event?);
        Some((last + self.quiet).min(first + self.max_delay))
    }

    fn is_relevant(&self, event: &EventOwned) -> bool {
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            return true;
        }
        let Some(interest) = self.interest.get(&event.wd) else {
            // A watch we already removed (its IN_IGNORED), or a stale descriptor.
            return false;
        };
        if event
            .mask
            .intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF)
        {
            return true;
        }
        match &event.name {
            Some(name) => interest.names.contains(name),
            None => false,
        }
    }

    /// After a quiet period: follow the chain again and tell whether the content changed.
    fn settle(&mut self) -> bool {
        if let Err(err) = self.rearm() {
            tracing::warn!(path = %self.path.display(), error = %err, hint = crate::hint::of(&err), "cannot watch the config path fully; changes may be missed until the next event");
        }
        let now = fingerprint(&self.path);
        match now {
            Fingerprint::Missing => {
                tracing::debug!(path = %self.path.display(), "config file is missing; waiting for it to reappear");
                false
            }
            now if now == self.last => false,
            now => {
                self.last = now;
                true
            }
        }
    }

    /// Watch every directory of the current chain and drop watches on directories that left it.
    fn rearm(&mut self) -> Result<(), WatchError> {
        let mut result = Ok(());
        for _ in 0..REARM_ATTEMPTS {
            let plan = resolve(&self.path);
            result = self.apply(&plan);
            if resolve(&self.path) == plan {
                break;
            }
        }
        result
    }

    fn apply(&mut self, plan: &Plan) -> Result<(), WatchError> {
        let mut interest: HashMap<WatchDescriptor, Interest> = HashMap::new();
        let mut first_error = None;
        for (dir, wanted) in plan {
            let mut mask = STRUCTURE | WATCH_FLAGS;
            if wanted.content {
                mask |= CONTENT;
            }
            match self.watches.add(dir, mask) {
                Ok(wd) => interest.entry(wd).or_default().merge(wanted),
                // Gone between resolving and watching: its parent's watch reports it.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) => {}
                Err(source) => {
                    first_error.get_or_insert(WatchError::Watch {
                        path: dir.clone(),
                        hint: watch_hint(&source),
                        source,
                    });
                }
            }
        }
        for wd in self.interest.keys() {
            if !interest.contains_key(wd) {
                // Fails harmlessly when the kernel already dropped it (directory deleted).
                let _ = self.watches.remove(wd.clone());
            }
        }
        self.interest = interest;
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("nodegate-watch-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const TEST_QUIET: Duration = Duration::from_millis(100);

    /// Whether `changed` resolves within `within`.
    async fn fires(watcher: &mut ConfigWatcher, within: Duration) -> bool {
        match tokio::time::timeout(within, watcher.changed()).await {
            Ok(result) => {
                result.unwrap();
                true
            }
            Err(_elapsed) => false,
        }
    }

    const SOON: Duration = Duration::from_secs(3);
    const QUIET_CHECK: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn in_place_write_fires() {
        let dir = TempDir::new("inplace");
        let path = dir.join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let mut watcher = ConfigWatcher::with_debounce(&path, TEST_QUIET).unwrap();
        std::fs::write(&path, "a: 2\n").unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "in-place write not reported"
        );
        assert!(
            !fires(&mut watcher, QUIET_CHECK).await,
            "one write reported twice"
        );
    }

    #[tokio::test]
    async fn rename_over_fires() {
        let dir = TempDir::new("rename");
        let path = dir.join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let mut watcher = ConfigWatcher::with_debounce(&path, TEST_QUIET).unwrap();
        let tmp = dir.join(".config.yaml.swp");
        std::fs::write(&tmp, "a: 2\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "rename over the path not reported"
        );
        // The watch follows the new inode: a later in-place write is seen too.
        std::fs::write(&path, "a: 3\n").unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "write after rename not reported"
        );
    }

    /// The layout kubelet's AtomicWriter maintains for a ConfigMap volume.
    fn configmap_version(dir: &TempDir, version: &str, content: &str) {
        let data = dir.join(version);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("config.yaml"), content).unwrap();
        symlink(version, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    }

    #[tokio::test]
    async fn configmap_data_swap_fires() {
        let dir = TempDir::new("configmap");
        configmap_version(&dir, "..2026_11_22_10_00_00.000000001", "a: 1\n");
        symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        let mut watcher =
            ConfigWatcher::with_debounce(dir.join("config.yaml"), TEST_QUIET).unwrap();

        configmap_version(&dir, "..2026_11_22_10_05_00.000000002", "a: 2\n");
        std::fs::remove_dir_all(dir.join("..2026_11_22_10_00_00.000000001")).unwrap();
        assert!(fires(&mut watcher, SOON).await, "..data swap not reported");
        assert!(
            !fires(&mut watcher, QUIET_CHECK).await,
            "one swap reported twice"
        );

        // And the next update, through the re-armed watches.
        configmap_version(&dir, "..2026_11_22_10_10_00.000000003", "a: 3\n");
        std::fs::remove_dir_all(dir.join("..2026_11_22_10_05_00.000000002")).unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "second ..data swap not reported"
        );
    }

    #[tokio::test]
    async fn configmap_swap_with_same_content_is_quiet() {
        let dir = TempDir::new("configmap-same");
        configmap_version(&dir, "..v1", "a: 1\n");
        symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        let mut watcher =
            ConfigWatcher::with_debounce(dir.join("config.yaml"), TEST_QUIET).unwrap();
        // kubelet resyncs another key of the same ConfigMap: config.yaml is unchanged.
        configmap_version(&dir, "..v2", "a: 1\n");
        assert!(
            !fires(&mut watcher, QUIET_CHECK).await,
            "unchanged content reported"
        );
    }

    #[tokio::test]
    async fn burst_of_writes_fires_once() {
        let dir = TempDir::new("burst");
        let path = dir.join("config.yaml");
        std::fs::write(&path, "a: 0\n").unwrap();
        let mut watcher = ConfigWatcher::new(&path).unwrap();
        for i in 1..=10 {
            std::fs::write(&path, format!("a: {i}\n")).unwrap();
        }
        assert!(fires(&mut watcher, SOON).await, "burst not reported");
        assert!(
            !fires(&mut watcher, Duration::from_millis(800)).await,
            "burst reported more than once"
        );
    }

    #[tokio::test]
    async fn no_change_no_event() {
        let dir = TempDir::new("idle");
        let path = dir.join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let mut watcher = ConfigWatcher::with_debounce(&path, TEST_QUIET).unwrap();
        assert!(!fires(&mut watcher, QUIET_CHECK).await);
        // Rewriting the same bytes is no change either.
        std::fs::write(&path, "a: 1\n").unwrap();
        assert!(
            !fires(&mut watcher, QUIET_CHECK).await,
            "identical rewrite reported"
        );
    }

    #[tokio::test]
    async fn unrelated_file_no_event() {
        let dir = TempDir::new("unrelated");
        let path = dir.join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let mut watcher = ConfigWatcher::with_debounce(&path, TEST_QUIET).unwrap();
        std::fs::write(dir.join("other.yaml"), "b: 1\n").unwrap();
        std::fs::rename(dir.join("other.yaml"), dir.join("other2.yaml")).unwrap();
        std::fs::remove_file(dir.join("other2.yaml")).unwrap();
        assert!(
            !fires(&mut watcher, QUIET_CHECK).await,
            "unrelated file reported"
        );
        assert!(
            watcher.first_event.is_none(),
            "unrelated events started a quiet period"
        );
    }

    #[tokio::test]
    async fn delete_then_recreate() {
        let dir = TempDir::new("recreate");
        let path = dir.join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let mut watcher = ConfigWatcher::with_debounce(&path, TEST_QUIET).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!fires(&mut watcher, QUIET_CHECK).await, "deletion reported");
        std::fs::write(&path, "a: 2\n").unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "re-created file not reported"
        );
    }

    #[tokio::test]
    async fn file_created_later() {
        let dir = TempDir::new("later");
        let path = dir.join("config.yaml");
        let mut watcher = ConfigWatcher::with_debounce(&path, TEST_QUIET).unwrap();
        std::fs::write(&path, "a: 1\n").unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "file appearing not reported"
        );
    }

    #[tokio::test]
    async fn directory_replaced() {
        let dir = TempDir::new("dirswap");
        let sub = dir.join("etc");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("config.yaml"), "a: 1\n").unwrap();
        let mut watcher =
            ConfigWatcher::with_debounce(sub.join("config.yaml"), TEST_QUIET).unwrap();

        let next = dir.join("etc.new");
        std::fs::create_dir(&next).unwrap();
        std::fs::write(next.join("config.yaml"), "a: 2\n").unwrap();
        std::fs::rename(&sub, dir.join("etc.old")).unwrap();
        std::fs::rename(&next, &sub).unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "replaced directory not reported"
        );

        // The old directory is no longer watched; the new one is.
        std::fs::write(dir.join("etc.old").join("config.yaml"), "a: 9\n").unwrap();
        assert!(
            !fires(&mut watcher, QUIET_CHECK).await,
            "write to the old directory reported"
        );
        std::fs::write(sub.join("config.yaml"), "a: 3\n").unwrap();
        assert!(
            fires(&mut watcher, SOON).await,
            "write in the new directory not reported"
        );
    }

    #[test]
    fn resolve_follows_relative_and_absolute_links() {
        let dir = TempDir::new("resolve");
        std::fs::create_dir(dir.join("real")).unwrap();
        std::fs::write(dir.join("real").join("f"), "x").unwrap();
        symlink("real", dir.join("rel")).unwrap();
        symlink(dir.join("rel").join("f"), dir.join("abs")).unwrap();
        let plan = resolve(&dir.join("abs"));
        let top = &plan[&dir.0];
        for name in ["abs", "rel", "real"] {
            assert!(
                top.names.contains(&OsString::from(name)),
                "{name} not watched: {plan:?}"
            );
        }
        assert!(!top.content);
        let real = &plan[&dir.join("real")];
        assert!(
            real.content && real.names.contains(&OsString::from("f")),
            "{plan:?}"
        );
    }

    #[test]
    fn resolve_stops_on_symlink_loop() {
        let dir = TempDir::new("loop");
        symlink("b", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        let plan = resolve(&dir.join("a"));
        assert!(plan.values().all(|i| !i.content));
    }
}
