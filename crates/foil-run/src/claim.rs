//! Per-input claim files, so that processes sharing one results folder (shards run twice, two
//! people starting the same run, a rerun while the first still runs) never explain the same
//! input twice.
//!
//! Before [`run_set`](crate::run_set) explains an input it creates `<key>.claim` beside the
//! results, atomically (`create_new`: of two processes, exactly one succeeds), holding who
//! claimed it ([`Holder`]: process id, host, time). The claim is removed right after the
//! input's `<key>.json` is written (or when the run fails before that). An input claimed by
//! someone else is left to them; one whose `.json` exists once claimed is done and skipped.
//!
//! **Stale claims.** A run killed with SIGKILL leaves its claims behind. A claim is stale, and
//! taken over, when its process is gone (same host, no `/proc/<pid>`: Linux), or when it is
//! older than [`STALE_CLAIM_AGE`] (any host: a claim is held only while its batch is
//! explained, so a day means its process died elsewhere), or when it cannot be read as a
//! claim and is older than [`UNREADABLE_CLAIM_GRACE`] (killed between creating and writing
//! it). So a rerun on the same machine resumes at once; a rerun on another machine of a
//! cluster retakes a dead machine's few inputs after a day (or delete the `.claim` files).
//! Taking over renames the stale file aside first and checks it was the one judged, so two
//! processes finding the same stale claim do not both take it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Extension of claim files (`<key>.claim`).
pub const CLAIM_EXTENSION: &str = "claim";

/// Age past which any claim is stale (its process is presumed dead).
pub const STALE_CLAIM_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Age past which a claim file that cannot be read as a claim is stale.
pub const UNREADABLE_CLAIM_GRACE: Duration = Duration::from_secs(60);

/// Who holds a claim: the content of a `.claim` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id of the claiming process.
    pub pid: u32,
    /// Host name of its machine.
    pub host: String,
    /// When it claimed the input, seconds since the Unix epoch.
    pub since: u64,
}

impl Holder {
    /// This process, now.
    pub fn this_process() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Whether the claim is stale seen from `now` on `host`: its process is gone (same host;
    /// `alive` tells, `None` when it cannot), or it is older than [`STALE_CLAIM_AGE`].
    pub fn is_stale(&self, now: u64, host: &str, alive: impl Fn(u32) -> Option<bool>) -> bool {
        (self.host == host && alive(self.pid) == Some(false))
            || now.saturating_sub(self.since) > STALE_CLAIM_AGE.as_secs()
    }
}

/// This machine's host name (Linux: the kernel's; else `$HOSTNAME`, `$COMPUTERNAME`), or
/// `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether process `pid` of this machine runs: `Some` on Linux (`/proc/<pid>`), else `None`.
pub fn process_alive(pid: u32) -> Option<bool> {
    if cfg!(target_os = "linux") {
        Some(Path::new("/proc").join(pid.to_string()).exists())
    } else {
        None
    }
}

/// The claim file of the input `key` in a direction folder.
pub fn claim_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.{CLAIM_EXTENSION}"))
}

/// A claim this process holds; dropped, it removes its file (a failed run frees its inputs).
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    held: bool,
}

impl Claim {
    /// The claim file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the claim up: removes its file.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&self.path, e)),
            _ => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.held {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Claims the input `key` of `dir` for this process: `Some` when this process now holds it
/// (created, or a stale claim taken over), `None` when another process holds it.
pub fn try_claim(dir: &Path, key: &str) -> Result<Option<Claim>> {
    let path = claim_path(dir, key);
    let me = Holder::this_process();
    let content = serde_json::to_vec(&me).map_err(|e| Error::format("claim", e))?;
    // A few rounds: a claim released or taken over while we look is looked at again.
    for _ in 0..4 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                let claim = Claim {
                    path: path.clone(),
                    held: true,
                };
                file.write_all(&content).map_err(|e| Error::io(&path, e))?;
                return Ok(Some(claim));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some(seen) = read_if_stale(&path, &me)? else {
                    return Ok(None);
                };
                if !take_aside(&path, &seen)? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(None)
}

/// The claim file's bytes when it is stale (or gone: empty), `None` when it is live.
fn read_if_stale(path: &Path, me: &Holder) -> Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
        Err(e) => return Err(Error::io(path, e)),
    };
    let stale = match serde_json::from_slice::<Holder>(&bytes) {
        Ok(holder) => holder.is_stale(me.since, &me.host, process_alive),
        Err(_) => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNREADABLE_CLAIM_GRACE),
    };
    Ok(stale.then_some(bytes))
}

/// Moves the stale claim at `path` aside and deletes it, if it still holds `seen`: `false`
/// when another process took it over first (its fresh claim is put back).
fn take_aside(path: &Path, seen: &[u8]) -> Result<bool> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let aside = path.with_extension(format!(
        "{CLAIM_EXTENSION}.{}-{}.stale",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        // Released or taken meanwhile: look again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(path, e)),
    }
    let moved = std::fs::read(&aside).map_err(|e| Error::io(&aside, e))?;
    let ours = moved == seen;
    if !ours {
        // Someone's fresh claim: back where it was, unless yet another claim is there now.
        let _ = std::fs::hard_link(&aside, path);
    }
    std::fs::remove_file(&aside).map_err(|e| Error::io(&aside, e))?;
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(&format!("foil-claim-{tag}-"))
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))
    }

    #[test]
    fn staleness_follows_the_process_and_the_age() {
        let holder = Holder {
            pid: 7,
            host: "a".into(),
            since: 1000,
        };
        let day = STALE_CLAIM_AGE.as_secs();
        // Same host: dead is stale, alive or unknown is not (until a day has passed).
        assert!(holder.is_stale(1001, "a", |_| Some(false)));
        assert!(!holder.is_stale(1001, "a", |_| Some(true)));
        assert!(!holder.is_stale(1001, "a", |_| None));
        // Another host: only the age counts.
        assert!(!holder.is_stale(1001, "b", |_| Some(false)));
        assert!(!holder.is_stale(1000 + day, "b", |_| Some(true)));
        assert!(holder.is_stale(1001 + day, "b", |_| Some(true)));
        // A clock behind the claim's does not make it stale.
        assert!(!holder.is_stale(0, "b", |_| Some(true)));
    }

    #[test]
    fn one_claim_per_input_released_on_drop_and_stale_ones_taken_over() -> Result<()> {
        let tmp = temp("basic")?;
        let dir = tmp.path();
        let first = try_claim(dir, "k")?;
        assert!(first.is_some());
        // This process holds it and is alive: a second claim is refused.
        assert!(try_claim(dir, "k")?.is_none());
        drop(first);
        assert!(!claim_path(dir, "k").exists());
        let again = try_claim(dir, "k")?;
        assert!(again.is_some());
        if let Some(claim) = again {
            claim.release()?;
        }
        assert!(!claim_path(dir, "k").exists());

        // A claim two days old from another host is stale.
        let old = Holder {
            pid: 1,
            host: "elsewhere".into(),
            since: Holder::this_process().since - 2 * STALE_CLAIM_AGE.as_secs(),
        };
        let path = claim_path(dir, "old");
        let json = serde_json::to_vec(&old).map_err(|e| Error::format("claim", e))?;
        std::fs::write(&path, json).map_err(|e| Error::io(&path, e))?;
        let taken = try_claim(dir, "old")?;
        assert!(taken.is_some());
        let now: Holder =
            serde_json::from_slice(&std::fs::read(&path).map_err(|e| Error::io(&path, e))?)
                .map_err(|e| Error::format("claim", e))?;
        assert_eq!(now.pid, std::process::id());
        drop(taken);

        // An unreadable claim: live while fresh, stale once older than the grace.
        let path = claim_path(dir, "garbage");
        std::fs::write(&path, b"").map_err(|e| Error::io(&path, e))?;
        assert!(try_claim(dir, "garbage")?.is_none());
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.set_modified(SystemTime::now() - 2 * UNREADABLE_CLAIM_GRACE)
            .map_err(|e| Error::io(&path, e))?;
        drop(file);
        assert!(try_claim(dir, "garbage")?.is_some());
        // Nothing left aside.
        let left: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
