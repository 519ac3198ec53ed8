//! Named tensors from safetensors and PyTorch files, with one error listing everything that did
//! not fit, and [`Weights`], the one builder every network of this crate is made with.

mod builder;
#[cfg(test)]
mod pinned_init;

pub use builder::{Init, Weights};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Error, Result};
use safetensors::{Dtype, SafeTensors};

/// The tensors of a safetensors file, taken out by name as a network is built.
///
/// Every `take` that fails is recorded rather than returned at once; [`finish`](Self::finish)
/// then reports all missing, wrongly shaped and unexpected tensors together.
#[derive(Debug)]
pub struct TensorFile {
    what: String,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    used: BTreeSet<String>,
    taken: BTreeSet<String>,
    missing: Vec<(String, Vec<usize>)>,
    mismatched: Vec<WrongShape>,
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
}

impl Mismatches {
    /// Whether everything fitted.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.wrong_shape.is_empty() && self.unexpected.is_empty()
    }

    /// The error for file `what`: `the weights do not fit the network:` then one line each for
    /// the missing, wrongly shaped and unexpected tensors; `Ok` when everything fitted.
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
        let mut detail = String::from("the weights do not fit the network:");
        for (label, list) in [
            ("missing", &missing),
            ("wrong shape", &wrong),
            ("unexpected", &self.unexpected),
        ] {
            if !list.is_empty() {
                detail.push_str(&format!("\n  {label}: {}", list.join(", ")));
            }
        }
        Err(Error::format(what.to_owned(), detail))
    }
}

impl TensorFile {
    /// Reads all tensors (F32, F16, BF16, F64, I64 or I32, converted to `f32`) of a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path.display().to_string())
    }

    /// Reads a weight file by its extension: PyTorch (`.pt`, `.pth`, `.bin`, `.ckpt`) through
    /// burn-store's reader, anything else as safetensors.
    pub fn open_any(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ["pt", "pth", "bin", "ckpt"].contains(&ext.as_str()) {
            Self::open_pytorch(path, None)
        } else {
            Self::open(path)
        }
    }

    /// Reads a PyTorch checkpoint (`torch.save` of a state dict, zip or legacy format) through
    /// burn-store's `PytorchReader`, converting every tensor to `f32`. `top_level_key` picks a
    /// nested state dict (for example `"state_dict"` or `"model"`).
    pub fn open_pytorch(path: impl AsRef<Path>, top_level_key: Option<&str>) -> Result<Self> {
        use burn_store::pytorch::PytorchReader;
        let path = path.as_ref();
        let what = path.display().to_string();
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let reader = match top_level_key {
            Some(key) => PytorchReader::with_top_level_key(path, key),
            None => PytorchReader::new(path),
        }
        .map_err(|e| {
            Error::format(
                what.clone(),
                format!("not a readable PyTorch checkpoint: {e}"),
            )
        })?;
        let mut tensors = BTreeMap::new();
        for (name, snapshot) in reader.into_tensors() {
            let data = snapshot
                .to_data()
                .map_err(|e| Error::format(what.clone(), format!("{name}: {e:?}")))?;
            let shape = data.shape.to_vec();
            let values = data
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| Error::format(what.clone(), format!("{name}: {e:?}")))?;
            tensors.insert(name, (shape, values));
        }
        Ok(Self::from_map(what, tensors))
    }

    fn from_map(what: String, tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Self {
        Self {
            what,
            tensors,
            used: BTreeSet::new(),
            taken: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
        }
    }

    /// Reads tensors from safetensors bytes; `what` names them in errors.
    pub fn from_bytes(bytes: &[u8], what: impl Into<String>) -> Result<Self> {
        let what = what.into();
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::format(what.clone(), e))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                    .collect(),
                // Integer buffers (`num_batches_tracked` of a torch state dict saved as is).
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|b| {
                        i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
                Dtype::I32 => data
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                    .collect(),
                other => {
                    return Err(Error::format(
                        what.clone(),
                        format!("{name}: unsupported dtype {other:?}"),
                    ));
                }
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self::from_map(what, tensors))
    }

    /// The names of all tensors in the file, in sorted order (taken ones included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes tensor `name` with `shape`; on failure records it and returns zeros so building can
    /// go on and every problem is reported by [`finish`](Self::finish).
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
            Some((found, _)) if found.as_slice() != shape.as_slice() => {
                self.mismatched.push(WrongShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: Some(found.clone()),
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
            Some((_, values)) => {
                self.used.insert(name.to_string());
                self.taken.insert(name.to_string());
                // Move the values out: a large checkpoint is never held twice in memory.
                Tensor::from_data(TensorData::new(std::mem::take(values), shape), device)
            }
        };
        Param::from_tensor(tensor)
    }

    /// Marks tensors as known but unused (buffers the network recomputes), so they are not
    /// reported as unexpected.
    pub fn ignore(&mut self, names: impl IntoIterator<Item = impl Into<String>>) {
        self.used.extend(names.into_iter().map(Into::into));
    }

    /// What did not fit so far: the missing and wrongly shaped tensors, and the tensors nothing
    /// has taken or ignored yet.
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
        }
    }

    /// The name the file was opened under (its path), as errors show it.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Like [`finish`](Self::finish) without consuming the file.
    pub fn check(&self) -> Result<()> {
        self.mismatches().into_result(&self.what)
    }

    /// Succeeds if every requested tensor was found with its shape and none was left over;
    /// otherwise one [`Error::Format`] lists the missing, mismatched and unexpected tensors.
    pub fn finish(self) -> Result<()> {
        self.check()
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
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
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
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
