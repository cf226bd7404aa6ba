//! nodegate as a library: compile a YAML rule file into kernel tables, load and attach the
//! XDP program, publish rule generations atomically, and read its counters.
//!
//! Data flow: [`config`] (YAML → [`policy::Policy`]) → [`compiler`] (Policy → kernel tables)
//! → [`loader`] (maps, attach, generations) → XDP verdicts → counters. [`model`] is the
//! independent userspace reference that judges frames against a Policy; [`craft`] builds
//! test and benchmark frames.
//!
//! Embedding starts at [`firewall`]: a [`firewall::RuleSet`] (YAML or built in code) and a
//! [`firewall::Firewall`] that publishes it, attaches, detaches and reads counters, each in
//! one call (`examples/embed.rs`). `nodegate run` adds pinning, adoption, reload triggers,
//! confirmed changes and metrics on top of the same modules ([`daemon`]).
#![deny(missing_docs)]

pub mod compiler;
pub mod config;
pub mod craft;
pub mod daemon;
pub mod diff;
pub mod firewall;
#[cfg(feature = "tools")]
pub mod fuzzing;
pub mod hint;
pub mod import;
#[cfg(feature = "tools")]
pub mod lab;
pub mod loader;
pub mod model;
pub mod object;
pub mod policy;
pub mod probe;
pub mod replay;
#[cfg(feature = "tools")]
pub mod traffic;
