//! The error type shared by every foil crate.

use std::path::PathBuf;

/// Everything a user of foil can get wrong, and what foil found instead.
///
/// Every variant names the offending input and says what was expected and what was found,
/// so the message alone is enough to fix the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor, image or list had the wrong shape or length.
    #[error("{what}: expected shape {expected}, found {found}")]
    Shape {
        /// Which input.
        what: String,
        /// The shape that was expected, written out.
        expected: String,
        /// The shape that was found.
        found: String,
    },
    /// A scalar parameter was outside its valid range.
    #[error("{what} must be {expected}, found {found}")]
    OutOfRange {
        /// Which parameter.
        what: String,
        /// The valid range, written out (for example `in (0, 1]`).
        expected: String,
        /// The value that was given.
        found: String,
    },
    /// A tensor or value held NaN or an infinity.
    #[error("{what} holds non-finite values (NaN or infinity){context}")]
    NonFinite {
        /// Which tensor or value.
        what: String,
        /// Where it happened (for example `" at step 41"`), or empty.
        context: String,
    },
    /// A collection that must hold at least one element was empty.
    #[error("{what} is empty: {hint}")]
    Empty {
        /// Which collection.
        what: String,
        /// What to do about it.
        hint: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded or encoded.
    #[error("image {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// A file was readable but its content was not what foil expected.
    #[error("{what}: {detail}")]
    Format {
        /// Which file or record.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A backend could not be used (for example CUDA without a GPU).
    #[error("backend {backend} unavailable: {reason}")]
    Backend {
        /// The backend that was asked for.
        backend: String,
        /// Why it cannot run.
        reason: String,
    },
}

/// The result type of every fallible foil function.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Shape`] from anything printable.
    pub fn shape(
        what: impl Into<String>,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    /// A [`Error::OutOfRange`] from anything printable.
    pub fn out_of_range(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl std::fmt::Display,
    ) -> Self {
        Error::OutOfRange {
            what: what.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// A [`Error::NonFinite`] with an optional context (empty for none).
    pub fn non_finite(what: impl Into<String>, context: impl Into<String>) -> Self {
        let context = context.into();
        let context = if context.is_empty() {
            context
        } else {
            format!(" {context}")
        };
        Error::NonFinite {
            what: what.into(),
            context,
        }
    }

    /// A [`Error::Format`] from anything printable.
    pub fn format(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Format {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// A [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
