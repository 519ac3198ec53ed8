//! Class statistics: means of L2-normalised embeddings.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Error, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::Direction;

const FORMAT: &str = "foil-class-stats/1";

/// Accumulates embeddings class by class; [`build`](Self::build) gives the [`ClassStats`].
#[derive(Debug, Clone)]
pub struct ClassStatsBuilder {
    encoder: String,
    dim: usize,
    classes: Vec<(String, Vec<f64>, usize)>,
}

impl ClassStatsBuilder {
    /// Statistics of `dim`-wide embeddings made by the encoder named `encoder`
    /// (`ImageEncoder::identity`).
    pub fn new(encoder: impl Into<String>, dim: usize) -> Self {
        Self {
            encoder: encoder.into(),
            dim,
            classes: Vec::new(),
        }
    }

    /// Adds embeddings `[N, D]` of class `name` (any number of calls per class). Each row is
    /// L2-normalised before it is summed; zero-norm or non-finite rows are errors.
    pub fn add<B: Backend>(&mut self, name: &str, embeddings: Tensor<B, 2>) -> Result<&mut Self> {
        let [n, d] = embeddings.dims();
        if d != self.dim {
            return Err(Error::shape(
                format!("embeddings of class {name:?}"),
                format!("[N, {}] (the encoder's width)", self.dim),
                fmt_dims(&[n, d]),
            ));
        }
        let values = to_vec_f32(&embeddings)?;
        let pos = match self.classes.iter().position(|(c, ..)| c == name) {
            Some(p) => p,
            None => {
                self.classes.push((name.to_string(), vec![0.0; d], 0));
                self.classes.len() - 1
            }
        };
        let (_, sum, count) = &mut self.classes[pos];
        for (i, row) in values.chunks_exact(d).enumerate() {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(Error::non_finite(
                    format!("embedding {i} of class {name:?}"),
                    "",
                ));
            }
            let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            if norm == 0.0 {
                return Err(Error::out_of_range(
                    format!("norm of embedding {i} of class {name:?}"),
                    "> 0 (a zero embedding has no direction)",
                    0,
                ));
            }
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += v as f64 / norm;
            }
            *count += 1;
        }
        Ok(self)
    }

    /// The statistics; every class added must have at least one embedding.
    pub fn build(&self) -> Result<ClassStats> {
        if self.classes.is_empty() {
            return Err(Error::Empty {
                what: "class statistics".into(),
                hint: "add embeddings of at least one class".into(),
            });
        }
        let mut means = Vec::with_capacity(self.classes.len());
        for (name, sum, count) in &self.classes {
            if *count == 0 {
                return Err(Error::Empty {
                    what: format!("class {name:?}").into(),
                    hint: "give it at least one image".into(),
                });
            }
            means.push(sum.iter().map(|s| s / *count as f64).collect());
        }
        Ok(ClassStats {
            encoder: self.encoder.clone(),
            names: self.classes.iter().map(|(n, ..)| n.clone()).collect(),
            counts: self.classes.iter().map(|(_, _, c)| *c).collect(),
            means,
        })
    }
}

/// Per-class means of L2-normalised embeddings, with class names, counts and the encoder's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStats {
    encoder: String,
    names: Vec<String>,
    counts: Vec<usize>,
    means: Vec<Vec<f64>>,
}

impl ClassStats {
    /// The identity of the encoder the embeddings came from.
    pub fn encoder(&self) -> &str {
        &self.encoder
    }

    /// Class names, in the order they were added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of embeddings per class.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// Index of class `name`.
    pub fn index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::format(
                "class name",
                format!("no class {name:?}; the statistics hold {:?}", self.names),
            )
        })
    }

    /// The mean of class `name`.
    pub fn mean(&self, name: &str) -> Result<&[f64]> {
        Ok(&self.means[self.index(name)?])
    }

    /// The mean embedding of class `name` scaled to unit norm (in `f64`, then rounded to `f32`);
    /// an error if the mean is zero or not a number.
    pub fn unit_mean(&self, name: &str) -> Result<Vec<f32>> {
        let mean = self.mean(name)?;
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm.is_nan() || norm <= 0.0 {
            return Err(Error::out_of_range(
                format!("norm of the mean embedding of {name:?}"),
                "> 0",
                norm,
            ));
        }
        Ok(mean.iter().map(|v| (v / norm) as f32).collect())
    }

    /// The direction from class `from` to class `to`: `mu_to - mu_from`.
    pub fn direction(&self, from: &str, to: &str) -> Result<Direction> {
        let (a, b) = (self.mean(from)?, self.mean(to)?);
        Ok(Direction::new(
            from,
            to,
            b.iter().zip(a).map(|(b, a)| b - a).collect(),
        ))
    }

    /// Returns an error unless these statistics were made by the encoder `identity`.
    pub fn check_encoder(&self, identity: &str) -> Result<()> {
        if self.encoder == identity {
            Ok(())
        } else {
            Err(Error::format(
                "class statistics",
                format!(
                    "made with encoder {:?}, used with {identity:?}",
                    self.encoder
                ),
            ))
        }
    }

    /// Writes the statistics as safetensors (`means` `[K, D]` in `f64`; names, counts and the
    /// encoder in the metadata), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes: Vec<u8> = self
            .means
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F64, vec![self.names.len(), self.dim()], &bytes)
            .map_err(|e| Error::format("class statistics", e))?;
        let json =
            |v: serde_json::Result<String>| v.map_err(|e| Error::format("class statistics", e));
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("encoder".to_string(), self.encoder.clone()),
            (
                "names".to_string(),
                json(serde_json::to_string(&self.names))?,
            ),
            (
                "counts".to_string(),
                json(serde_json::to_string(&self.counts))?,
            ),
        ]);
        let out = safetensors::serialize([("means", view)], Some(metadata))
            .map_err(|e| Error::format(path.display().to_string(), e))?;
        foil_core::image_io::write_atomic(path, &out)
    }

    /// Reads statistics written by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(what.clone(), e))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            meta.get(key)
                .cloned()
                .ok_or_else(|| Error::format(what.clone(), format!("missing metadata {key:?}")))
        };
        if field("format")? != FORMAT {
            return Err(Error::format(what.clone(), format!("not a {FORMAT} file")));
        }
        let names: Vec<String> = serde_json::from_str(&field("names")?)
            .map_err(|e| Error::format(what.clone(), format!("names: {e}")))?;
        let counts: Vec<usize> = serde_json::from_str(&field("counts")?)
            .map_err(|e| Error::format(what.clone(), format!("counts: {e}")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(what.clone(), e))?;
        let view = st
            .tensor("means")
            .map_err(|_| Error::format(what.clone(), "missing tensor \"means\""))?;
        let shape = view.shape().to_vec();
        if view.dtype() != Dtype::F64
            || shape.len() != 2
            || shape[0] != names.len()
            || shape[0] != counts.len()
            || shape[1] == 0
        {
            return Err(Error::shape(
                format!("{what}: means"),
                format!("F64 [{}, D] with D > 0", names.len()),
                format!("{:?} {}", view.dtype(), fmt_dims(&shape)),
            ));
        }
        let flat: Vec<f64> = view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(Self {
            encoder: field("encoder")?,
            names,
            counts,
            means: flat.chunks_exact(shape[1]).map(<[f64]>::to_vec).collect(),
        })
    }
}
