//! nodegate as a library: compile a YAML rule file into kernel tables, load and attach the
//! XDP program, publish rule generations atomically, and read its counters.
#![deny(missing_docs)]

pub mod object;
pub mod policy;
