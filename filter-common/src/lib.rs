//! Types and constants shared by the nodegate XDP program (`filter-ebpf`) and its userspace
//! loader (`filter-user`). Everything that crosses the kernel/user boundary lives here, so
//! the two sides can never drift: map names, capacities, reason codes, table layouts.
//!
//! ```
//! use filter_common::{Reason, ServiceKind};
//! assert!(Reason::NoSourceMatch.is_drop());
//! assert_eq!(Reason::from_u32(Reason::AllowRule as u32), Some(Reason::AllowRule));
//! assert_eq!(ServiceKind::Udp.key_offset(), 65_536);
//! ```
#![no_std]
#![deny(missing_docs)]

pub mod layout;
pub mod lookup;
pub mod maps;
pub mod reason;
pub mod tables;
pub mod wire;

pub use layout::*;
pub use maps::*;
pub use reason::{Reason, DROP_BASE, REASON_SLOTS, STAT_SLOTS};
pub use tables::*;
