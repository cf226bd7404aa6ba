//! Reading the rule file: never block, never read without bound.
//!
//! The path is the operator's (often a ConfigMap's symlink chain, so symlinks are followed),
//! but what sits there is not trusted to be a file: a FIFO would block a plain `read` until
//! some writer appears, which hung the daemon (signals and reloads included) for good; a
//! character device such as `/dev/zero` never ends. The file is opened non-blocking, must be
//! a regular file, and is read up to [`MAX_RULE_FILE_BYTES`].

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

/// Largest rule file read: 1M prefixes written one per line take about 25 MB.
pub const MAX_RULE_FILE_BYTES: u64 = 128 << 20;

/// The bytes of the regular file at `path` (symlinks followed). A FIFO, socket, device or
/// directory there, or a file over [`MAX_RULE_FILE_BYTES`], is an `InvalidInput` error whose
/// message names what was found and what to do.
pub fn read_rule_file(path: &Path) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let what = if kind.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else if !kind.is_file() {
        Some("not a regular file")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file; point --config at the YAML rule file"),
        ));
    }
    if meta.len() > MAX_RULE_FILE_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while we read it: the bound holds whatever `metadata` said.
    file.take(MAX_RULE_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// FNV-1a (64 bit) of a rule file's bytes: `nodegate status` compares the file the active
/// generation came from with the file on disk. Identity, not security: nothing trusts it.
pub fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn too_big(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "it holds {len} bytes, over the {} MiB limit for a rule file; aggregate prefixes, \
             or split the file's job across nodes",
            MAX_RULE_FILE_BYTES >> 20
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::{ffi::CString, os::unix::ffi::OsStrExt, time::Instant};

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ng-rulefile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn content_hash_is_fnv1a_64() {
        // Reference values of the FNV-1a 64 specification.
        assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            content_hash(b"version: 1\n"),
            content_hash(b"version: 1\n\n")
        );
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = scratch("fifo");
        let path = dir.join("rules.yaml");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let err = read_rule_file(&path).unwrap_err();
        assert!(started.elapsed().as_secs() < 2, "returned without a writer");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("named pipe (FIFO)"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_directories_and_huge_files_are_refused() {
        for (path, what) in [
            (Path::new("/dev/zero"), "character device"),
            (Path::new("/"), "directory"),
        ] {
            let err = read_rule_file(path).unwrap_err();
            assert!(err.to_string().contains(what), "{path:?}: {err}");
        }
        let dir = scratch("huge");
        let path = dir.join("rules.yaml");
        // Sparse: no disk is used.
        File::create(&path)
            .unwrap()
            .set_len(MAX_RULE_FILE_BYTES + 1)
            .unwrap();
        let err = read_rule_file(&path).unwrap_err();
        assert!(err.to_string().contains("over the 128 MiB limit"), "{err}");
        std::fs::write(&path, "version: 1\n").unwrap();
        assert_eq!(read_rule_file(&path).unwrap(), b"version: 1\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
