//! The error type shared by every foil crate.
//!
//! Every fallible foil function returns [`Error`]. Its message alone is enough to fix the call,
//! and a program that wants to react to a particular failure does not have to parse it:
//!
//! - [`Error::kind`] says what sort of failure it was, as an [`ErrorKind`];
//! - [`Error::subject`] names the offending input (the parameter, tensor, collection, file or
//!   record, or the backend), exactly as the message names it;
//! - [`Error::path`] gives the file of an [`Error::Io`] or [`Error::Image`].
//!
//! The name-like fields are [`Cow<'static, str>`](Cow), so a static name such as
//! `"batch size"` costs no allocation and the variants can also be matched directly.
//!
//! ```
//! use foil_core::{Error, ErrorKind};
//!
//! let err = Error::out_of_range("batch size", ">= 1", 0);
//!
//! // By kind and subject...
//! assert_eq!(err.kind(), ErrorKind::OutOfRange);
//! assert_eq!(err.subject(), Some("batch size"));
//! assert_eq!(err.path(), None);
//!
//! // ...or by pattern.
//! assert!(matches!(&err, Error::OutOfRange { what, .. } if what == "batch size"));
//!
//! // The message is unchanged.
//! assert_eq!(err.to_string(), "batch size must be >= 1, found 0");
//!
//! // A subject built at run time works the same way.
//! let layer = 3;
//! let err = Error::shape(format!("layer {layer} weight"), "[64, 3]", "[64, 4]");
//! assert_eq!(err.kind(), ErrorKind::Shape);
//! assert_eq!(err.subject(), Some("layer 3 weight"));
//! ```

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Everything a user of foil can get wrong, and what foil found instead.
///
/// Every variant names the offending input and says what was expected and what was found,
/// so the message alone is enough to fix the call. To react to a particular failure, match on
/// [`Error::kind`] and [`Error::subject`], or on the variant:
///
/// ```
/// use foil_core::{Error, ErrorKind};
///
/// let err = Error::non_finite("latents", "at step 41");
/// assert_eq!(err.kind(), ErrorKind::NonFinite);
/// assert_eq!(err.subject(), Some("latents"));
/// assert!(matches!(&err, Error::NonFinite { what, .. } if what == "latents"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor, image or list had the wrong shape or length.
    #[error("{what}: expected shape {expected}, found {found}")]
    Shape {
        /// Which input.
        what: Cow<'static, str>,
        /// The shape that was expected, written out.
        expected: String,
        /// The shape that was found.
        found: String,
    },
    /// A scalar parameter was outside its valid range.
    #[error("{what} must be {expected}, found {found}")]
    OutOfRange {
        /// Which parameter.
        what: Cow<'static, str>,
        /// The valid range, written out (for example `in (0, 1]`).
        expected: String,
        /// The value that was given.
        found: String,
    },
    /// A tensor or value held NaN or an infinity.
    #[error("{what} holds non-finite values (NaN or infinity){context}")]
    NonFinite {
        /// Which tensor or value.
        what: Cow<'static, str>,
        /// Where it happened (for example `" at step 41"`), or empty.
        context: String,
    },
    /// A collection that must hold at least one element was empty.
    #[error("{what} is empty: {hint}")]
    Empty {
        /// Which collection.
        what: Cow<'static, str>,
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
        what: Cow<'static, str>,
        /// What was wrong with it.
        detail: String,
    },
    /// A backend could not be used (for example CUDA without a GPU).
    #[error("backend {backend} unavailable: {reason}")]
    Backend {
        /// The backend that was asked for.
        backend: Cow<'static, str>,
        /// Why it cannot run.
        reason: String,
    },
}

/// What sort of failure an [`Error`] is, one per variant, without its fields.
///
/// Returned by [`Error::kind`]; cheap to copy and compare. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An [`Error::Shape`]: wrong shape or length.
    Shape,
    /// An [`Error::OutOfRange`]: a scalar parameter outside its valid range.
    OutOfRange,
    /// An [`Error::NonFinite`]: NaN or an infinity.
    NonFinite,
    /// An [`Error::Empty`]: a collection with no element.
    Empty,
    /// An [`Error::Io`]: a file could not be read or written.
    Io,
    /// An [`Error::Image`]: an image file could not be decoded or encoded.
    Image,
    /// An [`Error::Format`]: a file's content was not what foil expected.
    Format,
    /// An [`Error::Backend`]: a backend could not be used.
    Backend,
}

/// The result type of every fallible foil function.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Shape`] from anything printable.
    pub fn shape(
        what: impl Into<Cow<'static, str>>,
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
        what: impl Into<Cow<'static, str>>,
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
    pub fn non_finite(what: impl Into<Cow<'static, str>>, context: impl Into<String>) -> Self {
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
    pub fn format(what: impl Into<Cow<'static, str>>, detail: impl std::fmt::Display) -> Self {
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

    /// What sort of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Shape { .. } => ErrorKind::Shape,
            Error::OutOfRange { .. } => ErrorKind::OutOfRange,
            Error::NonFinite { .. } => ErrorKind::NonFinite,
            Error::Empty { .. } => ErrorKind::Empty,
            Error::Io { .. } => ErrorKind::Io,
            Error::Image { .. } => ErrorKind::Image,
            Error::Format { .. } => ErrorKind::Format,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// The name of the offending input as the message writes it: the parameter, tensor,
    /// collection, file or record (`what`), or the backend; `None` for [`Error::Io`] and
    /// [`Error::Image`], whose file is [`Error::path`].
    pub fn subject(&self) -> Option<&str> {
        match self {
            Error::Shape { what, .. }
            | Error::OutOfRange { what, .. }
            | Error::NonFinite { what, .. }
            | Error::Empty { what, .. }
            | Error::Format { what, .. } => Some(what),
            Error::Backend { backend, .. } => Some(backend),
            Error::Io { .. } | Error::Image { .. } => None,
        }
    }

    /// The file of an [`Error::Io`] or [`Error::Image`]; `None` for every other kind.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. } | Error::Image { path, .. } => Some(path),
            _ => None,
        }
    }
}
