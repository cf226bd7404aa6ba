//! The generator's second engine, for kernels that refuse live-frames mode (EPERM from a
//! `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, as locked-down sandbox kernels
//! answer): copies of a frame written to an AF_PACKET socket bound to the sending end of
//! the veth pair, up to [`BATCH`] per `sendmmsg(2)`, past the qdisc.
//!
//! Each copy then costs the sender an skb and a pass through the transmit path, where the
//! live-frames engine recycles pages inside the kernel: the pipeline's ceiling is lower, and
//! every receiver's share of it higher, so figures from the two engines are not compared
//! with each other (the benches say which engine measured them). What the receiver sees is
//! the same: the frame at its XDP hook, judged for real.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use super::rawgen::SourceStamp;

/// Copies per `sendmmsg(2)` call.
pub const BATCH: usize = 64;

/// An AF_PACKET socket that sends copies of frames out of one interface; optionally each
/// copy from another source of a table of [`SourceStamp`]s, as the live-frames engine's
/// rewriting program does.
pub struct SocketSender {
    fd: OwnedFd,
    ifindex: i32,
    stamps: Vec<SourceStamp>,
    /// Step through `stamps` (see [`SocketSender::stamp_at`]).
    stride: usize,
    /// Position in the stamps' visiting order.
    next: usize,
}

impl SocketSender {
    /// Open on `ifindex` of the calling thread's network namespace (the socket stays bound
    /// to it). With `stamps`, every copy goes out from the next source of the table.
    pub fn open(ifindex: u32, stamps: &[SourceStamp]) -> io::Result<SocketSender> {
        // SAFETY: plain socket(2); checked before use. Protocol 0: the socket receives
        // nothing, so the frames the pair carries never queue on it.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // The qdisc adds nothing on a veth but a lock and a queue; without the bypass
        // (older kernels) frames still go out, through it.
        // SAFETY: a valid int option of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Ok(SocketSender {
            fd,
            ifindex: ifindex as i32,
            stamps: stamps.to_vec(),
            stride: coprime_stride(stamps.len()),
            next: 0,
        })
    }

    /// The stamp of the `i`-th copy: the table walked with a stride coprime to its length,
    /// so every source comes once per round and neighbours in the table (the benches list
    /// the sources inside the allow-list first) do not follow each other.
    fn stamp_at(&self, i: usize) -> &SourceStamp {
        let n = self.stamps.len();
        &self.stamps[(i % n) * self.stride % n]
    }

    /// Send `copies` copies of `frame`.
    pub fn send(&mut self, frame: &[u8], copies: u64) -> io::Result<()> {
        let variants: Vec<Vec<u8>> = if self.stamps.is_empty() {
            vec![frame.to_vec()]
        } else {
            let count = (copies as usize).min(self.stamps.len());
            (0..count)
                .map(|k| {
                    let mut copy = frame.to_vec();
                    self.stamp_at(self.next + k).apply(&mut copy);
                    copy
                })
                .collect()
        };
        self.next = (self.next + copies as usize) % self.stamps.len().max(1);
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
        let mut sent = 0u64;
        while sent < copies {
            let n = (copies - sent).min(BATCH as u64) as usize;
            iov.clear();
            for k in 0..n {
                let v = &variants[(sent as usize + k) % variants.len()];
                iov.push(libc::iovec {
                    iov_base: v.as_ptr() as *mut libc::c_void,
                    iov_len: v.len(),
                });
            }
            msgs.clear();
            for v in iov.iter_mut() {
                // SAFETY: msghdr is plain data; zeroed is a valid starting value.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                hdr.msg_iov = v;
                hdr.msg_iovlen = 1;
                msgs.push(libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                });
            }
            // SAFETY: `msgs` holds `n` headers whose address and buffers outlive the call.
            let done =
                unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if done < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // The device's queue is full for a moment: nothing of this batch went.
                    Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            sent += done as u64;
        }
        Ok(())
    }
}

/// A stride coprime to `n` near the golden section of `n` (1 for `n` ≤ 2).
fn coprime_stride(n: usize) -> usize {
    if n <= 2 {
        return 1;
    }
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut s = n * 618 / 1000;
    while gcd(s, n) != 1 {
        s += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::coprime_stride;

    #[test]
    fn the_stride_visits_every_index_once_per_round() {
        for n in [1usize, 2, 3, 4, 10, 75_536, 131_072] {
            let s = coprime_stride(n);
            let mut seen = vec![false; n];
            for i in 0..n {
                seen[i * s % n] = true;
            }
            assert!(seen.iter().all(|&v| v), "n = {n}, stride {s}");
        }
    }
}
