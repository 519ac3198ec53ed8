//! Model folders: a `model.json` that says what to build (a [`ModelSpec`], tagged with its
//! [`Format`] version) beside burn records (`*.mpk`, full precision), so a saved network loads on
//! any backend. [`save_spec`] and [`load_spec`] are the one way every folder is written and read.
//!
//! The specs stay plain serde structs rather than burn `#[derive(Config)]`: burn 0.21's derive
//! drops serde field attributes, so fields added later with `#[serde(default)]` would make older
//! folders unreadable, and `skip_serializing_if` would change the files written.
//!
//! ```
//! use foil_models::folder::Format;
//! let f: Format = "foil ddpm 1".parse()?;
//! assert_eq!((f.kind(), f.version()), ("ddpm", 1));
//! assert_eq!(f.to_string(), "foil ddpm 1");
//! assert!("foil ddpm".parse::<Format>().is_err());
//! # Ok::<(), foil_core::Error>(())
//! ```

mod mpk;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use foil_core::image_io::write_atomic;
use foil_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

/// The description file of a model folder.
pub const SPEC_FILE: &str = "model.json";

/// The recorder of every model folder: named MessagePack, full precision.
pub fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// Writes `model`'s parameters to `path` (burn adds `.mpk`), full precision.
pub fn save_record<B: Backend, M: Module<B>>(model: M, path: &Path) -> Result<()> {
    model
        .save_file(path.to_path_buf(), &recorder())
        .map_err(|e| Error::format(path.display().to_string(), e))
}

/// The file burn reads and writes for record `path`: `path` with its extension set to `.mpk`.
pub fn record_file(path: &Path) -> PathBuf {
    path.with_extension("mpk")
}

/// Loads the parameters at `path` (without `.mpk`) into `model`.
///
/// The file is checked before burn reads it: a missing file is an [`Error::Io`] naming it and
/// `hint` (how to make it, e.g. "train the DDPM first: foil train ddpm"); a truncated or
/// corrupt file, or a record of another network (other tensor names or shapes), is an
/// [`Error::Format`] naming the file and saying which, never a panic.
pub fn load_record<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    hint: &str,
    device: &B::Device,
) -> Result<M> {
    let file = record_file(path);
    let tensors = scan_record(&file, hint)?;
    mpk::check_against(&tensors, &model)
        .map_err(|why| Error::format(file.display().to_string(), format!("{why} ({hint})")))?;
    let record = recorder()
        .load(path.to_path_buf(), device)
        .map_err(|e| record_error(&file, e, hint))?;
    Ok(model.load_record(record))
}

/// Checks that `path` (without `.mpk`) is a whole, well-formed burn record, whatever network it
/// is of: every tensor's bytes fit its shape and dtype and nothing is cut off. Errors as
/// [`load_record`]'s; call it before loading records foil does not build a network for (an
/// optimizer's state).
pub fn check_record(path: &Path, hint: &str) -> Result<()> {
    scan_record(&record_file(path), hint).map(drop)
}

/// The tensors of record file `file`, or the error saying why it is unreadable.
fn scan_record(file: &Path, hint: &str) -> Result<mpk::Tensors> {
    match mpk::scan(file) {
        Ok(Ok(tensors)) => Ok(tensors),
        Ok(Err(why)) => Err(Error::format(
            file.display().to_string(),
            format!(
                "truncated or corrupt burn record, or not a burn record at all: {why} ({hint})"
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::io(
            file,
            std::io::Error::new(e.kind(), format!("no such record ({hint})")),
        )),
        Err(e) => Err(Error::io(file, e)),
    }
}

/// A typed error for burn's recorder failing on record `file`: names the file, says it is
/// truncated or corrupt (or not a record of this model), adds `hint`, and leaves out burn's
/// note on its format change in version 0.14.0, which misleads here.
pub fn record_error(file: &Path, err: RecorderError, hint: &str) -> Error {
    let detail = match err {
        RecorderError::FileNotFound(e) => {
            return Error::io(
                file,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no such record: {e} ({hint})"),
                ),
            );
        }
        RecorderError::DeserializeError(e) | RecorderError::Unknown(e) => e,
    };
    // burn appends a paragraph on its 0.14.0 format change to every tensor it cannot read.
    let first = detail
        .split("The internal data format has changed")
        .next()
        .unwrap_or("")
        .trim();
    Error::format(
        file.display().to_string(),
        format!(
            "truncated or corrupt burn record, or not a record of this model: {first} ({hint})"
        ),
    )
}

/// Writes a trained model folder: `model`'s record as `dir/<record>.mpk`, then `spec` as
/// `dir/model.json` (last, so a folder with a spec is complete).
pub fn save_folder<B: Backend, M: Module<B>, S: ModelSpec>(
    dir: &Path,
    record: &str,
    model: M,
    spec: &S,
) -> Result<()> {
    save_record(model, &dir.join(record))?;
    save_spec(dir, spec)
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

/// The format version of a model folder, written `foil <kind> <version>` (`"foil ddpm 1"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Format {
    kind: String,
    version: u32,
}

impl Format {
    /// Version `version` of the folders of `kind` (`ddpm`, `oracle`, `decoder`, ...).
    pub fn new(kind: impl Into<String>, version: u32) -> Self {
        Self {
            kind: kind.into(),
            version,
        }
    }

    /// What the folder holds.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The version of its layout.
    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "foil {} {}", self.kind, self.version)
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.split(' ').collect::<Vec<_>>().as_slice() {
            ["foil", kind, version] if !kind.is_empty() => version
                .parse()
                .map(|version| Self::new(*kind, version))
                .map_err(|_| {
                    Error::format(
                        "model format",
                        format!("expected `foil <kind> <version>`, found {s:?}"),
                    )
                }),
            _ => Err(Error::format(
                "model format",
                format!("expected `foil <kind> <version>`, found {s:?}"),
            )),
        }
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The description of a model folder (`model.json`): what to build, tagged with its format.
pub trait ModelSpec: Serialize + DeserializeOwned {
    /// What such a folder holds, for messages (`"DDPM description"`).
    const WHAT: &'static str;

    /// The format this version of foil writes and reads.
    fn expected_format() -> Format;

    /// The format the spec says it has.
    fn format(&self) -> &Format;
}

/// Writes `spec` as `dir/model.json`, atomically (the folder must exist).
pub fn save_spec<S: ModelSpec>(dir: &Path, spec: &S) -> Result<()> {
    write_json(&dir.join(SPEC_FILE), spec)
}

/// Reads `dir/model.json` and checks its format against [`ModelSpec::expected_format`].
pub fn load_spec<S: ModelSpec>(dir: &Path) -> Result<S> {
    let path = dir.join(SPEC_FILE);
    let spec: S = read_json(&path, S::WHAT)?;
    let (expected, found) = (S::expected_format(), spec.format());
    if *found != expected {
        return Err(Error::format(
            path.display().to_string(),
            format!("expected format \"{expected}\", found \"{found}\""),
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Toy {
        format: Format,
        width: usize,
    }

    impl ModelSpec for Toy {
        const WHAT: &'static str = "toy description";
        fn expected_format() -> Format {
            Format::new("toy", 2)
        }
        fn format(&self) -> &Format {
            &self.format
        }
    }

    #[test]
    fn specs_round_trip_and_other_formats_are_refused() {
        let dir = std::env::temp_dir().join(format!("foil-folder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = Toy {
            format: Toy::expected_format(),
            width: 3,
        };
        save_spec(&dir, &spec).unwrap();
        let text = std::fs::read_to_string(dir.join(SPEC_FILE)).unwrap();
        assert!(text.contains("\"format\": \"foil toy 2\""), "{text}");
        assert_eq!(load_spec::<Toy>(&dir).unwrap(), spec);
        let older = Toy {
            format: Format::new("toy", 1),
            width: 3,
        };
        save_spec(&dir, &older).unwrap();
        let err = load_spec::<Toy>(&dir).unwrap_err().to_string();
        assert!(
            err.ends_with("expected format \"foil toy 2\", found \"foil toy 1\""),
            "{err}"
        );
        std::fs::write(dir.join(SPEC_FILE), r#"{"format": "toy two", "width": 3}"#).unwrap();
        let err = load_spec::<Toy>(&dir).unwrap_err().to_string();
        assert!(
            err.contains("toy description") && err.contains("toy two"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
