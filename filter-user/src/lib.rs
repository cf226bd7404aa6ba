//! nodegate as a library: compile a YAML rule file into kernel tables, load and attach the
//! XDP program, publish rule generations atomically, and read its counters.
//!
//! Data flow: [`config`] (YAML → [`policy::Policy`]) → [`compiler`] (Policy → kernel tables)
//! → [`loader`] (maps, attach, generations) → XDP verdicts → counters. [`model`] is the
//! independent userspace reference that judges frames against a Policy; [`craft`] builds
//! test and benchmark frames.
#![deny(missing_docs)]

pub mod compiler;
pub mod config;
pub mod daemon;
pub mod gen;
pub mod loader;
pub mod craft;
pub mod lab;
pub mod model;
pub mod object;
pub mod policy;
pub mod replay;
