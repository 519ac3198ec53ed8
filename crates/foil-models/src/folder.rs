//! Model folders: a `model.json` that says what to build (with a format tag) beside burn
//! records (`*.mpk`, full precision), so a saved network loads on any backend.

use std::path::Path;

use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use foil_core::image_io::write_atomic;
use foil_core::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

/// The description file of a model folder.
pub const SPEC_FILE: &str = "model.json";

/// The recorder of every model folder: named MessagePack, full precision.
pub fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::format(path.display().to_string(), e))?;
    write_atomic(path, &text)
}

/// Reads JSON `what` from `path`.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("{what} {}", path.display()), e))
}

/// Reads the `model.json` of a model folder and checks its format tag against `expected`.
pub fn read_spec<T: DeserializeOwned>(
    dir: &Path,
    what: &str,
    expected: &str,
    format_of: impl Fn(&T) -> &str,
) -> Result<T> {
    let path = dir.join(SPEC_FILE);
    let spec: T = read_json(&path, what)?;
    let found = format_of(&spec);
    if found != expected {
        return Err(Error::format(
            path.display().to_string(),
            format!("expected format {expected:?}, found {found:?}"),
        ));
    }
    Ok(spec)
}
