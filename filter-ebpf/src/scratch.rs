//! Per-CPU scratch memory for what one packet's evaluation builds up: the [`Summary`] the
//! parser hands to `finish.rs` (with the [`Key`] through which the spectre-hardened
//! variant's settings, interface, rule, counter and sampler lookups pass their keys to the
//! kernel), in both variants, and in the spectre-hardened one the [`FrontCopy`] of the
//! frame's headers. The source table walk keeps its keys on the stack: `walk::word` says why.
//!
//! The summary is here in both variants because the verifier does not track what map memory
//! holds: behind the compiler barrier in main.rs, the second half reads every field as an
//! unknown value, and the verifier walks it once instead of once per parser path (main.rs).
//! On the stack, each path's stored constants travel with it.
//!
//! Why the hardened variant keeps its header copy here too: loaded without CAP_PERFMON, the
//! verifier guards against speculative store bypass (Spectre v4) with a barrier (`nospec`,
//! an `lfence` on x86) after every stack store unless the slot held plain bytes on every
//! path to it. A slot's first write gets one, an 8-byte store over an earlier one too (the
//! verifier keeps those as spilled registers), and so does a map lookup's key, written right
//! before each call (the helper takes a pointer). The summary alone was 17 first writes a
//! packet before any field was filled in. Stores into a map value get no barrier: an allowed
//! IPv4 SYN went from 609 to about 360 ns (`ng-bench stages`, 6.18).
//!
//! The native variant has no barriers to save and keeps the header copy on the stack, where
//! LLVM sees every store and load: in the scratch it cost 13 ns. XDP runs with bottom halves
//! off, so nothing else uses this CPU's slot while a packet is being judged.

use core::{cell::UnsafeCell, ffi::c_void, mem::MaybeUninit, ptr::write_volatile};

use aya_ebpf::{
    helpers::bpf_map_lookup_elem,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};

use crate::{
    cursor::{native, FrontCopy},
    maps::per_cpu_slot,
    packet::Summary,
};

/// One packet's scratch memory.
#[repr(C)]
pub struct Scratch {
    pub summary: MaybeUninit<Summary>,
    pub front: MaybeUninit<FrontCopy>,
}

/// A map key the kernel reads from the summary (so from the scratch) rather than from the
/// stack, in the spectre-hardened variant. It sits in the summary so that one pointer
/// reaches both: a second pointer argument to `finish.rs` cost the hardened SYN 60 ns of
/// spilled registers. The native variant passes keys on the stack as usual: its stores get
/// no barrier. (Inside the global `finish::nodegate_finish` the summary is plain memory, a
/// global function's argument, which 6.1's verifier refuses as a key: "R2 type=mem
/// expected=fp, pkt, pkt_meta, map_key, map_value"; 6.12 and 6.18 accept it, and only 6.18
/// loads the hardened variant at all.)
#[repr(C)]
pub struct Key(UnsafeCell<u32>);

// SAFETY: a Key lives in one CPU's scratch (or one program run's stack) and is used by that
// run alone: XDP runs with bottom halves off, so no other run on the CPU interleaves.
unsafe impl Sync for Key {}

impl Key {
    /// Look `k` up in the map whose definition is at `map`.
    ///
    /// # Safety
    /// `map` must be a map definition whose key is a `u32` and whose value is a `T`.
    #[inline(always)]
    unsafe fn lookup<T>(&self, map: *const c_void, k: u32) -> Option<*mut T> {
        // Volatile stores, each inside its branch: a plain store to the stack local was
        // hoisted above the branch, and cost the hardened variant a barrier per lookup.
        let mut on_stack = MaybeUninit::<u32>::uninit();
        let key: *const u32 = if native() {
            // SAFETY: our own local.
            unsafe { write_volatile(on_stack.as_mut_ptr(), k) };
            on_stack.as_ptr()
        } else {
            // SAFETY: our own field.
            unsafe { write_volatile(self.0.get(), k) };
            self.0.get()
        };
        // SAFETY: a map definition (caller) and a pointer to the 4-byte key just written.
        let value = unsafe { bpf_map_lookup_elem(map as *mut c_void, key as *const c_void) };
        (!value.is_null()).then_some(value as *mut T)
    }

    /// Slot `index` of an array map.
    #[inline(always)]
    pub fn array<T>(&self, map: &'static Array<T>, index: u32) -> Option<&'static T> {
        // SAFETY: Array is repr(transparent) over its map definition, keyed by u32; a map
        // value lives as long as the program runs.
        unsafe { self.lookup::<T>(map as *const Array<T> as *const c_void, index) }
            .map(|p| unsafe { &*p })
    }

    /// This CPU's slot `index` of a per-CPU array.
    #[inline(always)]
    pub fn per_cpu<T>(&self, map: &'static PerCpuArray<T>, index: u32) -> Option<*mut T> {
        // SAFETY: PerCpuArray is repr(transparent) over its map definition, keyed by u32.
        unsafe { self.lookup::<T>(map as *const PerCpuArray<T> as *const c_void, index) }
    }

    /// The value under `k` in a hash map keyed by `u32`.
    #[inline(always)]
    pub fn hash<V>(&self, map: &'static HashMap<u32, V>, k: u32) -> Option<*mut V> {
        // SAFETY: HashMap is repr(transparent) over its map definition, keyed by u32.
        unsafe { self.lookup::<V>(map as *const HashMap<u32, V> as *const c_void, k) }
    }
}

/// Private to the program (never pinned).
#[map(name = "NG_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch; `None` never happens (slot 0 of a one-slot array), but the verifier
/// wants it handled.
#[inline(always)]
pub fn this_cpu() -> Option<&'static mut Scratch> {
    // SAFETY: this CPU's slot of a live map; nothing else runs on this CPU meanwhile.
    per_cpu_slot(&SCRATCH, 0).map(|p| unsafe { &mut *p })
}
