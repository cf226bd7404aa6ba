//! Sending whole Ethernet frames out of an interface (AF_PACKET), so tests can put any
//! crafted or malformed frame on the wire towards the filter.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{netns::ifindex, LabError};

/// An AF_PACKET socket bound to one interface. The socket stays bound to the namespace it
/// was opened in, so it can be used from any thread afterwards.
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    /// Open on `ifname` in the current namespace.
    pub fn open(ifname: &str) -> Result<Self, LabError> {
        let ifindex = ifindex(ifname)? as i32;
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(LabError::Sys {
                call: "socket(AF_PACKET)",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: raw is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(RawSender { fd, ifindex })
    }

    /// Send one frame (Ethernet header included).
    pub fn send(&self, frame: &[u8]) -> Result<(), LabError> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6.min(frame.len())]);
        // SAFETY: buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(LabError::Sys {
                call: "sendto(AF_PACKET)",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}
