//! The daemon's own reference on a pinned BPF link: a file descriptor that keeps the link
//! (and so the attachment) alive when its pin is removed by hand, can pin it again, and
//! tells whether the link is still attached and to what.
//!
//! aya's `FdLink` keeps its descriptor private and consumes itself to pin (dropping the
//! only reference when pinning fails, which would detach the filter), and its `LinkInfo`
//! does not expose the interface; these three `bpf(2)` commands are all that is needed.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya_obj::generated::{bpf_cmd, bpf_link_info, bpf_link_type};

/// `union bpf_attr` for `BPF_OBJ_PIN`/`BPF_OBJ_GET` (the leading fields; the kernel reads
/// the attribute size we pass and treats the rest as zero).
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`,
    // and its size is passed with it; the kernel writes nothing through it for these
    // commands (pointers inside it are checked by the kernel).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// What the kernel says about a link now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The link's id (`bpftool link show`).
    pub id: u32,
    /// The program it runs.
    pub prog_id: u32,
    /// The interface it is attached to, `None` once it is detached (interface deleted,
    /// `bpftool link detach`): such a link stays valid but runs nothing. Only XDP and TCX
    /// links carry one; other kinds report `None`.
    pub ifindex: Option<u32>,
}

/// Our own descriptor on a BPF link.
#[derive(Debug)]
pub struct LinkRef {
    fd: OwnedFd,
}

impl LinkRef {
    /// Open the link pinned at `path` (a new reference, independent of the pin).
    pub fn open(path: &Path) -> io::Result<LinkRef> {
        let path = c_path(path)?;
        let mut attr = ObjAttr {
            pathname: path.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        let fd = bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor (close-on-exec) that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(LinkRef { fd })
    }

    /// Pin the link at `path` (whose directory must exist). Fails with `EEXIST` when
    /// something is pinned there already; the reference is kept either way.
    pub fn pin(&self, path: &Path) -> io::Result<()> {
        let path = c_path(path)?;
        let mut attr = ObjAttr {
            pathname: path.as_ptr() as u64,
            bpf_fd: self.fd.as_raw_fd() as u32,
            file_flags: 0,
        };
        bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop)
    }

    /// The link's state now.
    pub fn state(&self) -> io::Result<LinkState> {
        // SAFETY: bpf_link_info is plain old data; all zeroes is a valid value.
        let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
        let mut attr = InfoAttr {
            bpf_fd: self.fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<bpf_link_info>() as u32,
            info: &mut info as *mut bpf_link_info as u64,
        };
        bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let attached_to = match info.type_ {
            // SAFETY: the kernel filled the union member of the link's type; XDP and TCX
            // links both start it with the interface index (0 once detached).
            t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => unsafe {
                Some(info.__bindgen_anon_1.xdp.ifindex)
            },
            // SAFETY: as above, for the TCX member.
            t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => unsafe {
                Some(info.__bindgen_anon_1.tcx.ifindex)
            },
            _ => None,
        };
        Ok(LinkState {
            id: info.id,
            prog_id: info.prog_id,
            ifindex: attached_to.filter(|&i| i != 0),
        })
    }
}
