//! Image folders with one sub-folder per class (`root/<class>/<image>`), any format the `image`
//! crate reads.
//!
//! Loading lists the files and reads each one's header (format and size, a few bytes), so a
//! file that is not an image is reported before any work starts; the pixels are decoded only
//! when a batch needs them ([`Dataset::tensors`], [`Item::decode`]). Memory therefore follows
//! the batch, not the folder: listing 50,000 files costs their paths (`docs/scale.md`).

use std::path::{Path, PathBuf};

use foil_core::{Error, Result, image_io};

use crate::dataset::{Dataset, Item};

/// File extensions read as images (lower case).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// The class folders under `root` (sorted by name; hidden folders skipped) and their image files.
pub fn list(root: impl AsRef<Path>) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let root = root.as_ref();
    let mut classes = Vec::new();
    for dir in sorted_entries(root)? {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !dir.is_dir() || name.starts_with('.') {
            continue;
        }
        let files: Vec<PathBuf> = sorted_entries(&dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            return Err(Error::Empty {
                what: format!("class folder {}", dir.display()).into(),
                hint: format!(
                    "put images ({}) in it, or remove it",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
        classes.push((name, files));
    }
    if classes.is_empty() {
        return Err(Error::Empty {
            what: format!("dataset folder {}", root.display()).into(),
            hint: "expected one sub-folder per class, each holding images".into(),
        });
    }
    Ok(classes)
}

/// Reads the header of an image file (its format and size, not its pixels): a file that is
/// missing, unreadable or not an image is an error naming it.
pub fn check_header(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|source| match source {
            image::ImageError::IoError(e) => Error::io(path, e),
            source => Error::Image {
                path: path.to_path_buf(),
                source,
            },
        })
}

/// The files as items of `label`, decoded on demand; each file's header is checked now.
fn file_items(files: Vec<PathBuf>, label: usize) -> Result<Vec<Item>> {
    files
        .into_iter()
        .map(|file| {
            check_header(&file)?;
            Ok(Item::file(file, label))
        })
        .collect()
}

/// Every image of every class folder under `root`, labels following the sorted folder names.
/// The files are listed and their headers checked (a file that is not an image is an error
/// naming it); their pixels are decoded when a batch needs them.
pub fn load(root: impl AsRef<Path>) -> Result<Dataset> {
    let classes = list(root)?;
    let mut names = Vec::with_capacity(classes.len());
    let mut items = Vec::new();
    for (label, (name, files)) in classes.into_iter().enumerate() {
        names.push(name);
        items.extend(file_items(files, label)?);
    }
    Dataset::new(names, items)
}

/// The images of one flat folder (sorted by name; sub-folders and non-image files skipped), all
/// of class `from`, in a two-class dataset `[from, to]`: the inputs a user explains from `from`
/// towards `to` (`foil maskdime|diffusion --images DIR --from A --to B`). Listed and
/// header-checked as [`load`]; decoded batch by batch.
pub fn load_flat(dir: impl AsRef<Path>, from: &str, to: &str) -> Result<Dataset> {
    let dir = dir.as_ref();
    if from == to {
        return Err(Error::out_of_range(
            "--from and --to",
            "two different class names",
            format!("{from:?} twice"),
        ));
    }
    let files: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    if files.is_empty() {
        return Err(Error::Empty {
            what: format!("image folder {}", dir.display()).into(),
            hint: format!("put images ({}) in it", IMAGE_EXTENSIONS.join(", ")),
        });
    }
    Dataset::new(
        vec![from.to_string(), to.to_string()],
        file_items(files, 0)?,
    )
}

/// Writes a dataset as class folders of PNG files (`root/<class>/<index>.png`), atomically per
/// file, so it can be read back with [`load`] or inspected by eye.
pub fn save(data: &Dataset, root: impl AsRef<Path>) -> Result<()> {
    let root = root.as_ref();
    for name in data.class_names() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    for (i, it) in data.items().iter().enumerate() {
        let path = root
            .join(&data.class_names()[it.label])
            .join(format!("{i:05}.png"));
        image_io::save(&*it.decode()?, &path)?;
    }
    Ok(())
}
