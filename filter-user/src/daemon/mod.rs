//! Building blocks of the `nodegate run` daemon: noticing config changes ([`watch`]),
//! exporting counters to Prometheus ([`metrics`]) and reading drop samples from the XDP
//! program's ring buffer ([`samples`]) and relaying them to followers ([`observe`]). Each is self-contained; the daemon plugs them
//! together with attach, pinning and reload.

pub mod control;
pub mod engine;
pub mod established;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod owner;
pub mod rollout;
pub mod run;
pub mod samples;
pub mod watch;

pub use metrics::DEFAULT_METRICS_ADDR;
