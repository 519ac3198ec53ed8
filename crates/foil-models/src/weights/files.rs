//! Finding the weight files of a published model in its folder, under the names diffusers and
//! transformers save them with: one file, a sharded set with its `.index.json`, the `.fp16`
//! variant, or PyTorch's `.bin`.
//!
//! ```no_run
//! use foil_models::weights::{TensorFile, find_weight_files};
//! # fn main() -> foil_core::Result<()> {
//! // kandinsky-2-2-decoder/unet holds diffusion_pytorch_model.safetensors (or its shards).
//! let files = find_weight_files("kandinsky-2-2-decoder/unet".as_ref(), "diffusion_pytorch_model")?;
//! let unet = TensorFile::open_many(&files)?;
//! // The same in one call; for a transformers model (CLIP ViT-bigG) the stem is `model`.
//! let clip = TensorFile::open_folder("CLIP-ViT-bigG-14-laion2B-39B-b160k", "model")?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use foil_core::{Error, Result};

/// The largest `.index.json` read; real ones are well under a megabyte.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The file names [`find_weight_files`] looks for in a folder, in the order it tries them, for
/// `stem` (`diffusion_pytorch_model` for diffusers, `model` or `pytorch_model` for
/// transformers): `<stem>.safetensors`, `<stem>.safetensors.index.json`, the same with `.fp16`
/// before `.safetensors`, then `<stem>.bin`, `<stem>.bin.index.json`, `<stem>.fp16.bin` and
/// `<stem>.fp16.bin.index.json`; for `model`, transformers' `pytorch_model.bin` and
/// `pytorch_model.bin.index.json` last.
pub fn weight_file_names(stem: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        ".safetensors",
        ".safetensors.index.json",
        ".fp16.safetensors",
        ".fp16.safetensors.index.json",
        ".bin",
        ".bin.index.json",
        ".fp16.bin",
        ".fp16.bin.index.json",
    ]
    .iter()
    .map(|ext| format!("{stem}{ext}"))
    .collect();
    if stem == "model" {
        names.push("pytorch_model.bin".into());
        names.push("pytorch_model.bin.index.json".into());
    }
    names
}

/// The weight files of the model saved under `stem` in `dir`: the first of
/// [`weight_file_names`] that exists, and for an `.index.json` the distinct shard files of its
/// `weight_map` in sorted order (each must exist in `dir`).
///
/// Fails with an [`Error::Io`] naming the folder and every name looked for when none exists
/// (or the folder does not), and with an [`Error::Format`] naming the index when it is not a
/// readable `weight_map` or names a file outside the folder.
pub fn find_weight_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        let why = if dir.exists() {
            std::io::Error::new(ErrorKind::NotADirectory, "not a folder")
        } else {
            std::io::Error::new(ErrorKind::NotFound, "no such folder")
        };
        return Err(Error::io(dir, why));
    }
    let names = weight_file_names(stem);
    for name in &names {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        return if name.ends_with(".index.json") {
            shards_of_index(&path)
        } else {
            Ok(vec![path])
        };
    }
    let mut detail = format!("no weight file: looked for {}", names.join(", "));
    let present = weight_like_files(dir);
    if !present.is_empty() {
        detail.push_str(&format!("; the folder holds {}", present.join(", ")));
    }
    Err(Error::io(
        dir,
        std::io::Error::new(ErrorKind::NotFound, detail),
    ))
}

/// The shard files an `.index.json` (`{"weight_map": {tensor: file}}`) names, distinct and
/// sorted, each checked to exist beside the index.
fn shards_of_index(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let what = index.display().to_string();
    let len = std::fs::metadata(index)
        .map_err(|e| Error::io(index, e))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(Error::format(
            what,
            format!("{len} bytes is too large for a weight index (limit {MAX_INDEX_BYTES})"),
        ));
    }
    let bytes = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(what.clone(), format!("not a weight index: {e}")))?;
    let files: BTreeSet<&str> = parsed.weight_map.values().map(String::as_str).collect();
    if files.is_empty() {
        return Err(Error::format(what, "the weight_map names no file"));
    }
    let dir = index.parent().unwrap_or(Path::new(""));
    files
        .into_iter()
        .map(|file| {
            let mut parts = Path::new(file).components();
            if !matches!(
                (parts.next(), parts.next()),
                (Some(Component::Normal(_)), None)
            ) {
                return Err(Error::format(
                    what.clone(),
                    format!("shard {file:?} is not a file name in the index's folder"),
                ));
            }
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::io(
                    path,
                    std::io::Error::new(
                        ErrorKind::NotFound,
                        format!("shard listed in {what} is missing (an incomplete download?)"),
                    ),
                ));
            }
            Ok(path)
        })
        .collect()
}

/// Up to ten `.safetensors`, `.bin`, `.pt`, `.pth` or `.ckpt` files of `dir`, sorted, for the
/// error when none has an expected name.
fn weight_like_files(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            [
                ".safetensors",
                ".bin",
                ".pt",
                ".pth",
                ".ckpt",
                ".index.json",
            ]
            .iter()
            .any(|ext| name.ends_with(ext))
        })
        .collect();
    names.sort();
    names.truncate(10);
    names
}
