//! The run manifest: what a results folder was made with, so results never silently mix
//! settings.
//!
//! Each results folder holds [`MANIFEST_FILE`] (`foil-run.json`) at its root: the command, its
//! resolved settings (method configuration, dataset, image size, batch size, oracle, backend),
//! the seed, a checksum of every model file or folder the run loaded ([`Checksum`]) and the foil
//! version. [`RunManifest::claim`] writes it on the first run into a folder and, on every later
//! run into the same folder, compares: a difference in any compared setting is refused with an
//! error naming each one (recorded → requested), unless the caller explicitly allows mixing
//! (`--resume-any` on the command line), which is then recorded in the manifest
//! ([`RunManifest::overrides`]).
//!
//! What is compared: the command, the seed, every entry of [`RunManifest::settings`] and the
//! digest of every model in [`RunManifest::models`]. What is not: the foil version (recorded
//! only, so an upgrade does not lock a folder), the paths the models were read from (a cluster
//! node may mount them elsewhere) and [`RunManifest::not_compared`]: settings that may differ
//! between shards and reruns without changing any result, such as the shard, the thread count,
//! progress output, the device index of a backend, or how many inputs per direction this call
//! covers.
//!
//! Checksums are SHA-256. A file up to [`FULL_HASH_LIMIT`] is hashed whole; a larger one (a
//! multi-GB checkpoint) is *sampled*: its size, its first and last [`SAMPLE_BYTES`] and, for a
//! safetensors file, its whole header (names, dtypes, shapes, offsets) are hashed, which
//! tells any two different published or fine-tuned checkpoints apart in well under a second
//! (retraining changes every tensor, so the first and last MiB) without reading gigabytes.
//! [`Checksum::algorithm`] says which was done. Files are streamed through a small buffer,
//! never held in memory. A folder's digest covers each file's path relative to it and digest,
//! in sorted order; hidden files (names starting with `.`, such as temporary files of an
//! interrupted write) and `train/` and `checkpoints/` folders (the training log and
//! checkpoints `foil train` keeps beside a model, which a run does not load) are left out.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use foil_core::image_io::{sync_dir, temp_sibling, write_atomic};
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The manifest's file name at the root of a results folder.
pub const MANIFEST_FILE: &str = "foil-run.json";

/// The manifest format this foil writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Files up to this size (64 MiB) are hashed whole; larger ones are sampled (module docs).
pub const FULL_HASH_LIMIT: u64 = 64 << 20;

/// Bytes hashed at each end of a sampled file (1 MiB).
pub const SAMPLE_BYTES: u64 = 1 << 20;

/// [`Checksum::algorithm`] when every file was hashed whole.
pub const SHA256: &str = "sha256";

/// [`Checksum::algorithm`] when some file was larger than [`FULL_HASH_LIMIT`] and sampled.
pub const SHA256_SAMPLED: &str = "sha256-sampled";

/// Largest safetensors header hashed in full (the format's own limit is 100 MB).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Folders inside a model folder that a run does not load (`foil train`'s log and checkpoints).
const SKIPPED_DIRS: &[&str] = &["train", "checkpoints"];

/// The foil version recorded in new manifests (all foil crates share the workspace version).
pub const FOIL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit recorded in new manifests: `FOIL_GIT_COMMIT` at build time, when the build
/// sets it (foil has no build script).
pub const FOIL_GIT_COMMIT: Option<&str> = option_env!("FOIL_GIT_COMMIT");

/// The checksum of one model file or folder a run loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// The file or folder as the command named it (recorded, not compared).
    pub path: String,
    /// [`SHA256`] or [`SHA256_SAMPLED`] (some file larger than [`FULL_HASH_LIMIT`]).
    pub algorithm: String,
    /// The hex digest.
    pub digest: String,
    /// Files hashed (1 for a file).
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// SHA-256 of a model file or folder, streamed (see the module docs for what a folder's and a
/// large file's digest cover). A path that does not exist is an I/O error naming it.
pub fn checksum(path: &Path) -> Result<Checksum> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mut sampled = false;
    let (digest, files, bytes) = if meta.is_dir() {
        let mut found = Vec::new();
        collect_files(path, Path::new(""), &mut found)?;
        found.sort();
        let mut folder = Sha256::new();
        let mut bytes = 0;
        for rel in &found {
            let full = path.join(rel);
            let (digest, size, was_sampled) = hash_file(&full)?;
            sampled |= was_sampled;
            bytes += size;
            folder.update(rel_name(rel).as_bytes());
            folder.update([0u8]);
            folder.update(digest);
        }
        (folder.finalize().to_vec(), found.len() as u64, bytes)
    } else {
        let (digest, size, was_sampled) = hash_file(path)?;
        sampled = was_sampled;
        (digest.to_vec(), 1, size)
    };
    Ok(Checksum {
        path: path.display().to_string(),
        algorithm: if sampled { SHA256_SAMPLED } else { SHA256 }.into(),
        digest: hex(&digest),
        files,
        bytes,
    })
}

/// A relative path with `/` separators on every platform, so digests agree across systems.
fn rel_name(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every file under `root/rel`, relative to `root`, hidden names and [`SKIPPED_DIRS`] left out.
fn collect_files(root: &Path, rel: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows links (a Hugging Face snapshot links into its blob store).
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            if !SKIPPED_DIRS.contains(&name_str.as_ref()) {
                collect_files(root, &rel.join(&name), found)?;
            }
        } else {
            found.push(rel.join(&name));
        }
    }
    Ok(())
}

/// A file's digest, size and whether it was sampled (larger than [`FULL_HASH_LIMIT`]).
fn hash_file(path: &Path) -> Result<([u8; 32], u64, bool)> {
    let io = |e| Error::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut hasher = Sha256::new();
    if size <= FULL_HASH_LIMIT {
        copy_into(&mut file, &mut hasher, size).map_err(io)?;
        return Ok((hasher.finalize().into(), size, false));
    }
    hasher.update(b"foil-sampled-v1");
    hasher.update(size.to_le_bytes());
    // A safetensors file starts with its header's length (u64, little endian), then the header.
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let header = u64::from_le_bytes(len);
    if header <= MAX_SAFETENSORS_HEADER && 8 + header <= size && header >= 2 {
        let mut first = [0u8; 1];
        file.read_exact(&mut first).map_err(io)?;
        if first[0] == b'{' {
            hasher.update(b"safetensors-header");
            file.seek(SeekFrom::Start(8)).map_err(io)?;
            copy_into(&mut file, &mut hasher, header).map_err(io)?;
        }
    }
    hasher.update(b"first");
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    copy_into(&mut file, &mut hasher, SAMPLE_BYTES).map_err(io)?;
    hasher.update(b"last");
    file.seek(SeekFrom::Start(size - SAMPLE_BYTES))
        .map_err(io)?;
    copy_into(&mut file, &mut hasher, SAMPLE_BYTES).map_err(io)?;
    Ok((hasher.finalize().into(), size, true))
}

/// Streams exactly `n` bytes of `file` into `hasher` through a 1 MiB buffer.
fn copy_into(file: &mut File, hasher: &mut Sha256, mut n: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while n > 0 {
        let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        let got = file.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file ended {n} bytes early while hashing"),
            ));
        }
        hasher.update(&buf[..got]);
        n -= got as u64;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One setting that differs between a folder's manifest and a new run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// The setting's name: `command`, `seed`, a settings key (`method.tau`) or
    /// `model <name>` (its digest).
    pub setting: String,
    /// The folder's value (`None`: the folder has no such setting).
    pub recorded: Option<Value>,
    /// The new run's value (`None`: the new run has no such setting).
    pub requested: Option<Value>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".to_string(),
        };
        write!(
            f,
            "`{}`: {} -> {}",
            self.setting,
            show(&self.recorded),
            show(&self.requested)
        )
    }
}

/// A run that mixed its settings into a folder written with others (`--resume-any`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// The foil version of that run.
    pub foil_version: String,
    /// What differed, recorded → that run's value.
    pub differences: Vec<Difference>,
}

/// What a results folder was made with (module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The command (`maskdime`, `diffusion`).
    pub command: String,
    /// The seed of the method's noise.
    pub seed: u64,
    /// The compared settings, flat, by dotted name (`method.tau`, `data.source`).
    pub settings: BTreeMap<String, Value>,
    /// The loaded models by role (`oracle`, `ddpm`, `decoder`), with their checksums.
    pub models: BTreeMap<String, Checksum>,
    /// Settings recorded but not compared (the first run's: shard, threads, device index).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_compared: BTreeMap<String, Value>,
    /// The foil version of the first run.
    pub foil_version: String,
    /// Its git commit, when the build recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Later runs that mixed other settings into the folder (`--resume-any`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// What [`RunManifest::claim`] found in the folder.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// No manifest yet: this one was written.
    Created,
    /// A manifest with the same settings (left as it was).
    Matched,
    /// A manifest with other settings, mixed in on request; the differences were recorded.
    Overridden(Vec<Difference>),
}

impl RunManifest {
    /// An empty manifest of `command` with `seed`, this foil's version.
    pub fn new(command: impl Into<String>, seed: u64) -> Self {
        Self {
            format: MANIFEST_FORMAT,
            command: command.into(),
            seed,
            settings: BTreeMap::new(),
            models: BTreeMap::new(),
            not_compared: BTreeMap::new(),
            foil_version: FOIL_VERSION.into(),
            git_commit: FOIL_GIT_COMMIT.map(str::to_string),
            overrides: Vec::new(),
        }
    }

    /// Adds the compared setting `key`; a JSON object is flattened into `key.field` entries
    /// (nested objects likewise), so each field is compared and named on its own.
    pub fn setting(mut self, key: &str, value: impl Serialize) -> Result<Self> {
        let value = to_value(key, value)?;
        flatten_into(&mut self.settings, key, value);
        Ok(self)
    }

    /// Adds the setting `key`, recorded but not compared.
    pub fn not_compared(mut self, key: &str, value: impl Serialize) -> Result<Self> {
        let value = to_value(key, value)?;
        flatten_into(&mut self.not_compared, key, value);
        Ok(self)
    }

    /// Adds the model `role` read from `path`, with its [`checksum`].
    pub fn model(mut self, role: &str, path: &Path) -> Result<Self> {
        self.models.insert(role.into(), checksum(path)?);
        Ok(self)
    }

    /// The same manifest with another seed (one run per seed of a multi-seed command).
    pub fn with_seed(&self, seed: u64) -> Self {
        Self {
            seed,
            ..self.clone()
        }
    }

    /// A compared setting (`None`: not recorded).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.settings.get(key)
    }

    /// Every compared setting that differs between this (a folder's) manifest and `requested`
    /// (a new run's), in name order: the command, the seed, the settings, the models' digests.
    pub fn differences(&self, requested: &RunManifest) -> Vec<Difference> {
        let mut out = Vec::new();
        let mut compare = |setting: String, a: Option<Value>, b: Option<Value>| {
            if a != b {
                out.push(Difference {
                    setting,
                    recorded: a,
                    requested: b,
                });
            }
        };
        compare(
            "command".into(),
            Some(Value::from(self.command.clone())),
            Some(Value::from(requested.command.clone())),
        );
        compare(
            "seed".into(),
            Some(Value::from(self.seed)),
            Some(Value::from(requested.seed)),
        );
        for key in union(self.settings.keys(), requested.settings.keys()) {
            compare(
                key.clone(),
                self.settings.get(&key).cloned(),
                requested.settings.get(&key).cloned(),
            );
        }
        let digest = |c: &Checksum| Value::from(format!("{}:{}", c.algorithm, c.digest));
        for role in union(self.models.keys(), requested.models.keys()) {
            compare(
                format!("model {role}"),
                self.models.get(&role).map(digest),
                requested.models.get(&role).map(digest),
            );
        }
        out
    }

    /// Reads the manifest of results folder `dir`; `None` when it has none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let manifest: Self = serde_json::from_slice(&bytes).map_err(|e| {
            Error::format(
                format!("run manifest {}", path.display()),
                format!(
                    "expected foil's JSON record of the folder's settings, found: {e} (move \
                     the file away to record the next run's settings afresh)"
                ),
            )
        })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(Error::out_of_range(
                format!("format of run manifest {}", path.display()),
                format!("{MANIFEST_FORMAT} (written by this foil; upgrade foil to read it)"),
                manifest.format,
            ));
        }
        Ok(Some(manifest))
    }

    /// Writes the manifest into results folder `dir` (created if needed), atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::format(path.display().to_string(), e))?;
        write_atomic(&path, &text)
    }

    /// Writes the manifest into results folder `dir` unless it has one: `false` when another
    /// process wrote one first. Written whole to a temporary file (as
    /// [`write_atomic`] does), then hard-linked to its name, which fails if the name exists,
    /// so of concurrent creators exactly one wins. On a file system without hard links it is
    /// renamed into place instead (last writer wins).
    pub fn create(&self, dir: &Path) -> Result<bool> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::format(path.display().to_string(), e))?;
        let tmp = temp_sibling(&path);
        write_atomic(&tmp, &text)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let created = match linked {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(_) => {
                return std::fs::rename(&tmp, &path)
                    .map_err(|e| Error::io(&path, e))
                    .and_then(|()| sync_dir(dir))
                    .map(|()| true);
            }
        };
        std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
        sync_dir(dir)?;
        Ok(created)
    }

    /// Claims results folder `dir` for a run with this manifest: writes it when the folder has
    /// none; accepts a manifest with the same compared settings (left untouched); refuses one
    /// with other settings with an [`Error::Format`] that names each difference (recorded ->
    /// requested), unless `resume_any`, which records the differences in the folder's manifest
    /// ([`RunManifest::overrides`]) and goes on.
    ///
    /// Of several processes claiming a folder without a manifest at once (the shards of a job
    /// array starting together), exactly one writes it ([`RunManifest::create`]); the others
    /// compare with it like any later run.
    pub fn claim(&self, dir: &Path, resume_any: bool) -> Result<Claim> {
        let mut recorded = loop {
            match Self::read(dir)? {
                Some(recorded) => break recorded,
                None => {
                    if self.create(dir)? {
                        return Ok(Claim::Created);
                    }
                }
            }
        };
        let differences = recorded.differences(self);
        if differences.is_empty() {
            return Ok(Claim::Matched);
        }
        if !resume_any {
            return Err(mismatch(dir, &differences));
        }
        recorded.overrides.push(Override {
            foil_version: FOIL_VERSION.into(),
            differences: differences.clone(),
        });
        recorded.write(dir)?;
        Ok(Claim::Overridden(differences))
    }
}

/// The refusal of a run whose settings differ from the folder's manifest.
fn mismatch(dir: &Path, differences: &[Difference]) -> Error {
    let list = differences
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Error::format(
        format!("results folder {} (its {MANIFEST_FILE})", dir.display()),
        format!(
            "was written with other settings ({} differ, recorded -> this run): {list}. Rerun \
             with the recorded settings, choose another --out, or pass --resume-any to mix them \
             (recorded in {MANIFEST_FILE})",
            differences.len()
        ),
    )
}

fn to_value(key: &str, value: impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::format(format!("setting {key}"), e))
}

/// Inserts `value` under `key`, an object's fields as `key.field` (recursively); an empty
/// object stays one entry.
fn flatten_into(map: &mut BTreeMap<String, Value>, key: &str, value: Value) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (field, v) in fields {
                flatten_into(map, &format!("{key}.{field}"), v);
            }
        }
        other => {
            map.insert(key.to_string(), other);
        }
    }
}

fn union<'a>(
    a: impl Iterator<Item = &'a String>,
    b: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let mut keys: Vec<String> = a.chain(b).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(&format!("foil-manifest-{tag}-"))
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))
    }

    fn sample(dir: &Path) -> Result<RunManifest> {
        let model = dir.join("model");
        std::fs::create_dir_all(model.join("checkpoints")).map_err(|e| Error::io(&model, e))?;
        std::fs::create_dir_all(model.join("train")).map_err(|e| Error::io(&model, e))?;
        std::fs::write(model.join("model.json"), b"{}").map_err(|e| Error::io(&model, e))?;
        std::fs::write(model.join("checkpoints/x"), b"1").map_err(|e| Error::io(&model, e))?;
        RunManifest::new("maskdime", 3)
            .setting(
                "method",
                serde_json::json!({"tau": 30, "scales": [8.0, 10.0], "mask": {"k": 0.2}}),
            )?
            .setting("batch_size", 4)?
            .not_compared("shard", "0/2")?
            .model("ddpm", &model)
    }

    #[test]
    fn round_trip_and_flattened_names() -> Result<()> {
        let tmp = temp("round-trip")?;
        let dir = tmp.path();
        let manifest = sample(dir)?;
        assert_eq!(manifest.get("method.mask.k"), Some(&Value::from(0.2)));
        assert_eq!(manifest.get("method.tau"), Some(&Value::from(30)));
        manifest.write(&dir.join("out"))?;
        let back = RunManifest::read(&dir.join("out"))?;
        assert_eq!(back.as_ref(), Some(&manifest));
        assert_eq!(RunManifest::read(&dir.join("none"))?, None);
        // A cut file is an error naming it.
        let path = dir.join("out").join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, &text[..text.len() / 2]).map_err(|e| Error::io(&path, e))?;
        let err = match RunManifest::read(&dir.join("out")) {
            Err(e) => e.to_string(),
            Ok(m) => return Err(Error::format("cut manifest", format!("read: {m:?}"))),
        };
        assert!(err.contains(&path.display().to_string()), "{err}");
        Ok(())
    }

    #[test]
    fn claim_refuses_other_settings_by_name_unless_resume_any() -> Result<()> {
        let tmp = temp("claim")?;
        let dir = tmp.path();
        let out = dir.join("out");
        let first = sample(dir)?;
        assert_eq!(first.claim(&out, false)?, Claim::Created);
        // Another shard: only not-compared settings differ.
        let shard = first.clone().not_compared("shard", "1/2")?;
        assert_eq!(shard.claim(&out, false)?, Claim::Matched);
        let other = first
            .with_seed(4)
            .setting("method", serde_json::json!({"tau": 40}))?;
        let err = match other.claim(&out, false) {
            Err(e) => e.to_string(),
            Ok(c) => return Err(Error::format("claim", format!("accepted: {c:?}"))),
        };
        assert!(err.contains("`seed`: 3 -> 4"), "{err}");
        assert!(err.contains("`method.tau`: 30 -> 40"), "{err}");
        assert!(!err.contains("method.mask.k"), "{err}");
        assert!(!err.contains("shard"), "{err}");
        assert!(err.contains("--resume-any"), "{err}");
        match other.claim(&out, true)? {
            Claim::Overridden(d) => assert_eq!(d.len(), 2),
            c => return Err(Error::format("claim", format!("{c:?}"))),
        }
        let after = RunManifest::read(&out)?.ok_or_else(|| Error::format("manifest", "gone"))?;
        assert_eq!(after.seed, 3, "the folder keeps its first settings");
        assert_eq!(after.overrides.len(), 1);
        // Still refused without --resume-any.
        assert!(other.claim(&out, false).is_err());
        Ok(())
    }

    #[test]
    fn of_concurrent_creators_one_writes_and_the_others_compare() -> Result<()> {
        let tmp = temp("concurrent")?;
        let dir = tmp.path();
        let out = dir.join("out");
        let first = sample(dir)?;
        let claims: Vec<Result<Claim>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|i| {
                    let (m, out) = (&first, &out);
                    s.spawn(move || m.clone().not_compared("shard", i)?.claim(out, false))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::format("claim thread", "panicked")))
                })
                .collect()
        });
        let mut created = 0;
        for claim in claims {
            match claim? {
                Claim::Created => created += 1,
                Claim::Matched => {}
                other => return Err(Error::format("claim", format!("{other:?}"))),
            }
        }
        assert_eq!(created, 1);
        let names: Vec<String> = std::fs::read_dir(&out)
            .map_err(|e| Error::io(&out, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![MANIFEST_FILE.to_string()],
            "no temporary file left"
        );
        // And a creator with other settings is refused, not silently overwriting.
        let other = first.with_seed(9);
        assert!(!other.create(&out)?);
        assert!(other.claim(&out, false).is_err());
        Ok(())
    }

    #[test]
    fn checksums_follow_content_and_skip_checkpoints() -> Result<()> {
        let tmp = temp("checksum")?;
        let dir = tmp.path();
        let a = sample(dir)?.models["ddpm"].clone();
        assert_eq!((a.files, a.algorithm.as_str()), (1, SHA256));
        // Training checkpoints and hidden files do not count.
        std::fs::write(dir.join("model/checkpoints/y"), b"2").map_err(|e| Error::io(dir, e))?;
        std::fs::write(dir.join("model/.tmp"), b"2").map_err(|e| Error::io(dir, e))?;
        std::fs::write(dir.join("model/train/metrics.jsonl"), b"{}")
            .map_err(|e| Error::io(dir, e))?;
        assert_eq!(checksum(&dir.join("model"))?.digest, a.digest);
        std::fs::write(dir.join("model/model.json"), b"{ }").map_err(|e| Error::io(dir, e))?;
        assert_ne!(checksum(&dir.join("model"))?.digest, a.digest);
        // A single file: the plain SHA-256 of its bytes.
        let file = dir.join("abc");
        std::fs::write(&file, b"abc").map_err(|e| Error::io(&file, e))?;
        assert_eq!(
            checksum(&file)?.digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(checksum(&dir.join("missing")).is_err());
        Ok(())
    }

    #[test]
    fn large_files_are_sampled_at_both_ends() -> Result<()> {
        let tmp = temp("sampled")?;
        let dir = tmp.path();
        let file = dir.join("big.safetensors");
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let size = FULL_HASH_LIMIT + 3 * SAMPLE_BYTES;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.resize(size as usize, 7);
        std::fs::write(&file, &bytes).map_err(|e| Error::io(&file, e))?;
        let a = checksum(&file)?;
        assert_eq!(a.algorithm, SHA256_SAMPLED);
        let last = bytes.len() - 1;
        bytes[last] = 8;
        std::fs::write(&file, &bytes).map_err(|e| Error::io(&file, e))?;
        let b = checksum(&file)?;
        assert_ne!(a.digest, b.digest, "the last MiB is hashed");
        Ok(())
    }
}
