//! Entering a network namespace for the duration of a closure, on a scoped thread so the
//! caller's thread never changes namespace.

use std::{ffi::CString, fs::File, os::fd::AsRawFd};

use super::LabError;

/// Run `f` on a fresh thread that has joined the named network namespace
/// (`/run/netns/NAME`, as created by `ip netns add`).
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).map_err(|source| LabError::Sys {
        call: "open netns",
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a valid namespace fd affects only this (new) thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(LabError::Sys {
                        call: "setns",
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Interface index by name in the current namespace.
pub(super) fn ifindex(name: &str) -> Result<u32, LabError> {
    let c = CString::new(name).map_err(|_| LabError::Sys {
        call: "ifname",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(LabError::Sys {
            call: "if_nametoindex",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(index)
}
