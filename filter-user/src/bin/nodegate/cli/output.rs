//! The output contract (docs/OUTPUT.md): one `-o text|json|jsonl` flag for every command,
//! results on stdout, errors on stderr, in JSON as `{"error":{"message":…,"hint":…}}`.
//!
//! `json` prints a one-shot result as one indented document and a stream (`replay`'s
//! frames, `observe`, `stats --watch`) as one object per line, since a stream that never
//! ends cannot be one document; `jsonl` prints one object per line always, for log
//! shippers and `jq -c` pipelines.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: aligned columns, YAML words.
    #[default]
    Text,
    /// JSON: one document, or one object per line for streams.
    Json,
    /// JSON lines: one compact object per line.
    Jsonl,
}

impl Output {
    /// Whether results are JSON (either spelling).
    pub fn is_json(self) -> bool {
        self != Output::Text
    }

    /// Print a one-shot result on stdout.
    pub fn document<T: Serialize + ?Sized>(self, value: &T) -> anyhow::Result<()> {
        let text = match self {
            Output::Json => serde_json::to_string_pretty(value)?,
            Output::Text | Output::Jsonl => serde_json::to_string(value)?,
        };
        println!("{text}");
        Ok(())
    }
}

/// Print one object of a stream as one line on `out`.
pub fn line<T: Serialize + ?Sized>(out: &mut impl Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// An error as JSON: its message with its causes, and its hint (null when none).
pub fn error_json(err: &anyhow::Error) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "message": describe(err),
            "hint": filter_user::hint::of(err.as_ref()),
        }
    })
}

/// Print `err` on stderr: as `error: …` with its causes and its hint on a line of its own,
/// or as one JSON object in JSON mode.
pub fn report(err: &anyhow::Error, output: Output) {
    if output.is_json() {
        eprintln!("{}", error_json(err));
        return;
    }
    eprintln!("error: {}", describe(err));
    if let Some(hint) = filter_user::hint::of(err.as_ref()) {
        eprintln!("  hint: {hint}");
    }
}

/// The error and its causes, each printed once: many of our errors already say their cause,
/// so a cause whose text the message holds is not repeated. The hint (`filter_user::hint`)
/// is not part of it.
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The `-o` value the raw arguments ask for, read before clap has parsed them, so that a
/// usage error can be reported in the format asked for.
pub fn requested(args: &[String]) -> Output {
    let mut found = Output::Text;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        let value = if arg == "-o" || arg == "--output" {
            iter.next().map(String::as_str)
        } else {
            arg.strip_prefix("--output=")
                .or_else(|| arg.strip_prefix("-o"))
        };
        if let Some(parsed) = value.and_then(|v| Output::from_str(v, false).ok()) {
            found = parsed;
        }
    }
    found
}

/// The spellings older nodegate versions (and SPEC §3) used, rewritten to `-o` before
/// parsing so scripts written for them keep working: `stats --json`, and `--format FMT` of
/// `check`, `explain` and `replay`. (`gen-traffic --format` names a capture format and
/// stays as it is.)
pub fn legacy_spellings(args: Vec<String>) -> Vec<String> {
    let Some(command) = args
        .iter()
        .skip(1)
        .position(|a| matches!(a.as_str(), "stats" | "check" | "explain" | "replay"))
        .map(|i| i + 1)
    else {
        return args;
    };
    let takes_format = args[command] != "stats";
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut iter = args.into_iter().enumerate();
    while let Some((i, arg)) = iter.next() {
        if i <= command || arg == "--" {
            out.push(arg);
            if i > command {
                out.extend(iter.map(|(_, a)| a));
                break;
            }
            continue;
        }
        if arg == "--json" && !takes_format {
            out.extend(["-o".to_owned(), "json".to_owned()]);
        } else if arg == "--format" && takes_format {
            out.push("-o".to_owned());
        } else if let (Some(value), true) = (arg.strip_prefix("--format="), takes_format) {
            out.push(format!("--output={value}"));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        let err = filter_user::daemon::metrics::bind_error("127.0.0.1:9864".parse().unwrap(), io);
        let err = anyhow::Error::new(err).context("starting the daemon");
        let text = describe(&err);
        assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
        // The hint is found through the context, and is not in the message.
        let hint = filter_user::hint::of(err.as_ref()).expect("a hint");
        assert!(
            hint.contains("--metrics ADDR") && !text.contains(hint),
            "{text} / {hint}"
        );
        let json = error_json(&err);
        assert_eq!(json["error"]["message"], text.as_str());
        assert_eq!(json["error"]["hint"], hint);
        let chained = anyhow::anyhow!("outer").context("context");
        assert_eq!(describe(&chained), "context: outer");
        assert!(error_json(&chained)["error"]["hint"].is_null());
    }

    fn argv(list: &[&str]) -> Vec<String> {
        std::iter::once("nodegate")
            .chain(list.iter().copied())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn older_spellings_become_the_output_flag() {
        assert_eq!(
            legacy_spellings(argv(&["stats", "--json"])),
            argv(&["stats", "-o", "json"])
        );
        assert_eq!(
            legacy_spellings(argv(&["replay", "a.pcap", "--format", "jsonl"])),
            argv(&["replay", "a.pcap", "-o", "jsonl"])
        );
        assert_eq!(
            legacy_spellings(argv(&[
                "--log-format",
                "json",
                "check",
                "f",
                "--format=json"
            ])),
            argv(&["--log-format", "json", "check", "f", "--output=json"])
        );
        // Not for other commands, not after `--`, not `--json` outside `stats`.
        let kept = argv(&["gen-traffic", "x.pcap", "--format", "pcap"]);
        assert_eq!(legacy_spellings(kept.clone()), kept);
        let kept = argv(&["check", "--", "--format"]);
        assert_eq!(legacy_spellings(kept.clone()), kept);
        let kept = argv(&["check", "f", "--json"]);
        assert_eq!(legacy_spellings(kept.clone()), kept);
    }

    #[test]
    fn the_requested_output_is_found_in_every_spelling() {
        let args = argv;
        assert_eq!(requested(&args(&["check", "-o", "json"])), Output::Json);
        assert_eq!(requested(&args(&["-ojsonl", "check"])), Output::Jsonl);
        assert_eq!(requested(&args(&["check", "--output=json"])), Output::Json);
        assert_eq!(
            requested(&args(&["check", "--output", "text"])),
            Output::Text
        );
        assert_eq!(requested(&args(&["check", "-o"])), Output::Text);
        assert_eq!(
            requested(&args(&["check", "--", "-o", "json"])),
            Output::Text
        );
        assert_eq!(requested(&args(&["check", "-o", "yaml"])), Output::Text);
    }
}
