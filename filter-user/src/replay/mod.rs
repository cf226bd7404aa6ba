//! The traffic replay harness behind `nodegate replay`.
//!
//! - [`capture`]: pcap and pcapng in, pcap and pcapng out (`pcap-file`);
//! - [`run`]: each frame through the real XDP program (`BPF_PROG_TEST_RUN`) and the reference
//!   model, in capture order; verdict, reason and rule counts, every disagreement, and a
//!   timing pass next to an empty XDP program;
//! - [`live`]: the capture onto a veth pair at full rate with an XDP live-frames generator;
//! - [`rawbpf`]: the two-instruction helper programs (empty, drop, transmit) those need;
//! - [`frame_json`] / [`summary_json`]: the `-o json` lines (one object per frame in
//!   capture order, then one summary object).
//!
//! ```
//! use filter_user::craft::Frame;
//! use filter_user::policy::{Policy, Protocol, Rule, RuleKind};
//! use filter_user::replay::{frame_json, Replayer};
//!
//! let policy = Policy {
//!     rules: vec![Rule {
//!         name: "https".into(),
//!         kind: RuleKind::Allow,
//!         sources: vec!["192.0.2.0/24".parse()?],
//!         protocol: Protocol::Tcp,
//!         keys: vec![443..=443],
//!         interfaces: Vec::new(),
//!     }],
//!     ..Policy::default()
//! };
//! let mut replay = Replayer::model_only(&policy);
//! let frame = Frame::tcp("192.0.2.9".parse()?, "10.1.1.1".parse()?, 40000, 443).syn().build();
//! let result = replay.frame(&frame)?;
//! assert_eq!(frame_json(&result), r#"{"index":0,"verdict":"pass","reason":"allow-rule","rule":"https","would_drop":false}"#);
//! let summary = replay.finish(&[])?;
//! assert_eq!(summary.reasons["allow-rule"], 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod capture;
pub mod link;
#[cfg(feature = "tools")]
pub mod live;
pub mod rawbpf;
#[cfg(feature = "tools")]
pub mod rawgen;
#[cfg(feature = "tools")]
pub mod rawlpm;
pub mod run;
pub mod snap;
#[cfg(feature = "tools")]
pub mod sockgen;

pub use capture::{
    parse_capture, read_capture, write_capture, Capture, CaptureError, CaptureFormat,
    CapturedFrame, ParseError,
};
pub use run::{
    Disagreement, FrameResult, LoadedPolicy, ReplayError, ReplayOptions, Replayer, Summary, Timing,
};

/// Frames shorter than an Ethernet header cannot be run through the kernel (EINVAL); the
/// replay judges them with the model only and the live mode skips them.
pub const MIN_FRAME: usize = crate::loader::testrun::MIN_TEST_RUN_FRAME;

/// The `-o json` object of one frame:
/// `{"index":N,"verdict":"pass"|"drop","reason":"…","rule":"…"|null,"would_drop":bool}`.
pub fn frame_json(result: &FrameResult) -> String {
    // A struct, not `json!`: serde_json's map would sort the keys, the spec fixes the order.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        index: u64,
        verdict: &'a str,
        reason: &'a str,
        rule: Option<&'a str>,
        would_drop: bool,
    }
    let line = Line {
        index: result.index,
        verdict: result.answer.verdict,
        reason: result.answer.reason,
        rule: result.answer.rule.as_deref(),
        would_drop: result.answer.would_drop,
    };
    serde_json::to_string(&line).expect("plain strings and numbers serialize")
}

/// The final `-o json` object: `{"summary":{…}}` with the totals, every
/// disagreement and the timing.
pub fn summary_json(summary: &Summary) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        summary: &'a Summary,
    }
    serde_json::to_string(&Line { summary }).expect("plain strings and numbers serialize")
}

#[cfg(test)]
mod tests;
