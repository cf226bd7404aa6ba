//! A source lookup table map (`NG_SRC4`, `NG_SRC6`) mapped into our memory: publishing a
//! generation is plain stores into its region, compared word by word with what the region
//! holds so that only changed words are written (a one-prefix change touches a few cache
//! lines, not the table).
//!
//! The program only ever reads these maps, and only the active generation's region; the
//! loader only writes the inactive one, after the grace period that follows the flip away
//! from it (`loader::grace`). So the regions we hand out as slices are never written by
//! anyone else while we hold them.

use std::{io, os::fd::AsFd as _, ptr::NonNull};

use aya::maps::{Map, MapData};
use filter_common::GENERATIONS;

use super::LoaderError;

/// All of a `BPF_F_MMAPABLE` array map of `u64` elements, mapped shared into our memory as
/// 32-bit words (two to an element, low half first on the little-endian targets we run on);
/// unmapped on drop.
///
/// The slices it hands out are plain memory to Rust, so nothing else may write the map while
/// one is held: the programs only read the table maps (nodegate's and the benches' lookup
/// candidates'), and their loaders write them through this mapping alone.
pub struct MappedWords {
    base: NonNull<u32>,
    words: usize,
}

// SAFETY: the mapping is owned by this value (unmapped on drop) and only accessed through
// `&self`/`&mut self`; nothing in it is tied to a thread.
unsafe impl Send for MappedWords {}
// SAFETY: shared access only reads.
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Map `map`'s `max_entries` elements (the map must have 8-byte values; the kernel
    /// refuses a map created without `BPF_F_MMAPABLE`).
    pub fn new(map: &MapData) -> io::Result<MappedWords> {
        let bytes = map.info().map_err(io::Error::other)?.max_entries() as usize * 8;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks that the map is
        // mmapable and that `bytes` fits it. We own the result until `Drop` unmaps it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedWords {
            base: NonNull::new(ptr.cast()).expect("mmap succeeded"),
            words: bytes / 4,
        })
    }

    /// The map's words.
    pub fn words(&self) -> &[u32] {
        // SAFETY: the whole mapping; writers go through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.words) }
    }

    /// The map's words, to write.
    pub fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: the whole mapping; `&mut self` makes this the only slice we hand out.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.words) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.words * 4) };
    }
}

/// One table map, memory-mapped.
pub(crate) struct MappedTable {
    name: &'static str,
    mapping: MappedWords,
    /// Keeps the map (and so the mapping's target) alive.
    _map: MapData,
}

/// What writing one generation's table did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableWrite {
    /// Words that differed and were written.
    pub words_written: usize,
    /// Words the new table has.
    pub words: usize,
}

impl MappedTable {
    /// Map `map`, which must be a `BPF_F_MMAPABLE` array of `u64`.
    pub(crate) fn new(name: &'static str, map: Map) -> Result<Self, LoaderError> {
        let Map::Array(data) = map else {
            return Err(LoaderError::TableMap {
                name,
                problem: "is not an array map (pins from another nodegate version?)".into(),
            });
        };
        let info = data
            .info()
            .map_err(|source| LoaderError::Map { name, source })?;
        if info.value_size() != 8 {
            return Err(LoaderError::TableMap {
                name,
                problem: format!("has {}-byte values, expected 8", info.value_size()),
            });
        }
        let mapping = MappedWords::new(&data).map_err(|e| LoaderError::TableMap {
            name,
            problem: format!(
                "cannot be memory-mapped ({e}); it must be created with BPF_F_MMAPABLE"
            ),
        })?;
        Ok(MappedTable {
            name,
            mapping,
            _map: data,
        })
    }

    /// Words each generation's region holds.
    pub(crate) fn words_per_gen(&self) -> usize {
        self.mapping.words().len() / GENERATIONS as usize
    }

    /// Kernel memory of the whole map (every generation), bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.mapping.words().len() * 4
    }

    /// Word offset of generation slot `generation`'s region (what the program adds to every index).
    pub(crate) fn region_start(&self, generation: u32) -> u32 {
        (generation as usize * self.words_per_gen()) as u32
    }

    fn region(&self, generation: u32) -> &[u32] {
        let start = self.region_start(generation) as usize;
        // The module comment says why nobody writes it concurrently.
        &self.mapping.words()[start..start + self.words_per_gen()]
    }

    fn region_mut(&mut self, generation: u32) -> &mut [u32] {
        let (start, words) = (self.region_start(generation) as usize, self.words_per_gen());
        &mut self.mapping.words_mut()[start..start + words]
    }

    /// Words of generation `generation`'s region (tests, `stats`).
    pub(crate) fn read(&self, generation: u32, words: usize) -> Vec<u32> {
        self.region(generation)[..words.min(self.words_per_gen())].to_vec()
    }

    /// Make generation slot `generation` hold `table`, writing only the words that differ. The
    /// caller guarantees no packet reads the slot (it is inactive and its grace period is
    /// over).
    pub(crate) fn write(
        &mut self,
        generation: u32,
        table: &[u32],
    ) -> Result<TableWrite, LoaderError> {
        let capacity = self.words_per_gen();
        if table.len() > capacity {
            return Err(LoaderError::TableFull {
                name: self.name,
                words: table.len(),
                capacity,
            });
        }
        let region = &mut self.region_mut(generation)[..table.len()];
        let mut words_written = 0;
        // Compare in blocks: equal blocks (most of a table after a small change) cost one
        // memcmp and no store, so their cache lines stay clean.
        for (have, want) in region.chunks_mut(64).zip(table.chunks(64)) {
            if have != want {
                for (h, w) in have.iter_mut().zip(want) {
                    if h != w {
                        *h = *w;
                        words_written += 1;
                    }
                }
            }
        }
        Ok(TableWrite {
            words_written,
            words: table.len(),
        })
    }
}
