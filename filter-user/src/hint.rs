//! What the operator can do about an error, attached one way and printed once.
//!
//! An error type whose cause has a known remedy keeps it apart from its message and gives it
//! through [`Hint::hint`]; its `Display` says what went wrong, never what to do. [`of`] walks
//! an error's chain and finds the hint; the binary prints it on its own line after the
//! `error:` line (`  hint: …`), as config diagnostics print theirs, and the daemon logs it
//! as a `hint` field.
//!
//! ```
//! use filter_user::hint;
//!
//! let taken = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
//! let err = filter_user::daemon::metrics::bind_error("127.0.0.1:9864".parse().unwrap(), taken);
//! assert!(!err.to_string().contains("--metrics"));
//! assert!(hint::of(&err).unwrap().contains("--metrics ADDR"));
//! ```

use std::error::Error;

/// An error that may know what to do about it.
pub trait Hint {
    /// The remedy, if this error's cause has a known one.
    fn hint(&self) -> Option<&str>;
}

/// The first hint in `err`'s chain (the error itself, then its sources).
pub fn of<'e>(err: &'e (dyn Error + 'static)) -> Option<&'e str> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(hint) = known(e).and_then(Hint::hint) {
            return Some(hint);
        }
        next = e.source();
    }
    None
}

/// `e` as a [`Hint`], when it is one of the library's error types that carry hints.
fn known<'e>(e: &'e (dyn Error + 'static)) -> Option<&'e dyn Hint> {
    macro_rules! first_of {
        ($($(#[$cfg:meta])* $ty:ty),* $(,)?) => {
            $($(#[$cfg])* if let Some(h) = e.downcast_ref::<$ty>() {
                return Some(h);
            })*
        };
    }
    // Wrappers with transparent variants first: their `source()` skips the wrapped error.
    first_of!(
        crate::firewall::FirewallError,
        crate::daemon::run::RunError,
        crate::daemon::engine::EngineError,
        crate::loader::attach::AttachError,
        #[cfg(feature = "tools")]
        crate::replay::live::LiveError,
        crate::loader::LoaderError,
        crate::loader::features::MissingFeature,
        crate::loader::privileges::MissingCapabilities,
        crate::daemon::metrics::MetricsError,
        crate::daemon::watch::WatchError,
        crate::import::ImportError,
        #[cfg(feature = "tools")]
        crate::lab::LabError,
    );
    None
}

/// A `&'static str` hint field where `""` means none.
pub(crate) fn non_empty(hint: &'static str) -> Option<&'static str> {
    (!hint.is_empty()).then_some(hint)
}
