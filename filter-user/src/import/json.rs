//! Reading a cloud CLI's JSON into the importers' own types (serde, unknown fields ignored:
//! the CLIs add fields over time).

use serde::de::DeserializeOwned;

use super::ImportError;

/// `text` (the contents of `file`) as `T`, or the error naming the command whose output was
/// expected and where the JSON did not fit.
pub(crate) fn parse<T: DeserializeOwned>(
    text: &str,
    file: &str,
    command: &'static str,
) -> Result<T, ImportError> {
    serde_json::from_str(text).map_err(|e| ImportError::Shape {
        file: file.to_owned(),
        command,
        detail: e.to_string(),
    })
}
