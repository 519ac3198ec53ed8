//! Named tensors from safetensors and PyTorch files, with one error listing everything that did
//! not fit, and [`Weights`], the one builder every network of this crate is made with.
//!
//! A [`TensorFile`] opened from a path reads only the file's table of tensors; each tensor's
//! bytes are read and converted to `f32` when it is taken, so loading a model holds its `f32`
//! parameters and little else (no copy of the file beside them). Sharded checkpoints open as one
//! ([`TensorFile::open_many`], [`TensorFile::open_folder`], [`find_weight_files`]).

mod builder;
pub mod files;
#[cfg(test)]
mod pinned_init;
mod pytorch_check;
mod pytorch_file;
mod safetensors_file;

pub use builder::{Init, Weights};
pub use files::{find_weight_files, weight_file_names};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Error, Result};
use safetensors::SafeTensors;

use pytorch_file::PytorchFile;
use safetensors_file::Dtype;

/// The tensors of one or more weight files (safetensors or PyTorch), taken out by name as a
/// network is built.
///
/// Opened from a path, only the file's table of tensors is read; a tensor's bytes are read and
/// converted to `f32` by [`take`](Self::take), and given up to the taker.
///
/// Every `take` that fails is recorded rather than returned at once; [`finish`](Self::finish)
/// then reports all missing, wrongly shaped, unreadable and unexpected tensors together.
#[derive(Debug)]
pub struct TensorFile {
    what: String,
    sources: Vec<Source>,
    tensors: BTreeMap<String, Stored>,
    used: BTreeSet<String>,
    taken: BTreeSet<String>,
    missing: Vec<(String, Vec<usize>)>,
    mismatched: Vec<WrongShape>,
    unreadable: Vec<(String, String)>,
}

/// One tensor of a [`TensorFile`]: its shape and where its values are.
#[derive(Debug)]
struct Stored {
    shape: Vec<usize>,
    data: Data,
}

/// Where a tensor's values are.
#[derive(Debug)]
enum Data {
    /// Converted already (from bytes in memory).
    Values(Vec<f32>),
    /// In safetensors file `sources[source]`.
    Safetensors {
        source: usize,
        entry: safetensors_file::Entry,
    },
    /// In PyTorch checkpoint `sources[source]`, under the tensor's name.
    Pytorch { source: usize },
    /// Moved into a taker (or unreadable).
    Taken,
}

/// A file a [`TensorFile`] reads from.
#[derive(Debug)]
enum Source {
    Safetensors { path: PathBuf, file: File },
    Pytorch { path: PathBuf, file: PytorchFile },
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Safetensors { path, .. } | Source::Pytorch { path, .. } => path,
        }
    }
}

/// A tensor that was found but could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongShape {
    /// The tensor's name.
    pub name: String,
    /// The shape the network asked for.
    pub expected: Vec<usize>,
    /// The shape in the file, or `None` when the tensor was asked for twice (its values had
    /// already moved into the first taker).
    pub found: Option<Vec<usize>>,
}

/// Everything that did not fit while a network took its tensors from a [`TensorFile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mismatches {
    /// Requested tensors the file lacks, with the requested shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Tensors found with another shape (or taken twice).
    pub wrong_shape: Vec<WrongShape>,
    /// Tensors of the file that nothing took or ignored, in sorted order.
    pub unexpected: Vec<String>,
    /// Tensors whose bytes could not be read when taken (the file changed or failed after it
    /// was opened), with the reason.
    pub unreadable: Vec<(String, String)>,
}

impl Mismatches {
    /// Whether everything fitted.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_shape.is_empty()
            && self.unexpected.is_empty()
            && self.unreadable.is_empty()
    }

    /// The error for file `what`: `the weights do not fit the network:` then one line each for
    /// the missing, wrongly shaped, unexpected and unreadable tensors; `Ok` when everything
    /// fitted.
    pub fn into_result(self, what: &str) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let missing: Vec<String> = self
            .missing
            .iter()
            .map(|(name, shape)| format!("{name} {}", fmt_dims(shape)))
            .collect();
        let wrong: Vec<String> = self
            .wrong_shape
            .iter()
            .map(|w| match &w.found {
                Some(found) => format!(
                    "{}: expected {}, found {}",
                    w.name,
                    fmt_dims(&w.expected),
                    fmt_dims(found)
                ),
                None => format!("{}: taken twice", w.name),
            })
            .collect();
        let unreadable: Vec<String> = self
            .unreadable
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        let mut detail = String::from("the weights do not fit the network:");
        for (label, list) in [
            ("missing", &missing),
            ("wrong shape", &wrong),
            ("unexpected", &self.unexpected),
            ("unreadable", &unreadable),
        ] {
            if !list.is_empty() {
                detail.push_str(&format!("\n  {label}: {}", list.join(", ")));
            }
        }
        Err(Error::format(what.to_owned(), detail))
    }
}

impl TensorFile {
    /// Opens a safetensors file: reads and checks its header (names, dtypes F32, F16, BF16, F64,
    /// I64 or I32, shapes, offsets within the file); each tensor is read and converted to `f32`
    /// when taken.
    ///
    /// A truncated or corrupt file is an [`Error::Format`] naming it; a missing one an
    /// [`Error::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = Self::empty(path.display().to_string());
        file.add_safetensors(path)?;
        Ok(file)
    }

    /// Opens a weight file by its extension: PyTorch (`.pt`, `.pth`, `.bin`, `.ckpt`) through
    /// burn-store's reader, anything else as safetensors.
    pub fn open_any(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if is_pytorch(path) {
            Self::open_pytorch(path, None)
        } else {
            Self::open(path)
        }
    }

    /// Opens several weight files (the shards of one checkpoint) as one, each by its extension
    /// as [`open_any`](Self::open_any) does. A tensor name in two files is an [`Error::Format`]
    /// naming both; no file at all an [`Error::Empty`]. Errors name the files joined by `, `.
    pub fn open_many<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self> {
        let paths: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| p.as_ref().to_path_buf())
            .collect();
        if paths.is_empty() {
            return Err(Error::Empty {
                what: "weight files".into(),
                hint: "give at least one safetensors or PyTorch file".into(),
            });
        }
        let what = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut file = Self::empty(what);
        for path in &paths {
            if is_pytorch(path) {
                file.add_pytorch(path, None)?;
            } else {
                file.add_safetensors(path)?;
            }
        }
        Ok(file)
    }

    /// Opens the weights saved under `stem` in folder `dir` (`diffusion_pytorch_model` for a
    /// diffusers model, `model` for a transformers one): [`find_weight_files`] then
    /// [`open_many`](Self::open_many).
    pub fn open_folder(dir: impl AsRef<Path>, stem: &str) -> Result<Self> {
        Self::open_many(find_weight_files(dir.as_ref(), stem)?)
    }

    /// Opens a PyTorch checkpoint (`torch.save` of a state dict, zip or legacy format) through
    /// burn-store's `PytorchReader`; each tensor is read and converted to `f32` when taken.
    /// `top_level_key` picks a nested state dict (for example `"state_dict"` or `"model"`).
    pub fn open_pytorch(path: impl AsRef<Path>, top_level_key: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = Self::empty(path.display().to_string());
        file.add_pytorch(path, top_level_key)?;
        Ok(file)
    }

    /// Reads tensors from safetensors bytes (converted to `f32` at once); `what` names them in
    /// errors.
    pub fn from_bytes(bytes: &[u8], what: impl Into<String>) -> Result<Self> {
        let what = what.into();
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::format(what.clone(), e))?;
        let mut file = Self::empty(what);
        for (name, view) in st.tensors() {
            let Some(dtype) = Dtype::from_safetensors(view.dtype()) else {
                return Err(Error::format(
                    file.what.clone(),
                    format!("{name}: unsupported dtype {:?}", view.dtype()),
                ));
            };
            let mut values = Vec::with_capacity(view.data().len() / dtype.size());
            dtype.extend_f32(view.data(), &mut values);
            let shape = view.shape().to_vec();
            let data = Data::Values(values);
            file.tensors.insert(name, Stored { shape, data });
        }
        Ok(file)
    }

    /// Tensors `(name, PyTorch shape, values)` already in memory, as a file of them would
    /// give them: for weights converted by the caller, or random weights in a publisher's
    /// layout (a network built from them holds its parameters as a loaded one does). A value
    /// count that is not its shape's product, or a name given twice, is an [`Error::Format`]
    /// naming the tensor; `what` names them in errors.
    pub fn from_values(
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
        what: impl Into<String>,
    ) -> Result<Self> {
        let mut file = Self::empty(what.into());
        for (name, shape, values) in tensors {
            let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if expected != Some(values.len()) {
                let holds = expected.map_or("more values than memory".into(), |n| n.to_string());
                return Err(Error::format(
                    file.what.clone(),
                    format!(
                        "{name}: shape {} holds {holds}, found {} values",
                        fmt_dims(&shape),
                        values.len()
                    ),
                ));
            }
            if file.tensors.contains_key(&name) {
                return Err(Error::format(
                    file.what.clone(),
                    format!("{name}: given twice"),
                ));
            }
            let data = Data::Values(values);
            file.tensors.insert(name, Stored { shape, data });
        }
        Ok(file)
    }

    fn empty(what: String) -> Self {
        Self {
            what,
            sources: Vec::new(),
            tensors: BTreeMap::new(),
            used: BTreeSet::new(),
            taken: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            unreadable: Vec::new(),
        }
    }

    /// Adds the tensors of safetensors file `path` (its header only).
    fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let handle = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = handle.metadata().map_err(|e| Error::io(path, e))?.len();
        let entries = safetensors_file::parse_header(&handle, len, &path.display().to_string())?;
        let source = self.sources.len();
        let stored = entries.into_iter().map(|entry| {
            let shape = entry.shape.clone();
            let name = entry.name.clone();
            let data = Data::Safetensors { source, entry };
            (name, Stored { shape, data })
        });
        self.insert_all(path, stored)?;
        self.sources.push(Source::Safetensors {
            path: path.to_path_buf(),
            file: handle,
        });
        Ok(())
    }

    /// Adds the tensors of PyTorch checkpoint `path` (its pickle only).
    fn add_pytorch(&mut self, path: &Path, top_level_key: Option<&str>) -> Result<()> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let (reader, tensors) =
            pytorch_file::open(path, top_level_key, &path.display().to_string())?;
        let source = self.sources.len();
        let stored = tensors.into_iter().map(|(name, shape)| {
            let data = Data::Pytorch { source };
            (name, Stored { shape, data })
        });
        self.insert_all(path, stored)?;
        self.sources.push(Source::Pytorch {
            path: path.to_path_buf(),
            file: reader,
        });
        Ok(())
    }

    /// Inserts the tensors of file `path`; a name already present (from another file) fails,
    /// naming both files.
    fn insert_all(
        &mut self,
        path: &Path,
        stored: impl IntoIterator<Item = (String, Stored)>,
    ) -> Result<()> {
        for (name, tensor) in stored {
            if let Some(earlier) = self.tensors.get(&name) {
                let other = match earlier.data {
                    Data::Safetensors { source, .. } | Data::Pytorch { source } => {
                        self.sources.get(source).map(Source::path)
                    }
                    Data::Values(_) | Data::Taken => None,
                };
                let other = other.map_or_else(|| self.what.clone(), |p| p.display().to_string());
                return Err(Error::format(
                    path.display().to_string(),
                    format!("tensor {name} is also in {other}; shards must not overlap"),
                ));
            }
            self.tensors.insert(name, tensor);
        }
        Ok(())
    }

    /// The names of all tensors in the file, in sorted order (taken ones included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of tensor `name` in the file (taken or not), `None` if it has none.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Takes tensor `name` with `shape`, reading its values from the file now; on failure
    /// records it and returns zeros so building can go on and every problem is reported by
    /// [`finish`](Self::finish).
    pub fn take<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let tensor = match self.tensors.get_mut(name) {
            None => {
                self.missing.push((name.to_string(), shape.to_vec()));
                Tensor::zeros(shape, device)
            }
            Some(found) if found.shape.as_slice() != shape.as_slice() => {
                self.mismatched.push(WrongShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: Some(found.shape.clone()),
                });
                self.used.insert(name.to_string());
                Tensor::zeros(shape, device)
            }
            Some(_) if self.taken.contains(name) => {
                // The values were moved into the first taker; a second take is a loader bug.
                self.mismatched.push(WrongShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: None,
                });
                Tensor::zeros(shape, device)
            }
            Some(found) => {
                self.used.insert(name.to_string());
                self.taken.insert(name.to_string());
                // Move the values out: a large checkpoint is never held twice in memory.
                let data = std::mem::replace(&mut found.data, Data::Taken);
                let numel: usize = shape.iter().product();
                match read(&self.sources, name, data) {
                    Ok(values) if values.len() == numel => {
                        Tensor::from_data(TensorData::new(values, shape), device)
                    }
                    Ok(values) => {
                        let why = format!("{} values for shape {}", values.len(), fmt_dims(&shape));
                        self.unreadable.push((name.to_string(), why));
                        Tensor::zeros(shape, device)
                    }
                    Err(why) => {
                        self.unreadable.push((name.to_string(), why));
                        Tensor::zeros(shape, device)
                    }
                }
            }
        };
        Param::from_tensor(tensor)
    }

    /// Marks tensors as known but unused (buffers the network recomputes), so they are not
    /// reported as unexpected.
    pub fn ignore(&mut self, names: impl IntoIterator<Item = impl Into<String>>) {
        self.used.extend(names.into_iter().map(Into::into));
    }

    /// What did not fit so far: the missing, wrongly shaped and unreadable tensors, and the
    /// tensors nothing has taken or ignored yet.
    pub fn mismatches(&self) -> Mismatches {
        Mismatches {
            missing: self.missing.clone(),
            wrong_shape: self.mismatched.clone(),
            unexpected: self
                .tensors
                .keys()
                .filter(|k| !self.used.contains(*k))
                .cloned()
                .collect(),
            unreadable: self.unreadable.clone(),
        }
    }

    /// The name the file was opened under (its path, or the paths of its shards joined by
    /// `, `), as errors show it.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Like [`finish`](Self::finish) without consuming the file.
    pub fn check(&self) -> Result<()> {
        self.mismatches().into_result(&self.what)
    }

    /// Succeeds if every requested tensor was found with its shape and read, and none was left
    /// over; otherwise one [`Error::Format`] lists the missing, mismatched, unreadable and
    /// unexpected tensors.
    pub fn finish(self) -> Result<()> {
        self.check()
    }
}

/// The values of tensor `name`, read now from its file in `sources` unless already in memory.
fn read(sources: &[Source], name: &str, data: Data) -> std::result::Result<Vec<f32>, String> {
    match data {
        Data::Values(values) => Ok(values),
        Data::Taken => Err("taken already".to_string()),
        Data::Safetensors { source, entry } => match sources.get(source) {
            Some(Source::Safetensors { path, file }) => safetensors_file::read_values(file, &entry)
                .map_err(|e| format!("reading {}: {e}", path.display())),
            _ => Err("its file is not open".to_string()),
        },
        Data::Pytorch { source } => match sources.get(source) {
            Some(Source::Pytorch { file, .. }) => file.read(name),
            _ => Err("its file is not open".to_string()),
        },
    }
}

/// Whether `path` names a PyTorch checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt`).
fn is_pytorch(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    ["pt", "pth", "bin", "ckpt"].contains(&ext.as_str())
}

/// Writes float32 tensors `(name, shape, values)` as a safetensors file, atomically (a
/// temporary file renamed into place), with `metadata` in its header.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, &str)],
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::format(path.display().to_string(), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let serialized = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path.display().to_string(), e))?;
    foil_core::image_io::write_atomic(path, &serialized)
}
