//! nodegate as a library: compile a YAML rule file into kernel tables, load and attach the
//! XDP program, publish rule generations atomically, and read its counters.
//!
//! Data flow: [`config`] (YAML → [`policy::Policy`]) → [`compiler`] (Policy → kernel tables)
//! → [`loader`] (maps, attach, generations) → XDP verdicts → counters. [`model`] is the
//! independent userspace reference that judges frames against a Policy; [`craft`] builds
//! test and benchmark frames.
//!
//! Embedding (see also `examples/embed.rs`; `nodegate run` adds pinning, adoption, reload
//! triggers and metrics on top of the same calls):
//!
//! ```no_run
//! use filter_user::{compiler::{compile, RuleSlots}, config, loader::{Filter, LoadOptions}};
//!
//! let loaded = config::load_file("rules.yaml")?;          // YAML → validated Policy
//! let mut slots = RuleSlots::new();
//! let tables = compile(&loaded.policy, &slots)?;           // Policy → kernel tables
//! let mut filter = Filter::load(&LoadOptions::default())?; // load the XDP program
//! filter.maps_mut().publish(&tables)?;                     // fill a generation, flip
//! slots.commit(&tables);
//! let ifindex = filter_user::loader::attach::ifindex("eth0").expect("interface");
//! filter.program().attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)?;
//! for r in filter.maps().snapshot()?.reasons {
//!     println!("{} {}", r.reason, r.packets);
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```
#![deny(missing_docs)]

pub mod compiler;
pub mod config;
pub mod craft;
pub mod daemon;
pub mod diff;
pub mod fuzzing;
pub mod hint;
pub mod lab;
pub mod loader;
pub mod model;
pub mod object;
pub mod policy;
pub mod probe;
pub mod replay;
pub mod traffic;
