//! One daemon per pin directory.
//!
//! Two `nodegate run` on the same pins would both write the same maps: a DaemonSet rolling
//! update with `maxSurge`, a systemd restart racing a manual start, or a stray shell does
//! that. The daemon holds an exclusive `flock` on a lock file for its whole life. bpffs holds
//! no regular files, so the lock lives in a run directory: `/run/nodegate/<pin root>.lock`.
//! The kernel drops the lock when its holder dies, however it dies, so a stale lock is never
//! an obstacle and no PID is ever trusted from a file.
//!
//! Handover: a second daemon is refused at once, naming the owner's PID, unless it was
//! started with a wait (`run --owner-wait SECONDS`): then it waits for the owner to exit and
//! takes over before touching anything. The filter keeps enforcing in between (the owner
//! leaves it attached on exit), and there are never two writers.

use std::{
    fs::{DirBuilder, File},
    io::{Read, Seek, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::info;

use crate::loader::pins::PinLayout;

/// Where the owner locks live.
pub const RUN_DIR: &str = "/run/nodegate";

/// Why the pin directory could not be owned.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Another daemon holds it.
    #[error(
        "another nodegate run{} owns pin directory {pins} (lock {lock}); stop it first, or start this one \
         with --owner-wait SECONDS to take over when it exits",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Owned {
        /// The pin root.
        pins: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The PID the owner wrote there (for the operator; never signalled).
        pid: Option<u32>,
    },
    /// The run directory or lock file is not safe to use.
    #[error("{path}: {why}")]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// I/O on the lock.
    #[error(
        "{what} {}: {source} (the run directory must be writable by nodegate; in Kubernetes a hostPath volume at /run/nodegate, shared by the pods of a rollout)",
        path.display()
    )]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
    path: PathBuf,
}

impl OwnerLock {
    /// The lock file of `pins` under `run_dir`: the pin root's path with `/` as `-`.
    pub fn path_for(run_dir: &Path, pins: &PinLayout) -> PathBuf {
        let name: String = pins
            .root()
            .to_string_lossy()
            .trim_matches('/')
            .replace('/', "-");
        run_dir.join(format!("{name}.lock"))
    }

    /// Own `pins`, waiting up to `wait` for a current owner to exit.
    pub fn acquire(run_dir: &Path, pins: &PinLayout, wait: Duration) -> Result<Self, OwnerError> {
        safe_run_dir(run_dir)?;
        let path = Self::path_for(run_dir, pins);
        let io = |what, source| OwnerError::Io {
            what,
            path: path.clone(),
            source,
        };
        // O_NOFOLLOW: a symlink planted at the lock path must not make root write elsewhere.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io("open the owner lock", e))?;
        let started = Instant::now();
        let mut announced = false;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io("lock", err));
            }
            let pid = owner_pid(&mut file);
            if started.elapsed() >= wait {
                return Err(OwnerError::Owned {
                    pins: pins.root().to_path_buf(),
                    lock: path,
                    pid,
                });
            }
            if !announced {
                announced = true;
                info!(owner_pid = ?pid, wait_s = wait.as_secs(), pins = %pins.root().display(), "another nodegate owns the pin directory; waiting for it to exit");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        file.set_len(0).map_err(|e| io("truncate", e))?;
        file.rewind().map_err(|e| io("rewind", e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| io("write", e))?;
        Ok(OwnerLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID an owner wrote into the lock file, if readable.
fn owner_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Create the run directory (0700) if needed; refuse one that is a symlink, not a
/// directory, or owned by another user.
fn safe_run_dir(dir: &Path) -> Result<(), OwnerError> {
    let unsafe_dir = |why: String| OwnerError::Unsafe {
        path: dir.to_path_buf(),
        why,
    };
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => {
            return Err(OwnerError::Io {
                what: "create the run directory",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| OwnerError::Io {
        what: "inspect the run directory",
        path: dir.to_path_buf(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Err(unsafe_dir(
            "is not a directory (a symlink?); remove it so nodegate can create it".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by this process (uid {me}); another user could take or \
             block the lock. Remove it, or run nodegate as its owner",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by group or others (mode {:o}); `chmod 700` it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ng-owner-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_owner_is_refused_naming_the_first_and_takes_over_once_it_is_gone() {
        let run = scratch("second");
        let pins = PinLayout::new("/sys/fs/bpf/ng-owner-test");
        let first = OwnerLock::acquire(&run, &pins, Duration::ZERO).unwrap();
        assert_eq!(
            first.path(),
            run.join("sys-fs-bpf-ng-owner-test.lock").as_path()
        );
        let err = OwnerLock::acquire(&run, &pins, Duration::from_millis(300)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("(pid {})", std::process::id()))
                && text.contains("--owner-wait"),
            "{text}"
        );
        // Another pin directory is another owner.
        let other = PinLayout::new("/sys/fs/bpf/ng-owner-other");
        drop(OwnerLock::acquire(&run, &other, Duration::ZERO).unwrap());
        // A waiting second owner gets the lock when the first lets go.
        let waiter = {
            let (run, pins) = (run.clone(), pins.clone());
            std::thread::spawn(move || OwnerLock::acquire(&run, &pins, Duration::from_secs(20)))
        };
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        assert!(waiter.join().unwrap().is_ok());
        std::fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn an_unsafe_run_directory_or_a_planted_symlink_is_refused() {
        let base = scratch("unsafe");
        std::fs::create_dir_all(&base).unwrap();
        let pins = PinLayout::new("/sys/fs/bpf/ng-owner-test");
        // A symlink where the run directory should be.
        let link = base.join("run");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        let err = OwnerLock::acquire(&link, &pins, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        // World-writable.
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let err = OwnerLock::acquire(&open, &pins, Duration::ZERO).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        // A symlink planted at the lock path itself.
        let dir = base.join("ok");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let target = base.join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, OwnerLock::path_for(&dir, &pins)).unwrap();
        assert!(OwnerLock::acquire(&dir, &pins, Duration::ZERO).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
