//! systemd readiness notifications (`sd_notify(3)`), without libsystemd.
//!
//! Under a `Type=notify` unit systemd sets `NOTIFY_SOCKET`; the daemon sends `READY=1` once
//! it enforces on every interface, `RELOADING=1` (with `MONOTONIC_USEC`, as systemd 253+
//! wants for `Type=notify-reload`) before a reload and `READY=1` after it, and `STOPPING=1`
//! on its way out. Without the variable nothing is sent. The protocol is one datagram of
//! `KEY=VALUE` lines to a Unix socket, a path or (leading `@`) an abstract name.

use std::{io, os::unix::net::UnixDatagram, path::Path};

/// Send `state` to the socket named by `NOTIFY_SOCKET`, if set. Errors are returned for the
/// caller to log; a missing variable is not an error.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(Path::new(&socket), state),
        None => Ok(()),
    }
}

/// Send `state` to the notification socket `socket`.
pub fn notify_to(socket: &Path, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sender.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sender.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

/// `RELOADING=1` with the monotonic timestamp systemd expects beside it.
pub fn reloading_state() -> String {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_and_an_abstract_socket() {
        let path = std::env::temp_dir().join(format!("ng-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(&path, "READY=1").unwrap();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&path).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ng-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        let state = reloading_state();
        notify_to(Path::new(&format!("@{name}")), &state).unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{got}");
        assert!(
            got["RELOADING=1\nMONOTONIC_USEC=".len()..]
                .parse::<u64>()
                .unwrap()
                > 0
        );
    }
}
