//! Image folders with one sub-folder per class (`root/<class>/<image>`), any format the `image`
//! crate reads.

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

/// Loads every image of every class folder under `root`; labels follow the sorted folder names.
/// An unreadable image is an error naming its file.
pub fn load(root: impl AsRef<Path>) -> Result<Dataset> {
    let classes = list(root)?;
    let mut names = Vec::with_capacity(classes.len());
    let mut items = Vec::new();
    for (label, (name, files)) in classes.into_iter().enumerate() {
        names.push(name);
        for file in files {
            items.push(Item {
                image: image_io::load(&file)?,
                label,
                source: file.display().to_string(),
            });
        }
    }
    Dataset::new(names, items)
}

/// The images of one flat folder (sorted by name; sub-folders and non-image files skipped), all
/// of class `from`, in a two-class dataset `[from, to]`: the inputs a user explains from `from`
/// towards `to` (`foil maskdime|diffusion --images DIR --from A --to B`).
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
    let items = files
        .into_iter()
        .map(|file| {
            Ok(Item {
                image: image_io::load(&file)?,
                label: 0,
                source: file.display().to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Dataset::new(vec![from.to_string(), to.to_string()], items)
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
        image_io::save(&it.image, &path)?;
    }
    Ok(())
}
