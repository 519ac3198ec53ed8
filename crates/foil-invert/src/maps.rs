//! Noise maps: the result of an inversion, kept as data and saved as safetensors.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, from_vec, to_vec_f32};
use foil_core::{Error, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

const FORMAT: &str = "foil-noise-maps/1";

/// What an edit-friendly inversion produced: the starting points `x_0 ..= x_N` (where
/// `x_0` is the input) and the noise maps `z_0 .. z_{N-1}`, with the timesteps and eta used.
///
/// Computed once per image, regenerated from many times (different conditions, skips); save it
/// with [`save`](Self::save) and reload it with [`load`](Self::load).
#[derive(Debug, Clone)]
pub struct NoiseMaps<B: Backend> {
    xs: Vec<Tensor<B, 4>>,
    zs: Vec<Tensor<B, 4>>,
    timesteps: Vec<usize>,
    eta: f64,
}

impl<B: Backend> NoiseMaps<B> {
    /// Assembles maps, checking that there is one more `x` than `z`, one `z` per timestep, and
    /// that every tensor has the same shape.
    pub fn new(
        xs: Vec<Tensor<B, 4>>,
        zs: Vec<Tensor<B, 4>>,
        timesteps: Vec<usize>,
        eta: f64,
    ) -> Result<Self> {
        if zs.is_empty() || xs.len() != zs.len() + 1 || zs.len() != timesteps.len() {
            return Err(Error::shape(
                "noise maps",
                format!(
                    "N >= 1 noise maps, N + 1 samples and N timesteps (N = {})",
                    timesteps.len()
                ),
                format!("{} noise maps, {} samples", zs.len(), xs.len()),
            ));
        }
        let dims = xs[0].dims();
        if let Some(bad) = xs.iter().chain(&zs).find(|t| t.dims() != dims) {
            return Err(Error::shape(
                "noise maps",
                fmt_dims(&dims),
                fmt_dims(&bad.dims()),
            ));
        }
        Ok(Self {
            xs,
            zs,
            timesteps,
            eta,
        })
    }

    /// Number of steps `N`.
    pub fn len(&self) -> usize {
        self.zs.len()
    }

    /// Always false: maps hold at least one step.
    pub fn is_empty(&self) -> bool {
        self.zs.is_empty()
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.xs[0].dims()[0]
    }

    /// The sample at step boundary `k` (`x(0)` is the inverted image, `x(N)` the noisiest).
    pub fn x(&self, k: usize) -> &Tensor<B, 4> {
        &self.xs[k]
    }

    /// The noise map of step `k`, applied when moving from `x(k + 1)` to `x(k)`.
    pub fn z(&self, k: usize) -> &Tensor<B, 4> {
        &self.zs[k]
    }

    /// The network timesteps, ascending, one per step.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// The eta the maps were made with.
    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// The maps of batch items `index..index + len`.
    pub fn slice(&self, index: usize, len: usize) -> Result<Self> {
        if len == 0 || index + len > self.batch_size() {
            return Err(Error::out_of_range(
                "batch slice",
                format!("a non-empty range inside 0..{}", self.batch_size()),
                format!("{index}..{}", index + len),
            ));
        }
        let cut = |v: &[Tensor<B, 4>]| v.iter().map(|t| t.clone().narrow(0, index, len)).collect();
        Ok(Self {
            xs: cut(&self.xs),
            zs: cut(&self.zs),
            timesteps: self.timesteps.clone(),
            eta: self.eta,
        })
    }

    /// The maps of the batch items `indices` (in that order).
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.batch_size()) {
            return Err(Error::out_of_range(
                "batch index",
                format!("below {}", self.batch_size()),
                bad,
            ));
        }
        if indices.is_empty() {
            return Err(Error::Empty {
                what: "batch indices".into(),
                hint: "select at least one item".into(),
            });
        }
        let device = self.xs[0].device();
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(idx, [indices.len()]),
            &device,
        );
        let pick =
            |v: &[Tensor<B, 4>]| v.iter().map(|t| t.clone().select(0, idx.clone())).collect();
        Ok(Self {
            xs: pick(&self.xs),
            zs: pick(&self.zs),
            timesteps: self.timesteps.clone(),
            eta: self.eta,
        })
    }

    /// Writes the maps to a safetensors file (`x.{k}`, `z.{k}` as `f32`; timesteps and eta in
    /// the metadata), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let dims: Vec<usize> = self.xs[0].dims().to_vec();
        let mut buffers = Vec::with_capacity(self.xs.len() + self.zs.len());
        for (prefix, list) in [("x", &self.xs), ("z", &self.zs)] {
            for (k, t) in list.iter().enumerate() {
                let bytes: Vec<u8> = to_vec_f32(t)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                buffers.push((format!("{prefix}.{k}"), bytes));
            }
        }
        let views = buffers
            .iter()
            .map(|(name, bytes)| {
                TensorView::new(Dtype::F32, dims.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::format("noise maps", e))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (
                "timesteps".to_string(),
                serde_json::to_string(&self.timesteps)
                    .map_err(|e| Error::format("noise maps", e))?,
            ),
            ("eta".to_string(), self.eta.to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::format(path.display().to_string(), e))?;
        foil_core::image_io::write_atomic(path, &bytes)
    }

    /// Reads maps written by [`save`](Self::save) onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(what.clone(), e))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(Error::format(
                what.clone(),
                format!(
                    "expected metadata format {FORMAT:?}, found {:?}",
                    meta.get("format")
                ),
            ));
        }
        let timesteps: Vec<usize> = meta
            .get("timesteps")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                Error::format(what.clone(), "missing or malformed timesteps metadata")
            })?;
        let eta: f64 = meta
            .get("eta")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::format(what.clone(), "missing or malformed eta metadata"))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(what.clone(), e))?;
        let read = |name: String| -> Result<Tensor<B, 4>> {
            let view = st
                .tensor(&name)
                .map_err(|_| Error::format(what.clone(), format!("missing tensor {name}")))?;
            if view.dtype() != Dtype::F32 {
                return Err(Error::format(
                    what.clone(),
                    format!("{name}: expected F32, found {:?}", view.dtype()),
                ));
            }
            let shape: [usize; 4] = view.shape().try_into().map_err(|_| {
                Error::shape(
                    format!("{what}: {name}"),
                    "4 dimensions",
                    fmt_dims(view.shape()),
                )
            })?;
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            from_vec(values, shape, device)
        };
        let n = timesteps.len();
        let xs = (0..=n)
            .map(|k| read(format!("x.{k}")))
            .collect::<Result<Vec<_>>>()?;
        let zs = (0..n)
            .map(|k| read(format!("z.{k}")))
            .collect::<Result<Vec<_>>>()?;
        Self::new(xs, zs, timesteps, eta)
    }
}
