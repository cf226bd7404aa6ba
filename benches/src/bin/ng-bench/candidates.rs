//! The lookup candidates in the kernel: nodegate's flat table, DXR (IPv4) and poptrie
//! (`benches::candidates`), each walked by its own minimal XDP program of the
//! lookup-candidates object (`filter-ebpf/src/candidates/main.rs`, built by `cargo xtask
//! bench` into `NODEGATE_KNOCKOUT_DIR`). A family's programs share everything but the
//! structure: the same constant-offset parse, one table map, the answer as return value.

use std::{path::PathBuf, time::Instant};

use anyhow::{bail, Context};
use aya::{
    maps::{Array, Map},
    programs::Xdp,
    EbpfLoader,
};
use benches::candidates::{dxr, poptrie, Built, Prefix};
use filter_common::lookup::{V4, V6_ROOT_BITS};
use filter_user::{
    compiler::lookup::{build, Family, TablePrefix},
    loader::MappedWords,
    replay::rawbpf::PeerProgram,
};

/// The candidates: family, row name, and the program that walks it.
pub(crate) const CANDIDATES: [(&str, &str, &str); 5] = [
    ("v4", "flat", "cand_flat"),
    ("v4", "dxr", "cand_dxr"),
    ("v4", "poptrie", "cand_poptrie"),
    ("v6", "flat", "cand_flat6"),
    ("v6", "poptrie", "cand_poptrie6"),
];

/// The lookup-candidates object, if `cargo xtask bench` built it.
pub(crate) fn object() -> anyhow::Result<Vec<u8>> {
    let Some(dir) = std::env::var_os("NODEGATE_KNOCKOUT_DIR") else {
        bail!("NODEGATE_KNOCKOUT_DIR unset: run through `cargo xtask bench`, which builds the lookup-candidates object");
    };
    let path = PathBuf::from(dir).join("lookup-candidates.o");
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// One candidate loaded with its table: what it costs to build and keep, and its program.
pub(crate) struct Loaded {
    /// Bytes of the table (one copy).
    pub bytes: usize,
    /// Milliseconds the builder took.
    pub build_ms: f64,
    pub program: PeerProgram,
    /// Keeps the program and its maps alive.
    _ebpf: aya::Ebpf,
}

/// Build candidate `who`'s table of `family` for `prefixes` and load its program from
/// `object` with the table in place.
pub(crate) fn load(
    object: &[u8],
    family: &str,
    who: &str,
    prefixes: &[Prefix],
) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let v4 = family == "v4";
    // The flat table gets the root the product picks for a capacity of this many prefixes.
    let root_bits = if v4 {
        V4.root_bits_for(prefixes.len() as u32)
    } else {
        V6_ROOT_BITS
    };
    let built = match who {
        "flat" => {
            let mut table: Vec<TablePrefix> = prefixes
                .iter()
                .map(|p| TablePrefix {
                    addr: p.addr,
                    len: p.len as u8,
                    leaf: p.answer,
                })
                .collect();
            let family = if v4 { Family::V4 } else { Family::V6 };
            Built {
                words: build(family, &mut table, root_bits),
            }
        }
        "dxr" if v4 => dxr::build(prefixes).map_err(anyhow::Error::msg)?,
        "poptrie" => poptrie::build(prefixes, if v4 { poptrie::V4 } else { poptrie::V6 }),
        other => bail!("no {family} lookup candidate {other}"),
    };
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let program = CANDIDATES
        .iter()
        .find(|(f, name, _)| *f == family && *name == who)
        .map(|(_, _, program)| *program)
        .context("candidate without a program")?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("CAND_TABLE", built.elements().max(1))
        .load(object)
        .context("cannot load the lookup-candidates object")?;
    fill(
        ebpf.map_mut("CAND_TABLE").context("no CAND_TABLE")?,
        &built.words,
    )?;
    let mut root: Array<_, u32> =
        Array::try_from(ebpf.map_mut("CAND_ROOT").context("no CAND_ROOT")?)?;
    root.set(0, root_bits, 0)?;
    let xdp: &mut Xdp = ebpf
        .program_mut(program)
        .with_context(|| format!("no program {program}"))?
        .try_into()?;
    xdp.load()
        .with_context(|| format!("the kernel refused {program}"))?;
    let id = xdp.info()?.id();
    Ok(Loaded {
        bytes: built.bytes(),
        build_ms,
        program: PeerProgram::by_id(id)?,
        _ebpf: ebpf,
    })
}

/// Write `words` at the start of the mmapable `u64` array `map`.
fn fill(map: &mut Map, words: &[u32]) -> anyhow::Result<()> {
    let Map::Array(data) = map else {
        bail!("CAND_TABLE is not an array");
    };
    let mut mapping = MappedWords::new(data).context("cannot map CAND_TABLE")?;
    let Some(start) = mapping.words_mut().get_mut(..words.len()) else {
        bail!("{} words do not fit CAND_TABLE", words.len());
    };
    start.copy_from_slice(words);
    Ok(())
}
