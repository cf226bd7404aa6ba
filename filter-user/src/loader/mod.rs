//! Loading the XDP program and owning its maps. Attaching to interfaces, pinning and
//! adoption live in their own modules; rule generations are published by [`publish`].

pub mod attach;
pub mod counters;
pub mod features;
pub mod grace;
pub mod holds;
pub mod interfaces;
pub mod link_ref;
mod maps;
pub mod pins;
pub mod privileges;
pub mod publish;
mod table;
pub use table::MappedWords;
pub mod testrun;

use std::path::PathBuf;

use aya::{
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader, VerifierLogLevel,
};

pub use maps::{FamilyTable, FilterMaps, FlowCounts, TableUsage, PINNED_MAPS};

/// Name of the XDP program in the object.
pub const XDP_PROGRAM: &str = "nodegate";
/// Name of the TC egress program (stateful return traffic) in the object.
pub const EGRESS_PROGRAM: &str = "nodegate_egress";

/// Errors from loading the program and using its maps.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The binary carries no XDP object.
    #[error(transparent)]
    MissingObject(#[from] crate::object::MissingObject),
    /// The kernel refused the object or program.
    #[error("failed to load the XDP program: {source}")]
    Load {
        /// aya's error (contains the verifier log when there is one).
        source: Box<aya::EbpfError>,
        /// What to do about it.
        hint: &'static str,
    },
    /// The program did not pass the verifier or could not be loaded.
    #[error("the kernel rejected the XDP program: {source}")]
    Program {
        /// aya's error.
        source: Box<aya::programs::ProgramError>,
        /// What to do about it.
        hint: &'static str,
    },
    /// The object lacks a map this loader expects: object and loader are from different builds.
    #[error("the XDP object has no map named {name}: loader and object are from different builds")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// A pinned map could not be opened.
    #[error("cannot open pinned map {path}: {source}")]
    OpenPin {
        /// Pin path.
        path: PathBuf,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// The number of possible CPUs is unknown (needed for per-CPU maps).
    #[error("cannot read the number of possible CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    /// BPF_PROG_TEST_RUN failed.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] Box<aya::programs::ProgramError>),
    /// A source table map is not what this loader expects.
    #[error("source table map {name} {problem}")]
    TableMap {
        /// Map name.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A generation's source table does not fit the map.
    #[error("the {name} source table needs {words} words per generation, but the running map holds {capacity}: raise `capacity` in the config (or `nodegate run --ipv4-capacity/--ipv6-capacity`); a running map keeps its size until `nodegate unload`")]
    TableFull {
        /// Map name.
        name: &'static str,
        /// Words needed.
        words: usize,
        /// Words per generation the map holds.
        capacity: usize,
    },
    /// A pin removed by hand could not be put back.
    #[error("cannot pin {path} again after it was removed: {detail}")]
    Repin {
        /// The pin.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// All interface counter slots are taken.
    #[error(
        "more than {} interfaces registered; detach one first (`nodegate detach --iface IF`)",
        filter_common::MAX_IFACES - 1
    )]
    TooManyInterfaces,
}

impl crate::hint::Hint for LoaderError {
    fn hint(&self) -> Option<&str> {
        match self {
            LoaderError::Load { hint, .. } | LoaderError::Program { hint, .. } => {
                crate::hint::non_empty(hint)
            }
            _ => None,
        }
    }
}

/// The hint of load errors caused by missing privileges (`""` for other causes).
pub(crate) fn privilege_hint(err: &dyn std::error::Error) -> &'static str {
    let text = format!("{err:?}");
    if text.contains("EPERM")
        || text.contains("Operation not permitted")
        || text.contains("os error 1)")
    {
        "nodegate needs root or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; run it as root or grant them, e.g. `setcap cap_bpf,cap_net_admin,cap_perfmon+ep nodegate`"
    } else if !privileges::has_perfmon()
        && (text.contains("Permission denied")
            || text.contains("os error 13)")
            || (text.contains("Invalid argument") && text.contains("verifier_log")))
    {
        // The verifier's refusal, measured on 6.1 and 6.12 for a loader without
        // CAP_PERFMON: EACCES, or EINVAL when the first function it checks is the IPv6
        // extension walk (6.1: "math between pkt pointer and register with unbounded min
        // value", on a path it walks only to guard against Spectre v1).
        "this kernel's verifier refuses nodegate's programs without CAP_PERFMON; nodegate needs CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON: run it as root, `setcap cap_bpf,cap_net_admin,cap_perfmon+ep nodegate`, or in Kubernetes capabilities.add: [BPF, NET_ADMIN, PERFMON]"
    } else {
        ""
    }
}

/// How to load the object.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin (or reuse pinned) maps in this directory; `None` gives private maps (tests, replay).
    pub map_pin_dir: Option<PathBuf>,
    /// Collect the verifier's full log (slow; for diagnostics and instruction counts).
    pub verbose_verifier: bool,
    /// Capacity of the flow table (`NG_FLOWS`) when it is created; `None` keeps
    /// [`filter_common::DEFAULT_FLOW_CAPACITY`]. A pinned table keeps the size it was made with.
    pub flow_capacity: Option<u32>,
    /// Source prefix capacity the lookup tables (`NG_SRC4`, `NG_SRC6`) are created for;
    /// `None` keeps the defaults. Pinned tables keep the size they were made with.
    pub prefix_capacity: Option<crate::policy::PrefixCapacity>,
    /// Most verbose aya-log level the programs emit, fixed at load (`AYA_LOG_LEVEL`):
    /// 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace. The programs only log on slow and
    /// error paths (never per packet); records reach this process's `tracing` logs through
    /// [`Filter::take_bpf_logger`].
    pub bpf_log_level: u8,
    /// Load this BPF object instead of the embedded one: the benches' knock-out builds
    /// (`NODEGATE_KNOCKOUT`, filter-ebpf/src/knockout.rs), never the daemon.
    pub object: Option<std::sync::Arc<[u8]>>,
}

/// The loaded XDP program and its maps.
pub struct Filter {
    ebpf: Ebpf,
    maps: FilterMaps,
}

impl Filter {
    /// Load the embedded object and the XDP program into the kernel (not attached anywhere).
    pub fn load(options: &LoadOptions) -> Result<Self, LoaderError> {
        let object = match &options.object {
            Some(bytes) => bytes,
            None => crate::object::ebpf_object()?,
        };
        let mut loader = EbpfLoader::new();
        let pin_paths: Vec<(&str, PathBuf)> = match &options.map_pin_dir {
            Some(dir) => PINNED_MAPS
                .iter()
                .map(|name| (*name, dir.join(name)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        if let Some(capacity) = options.flow_capacity {
            loader.map_max_entries(filter_common::MAP_FLOWS, capacity);
        }
        if let Some(capacity) = options.prefix_capacity {
            let (v4, v6) = capacity.table_elements();
            loader.map_max_entries(filter_common::MAP_SRC_V4, v4);
            loader.map_max_entries(filter_common::MAP_SRC_V6, v6);
        }
        if options.verbose_verifier {
            loader.verifier_log_level(VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS);
        }
        // aya-log-ebpf reads this global before formatting anything, so a disabled level
        // costs one load and a branch on the (error) paths that log at all.
        loader.override_global("AYA_LOG_LEVEL", &options.bpf_log_level, false);
        // The native variant's code paths need CAP_PERFMON's pointer arithmetic; the
        // program selects them by this read-only global (filter-ebpf/src/cursor.rs).
        let perfmon = u32::from(privileges::has_perfmon());
        loader.override_global("NG_PERFMON", &perfmon, true);
        let mut ebpf = loader.load(object).map_err(|source| LoaderError::Load {
            hint: privilege_hint(&source),
            source: Box::new(source),
        })?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(LoaderError::MissingMap { name: XDP_PROGRAM })?
            .try_into()
            .map_err(|source: aya::programs::ProgramError| LoaderError::Program {
                hint: "",
                source: Box::new(source),
            })?;
        program.load().map_err(|source| LoaderError::Program {
            hint: privilege_hint(&source),
            source: Box::new(source),
        })?;
        let egress: &mut SchedClassifier = ebpf
            .program_mut(EGRESS_PROGRAM)
            .ok_or(LoaderError::MissingMap {
                name: EGRESS_PROGRAM,
            })?
            .try_into()
            .map_err(|source: aya::programs::ProgramError| LoaderError::Program {
                hint: "",
                source: Box::new(source),
            })?;
        egress.load().map_err(|source| LoaderError::Program {
            hint: privilege_hint(&source),
            source: Box::new(source),
        })?;
        let maps = FilterMaps::take(&mut ebpf)?;
        Ok(Filter { ebpf, maps })
    }

    /// The reader of the programs' aya-log records (load-time and error diagnostics), if the
    /// object logs at all. Poll its fd and call `flush()`; records go to the `log` facade,
    /// which `nodegate` bridges into `tracing`. Can be taken once.
    pub fn take_bpf_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
    }

    /// The TC egress program that learns the node's flows.
    pub fn egress_program(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(EGRESS_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("checked in load")
    }

    /// The XDP program.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("checked in load")
    }

    /// The maps.
    pub fn maps(&self) -> &FilterMaps {
        &self.maps
    }

    /// The maps, writable.
    pub fn maps_mut(&mut self) -> &mut FilterMaps {
        &mut self.maps
    }

    /// The underlying aya object (for maps not wrapped here, e.g. the sample ring).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Empty the fragment table (`NG_FRAGS`): replays and differential runs start each trace
    /// from nothing tracked, as the reference model's state does.
    pub fn clear_fragments(&mut self) -> Result<(), LoaderError> {
        let name = filter_common::MAP_FRAGS;
        let map = self.ebpf.map_mut(name).ok_or(LoaderError::Map {
            name,
            source: aya::maps::MapError::InvalidName {
                name: name.to_string(),
            },
        })?;
        let mut frags: aya::maps::HashMap<&mut aya::maps::MapData, filter_common::FragKey, u64> =
            aya::maps::HashMap::try_from(map)
                .map_err(|source| LoaderError::Map { name, source })?;
        let keys: Vec<filter_common::FragKey> = frags.keys().filter_map(Result::ok).collect();
        for key in keys {
            // An entry the LRU evicted meanwhile is already gone.
            let _ = frags.remove(&key);
        }
        Ok(())
    }
}
