//! foil's home folder, where published weights are installed and caches kept, so every command
//! finds them from any working directory.
//!
//! The folder is `$FOIL_HOME` when set (and not empty), else `foil` in the platform's cache
//! folder: `$XDG_CACHE_HOME/foil` or `~/.cache/foil` on Linux, `~/Library/Caches/foil` on
//! macOS, `%LOCALAPPDATA%\foil` on Windows. `foil weights` installs into it; lookups try an
//! explicit flag first, then this folder, then (for folders set up by older foils) the old
//! path relative to the current directory ([`locate`]).
//!
//! ```
//! use std::path::Path;
//! // Nothing installed under these names: the places looked in come back, home first.
//! let looked = foil_core::home::locate(Path::new("no/such.file"), Path::new("assets/no/such.file"))
//!     .unwrap_err();
//! assert_eq!(looked.last().map(|p| p.as_path()), Some(Path::new("assets/no/such.file")));
//! ```

use std::path::{Path, PathBuf};

/// The environment variable naming foil's home folder.
pub const FOIL_HOME: &str = "FOIL_HOME";

/// foil's home folder (module docs); `None` when `FOIL_HOME` is unset and the platform has no
/// cache folder (no home directory).
pub fn foil_home() -> Option<PathBuf> {
    match std::env::var_os(FOIL_HOME) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::cache_dir().map(|d| d.join("foil")),
    }
}

/// `rel` inside foil's home folder (where it is, or will be, installed).
pub fn home_path(rel: impl AsRef<Path>) -> Option<PathBuf> {
    foil_home().map(|home| home.join(rel))
}

/// Finds an installed file: `rel` in foil's home folder, else `legacy` (a path relative to the
/// current directory where older foils installed it). `Err` lists the places looked in, in
/// that order, for an error message.
pub fn locate(rel: &Path, legacy: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let candidates: Vec<PathBuf> = home_path(rel)
        .into_iter()
        .chain(std::iter::once(legacy.to_path_buf()))
        .collect();
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates),
    }
}
