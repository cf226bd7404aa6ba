//! The embedded XDP object built by `build.rs`.

/// The eBPF ELF object, aligned for aya's parser. Empty when the crate was built without a
/// BPF toolchain (see `build.rs`); [`ebpf_object`] turns that into an actionable error.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodegate.bpf.o"));

/// Error returned when this binary carries no XDP program.
#[derive(Debug, thiserror::Error)]
#[error(
    "this nodegate was built without its XDP program (no BPF toolchain at build time); \
     run `cargo xtask setup` and rebuild"
)]
pub struct MissingObject;

/// The embedded XDP object, or an error saying how to get one.
pub fn ebpf_object() -> Result<&'static [u8], MissingObject> {
    if EBPF_OBJECT.is_empty() {
        Err(MissingObject)
    } else {
        Ok(EBPF_OBJECT)
    }
}
