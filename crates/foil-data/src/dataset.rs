//! The labelled image set every loader returns, class pairs and recorded splits.
//!
//! An item's pixels are either in memory (procedural sets, idx and JSON digits) or an image
//! file decoded when a batch needs it (class folders, [`crate::folder`]), so a dataset of
//! files costs its list of paths, not its decoded images: [`Dataset::tensors`] decodes only the
//! items it is asked for.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, backend::Backend};
use foil_core::image_io::{self, ColorMode, Resize, images_to_tensor, write_atomic};
use foil_core::{Error, Result};
use image::DynamicImage;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// An item's pixels: decoded in memory, or an image file decoded each time they are asked for
/// ([`Item::decode`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// The decoded image.
    Decoded(DynamicImage),
    /// An image file (any format the `image` crate reads), decoded on demand.
    File(PathBuf),
}

impl From<DynamicImage> for Pixels {
    fn from(image: DynamicImage) -> Self {
        Pixels::Decoded(image)
    }
}

/// One labelled image and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The image, in memory or as a file ([`Item::decode`] gives the pixels either way).
    pub image: Pixels,
    /// Index into the dataset's class names.
    pub label: usize,
    /// Where it came from (a file path, or `fashion-mnist/test/123`): stable across runs, so
    /// results can be keyed by it.
    pub source: String,
}

impl Item {
    /// An item whose image is `path`, decoded when needed; its source is the path.
    pub fn file(path: PathBuf, label: usize) -> Self {
        Self {
            source: path.display().to_string(),
            image: Pixels::File(path),
            label,
        }
    }

    /// The pixels: borrowed when in memory, else decoded from the file now (an unreadable or
    /// undecodable file is an error naming it).
    pub fn decode(&self) -> Result<Cow<'_, DynamicImage>> {
        match &self.image {
            Pixels::Decoded(image) => Ok(Cow::Borrowed(image)),
            Pixels::File(path) => image_io::load(path).map(Cow::Owned),
        }
    }
}

/// Labelled images with named classes.
#[derive(Debug, Clone)]
pub struct Dataset {
    names: Vec<String>,
    items: Vec<Item>,
}

impl Dataset {
    /// A dataset from class names and items; every label must name a class.
    pub fn new(names: Vec<String>, items: Vec<Item>) -> Result<Self> {
        if names.is_empty() {
            return Err(Error::Empty {
                what: "class names".into(),
                hint: "a dataset needs at least one class".into(),
            });
        }
        if let Some(bad) = items.iter().find(|it| it.label >= names.len()) {
            return Err(Error::out_of_range(
                format!("label of {}", bad.source),
                format!("below the number of classes ({})", names.len()),
                bad.label,
            ));
        }
        Ok(Self { names, items })
    }

    /// The class names; labels index them.
    pub fn class_names(&self) -> &[String] {
        &self.names
    }

    /// The items.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of items of each class.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.names.len()];
        for it in &self.items {
            counts[it.label] += 1;
        }
        counts
    }

    /// The index of a class by name, or an error listing the names there are.
    pub fn class_index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::out_of_range(
                "class name",
                format!("one of {:?}", self.names),
                format!("{name:?}"),
            )
        })
    }

    /// The two classes `a` (label 0) and `b` (label 1), picked by name, in the original order.
    pub fn pair(&self, a: &str, b: &str) -> Result<Dataset> {
        let (ia, ib) = (self.class_index(a)?, self.class_index(b)?);
        if ia == ib {
            return Err(Error::out_of_range(
                "class pair",
                "two different classes",
                format!("{a:?} twice"),
            ));
        }
        let items = self
            .items
            .iter()
            .filter(|it| it.label == ia || it.label == ib)
            .map(|it| Item {
                label: usize::from(it.label == ib),
                ..it.clone()
            })
            .collect::<Vec<_>>();
        let pair = Dataset::new(vec![a.to_string(), b.to_string()], items)?;
        for (name, count) in pair.names.iter().zip(pair.counts()) {
            if count == 0 {
                return Err(Error::Empty {
                    what: format!("class {name:?}").into(),
                    hint: "it has no images in this dataset".into(),
                });
            }
        }
        Ok(pair)
    }

    /// A seeded, class-stratified split: `round(test_fraction * n_c)` items of each class go to
    /// the test side (at least one item stays on each side for classes with two or more).
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<Split> {
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::out_of_range(
                "test fraction",
                "in [0, 1)",
                test_fraction,
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for class in 0..self.names.len() {
            let mut idx: Vec<usize> = (0..self.items.len())
                .filter(|&i| self.items[i].label == class)
                .collect();
            idx.shuffle(&mut rng);
            let n = idx.len();
            let mut k = (test_fraction * n as f64).round() as usize;
            if n >= 2 && test_fraction > 0.0 {
                k = k.clamp(1, n - 1);
            }
            test.extend_from_slice(&idx[..k]);
            train.extend_from_slice(&idx[k..]);
        }
        train.sort_unstable();
        test.sort_unstable();
        let sources = |ix: &[usize]| ix.iter().map(|&i| self.items[i].source.clone()).collect();
        Ok(Split {
            seed,
            test_fraction,
            train_sources: sources(&train),
            test_sources: sources(&test),
            train,
            test,
        })
    }

    /// The items at `indices` as one NCHW tensor in `[-1, 1]` and their labels. Only these
    /// items are decoded (files are read now), so memory follows `indices`, not the dataset.
    pub fn tensors<B: Backend>(
        &self,
        indices: &[usize],
        mode: ColorMode,
        resize: Resize,
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Vec<usize>)> {
        let mut images = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let it = self.items.get(i).ok_or_else(|| {
                Error::out_of_range("item index", format!("below {}", self.items.len()), i)
            })?;
            images.push(it.decode()?.into_owned());
            labels.push(it.label);
        }
        Ok((images_to_tensor(&images, mode, resize, device)?, labels))
    }
}

/// A train/test split: item indices, and the items' sources so the split can be recorded and
/// checked against the data later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// The seed it was drawn with.
    pub seed: u64,
    /// The share of each class put on the test side.
    pub test_fraction: f64,
    /// Training item indices, ascending.
    pub train: Vec<usize>,
    /// Test item indices, ascending.
    pub test: Vec<usize>,
    /// The training items' sources.
    pub train_sources: Vec<String>,
    /// The test items' sources.
    pub test_sources: Vec<String>,
}

impl Split {
    /// Writes the split as JSON, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::format("split", e))?;
        write_atomic(path.as_ref(), &json)
    }

    /// Reads a split written by [`Split::save`] and checks it against `data`: every index must
    /// hold the recorded source, so a split is never silently applied to other data.
    pub fn load(path: impl AsRef<Path>, data: &Dataset) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let split: Split = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(path.display().to_string(), e))?;
        for (indices, sources) in [
            (&split.train, &split.train_sources),
            (&split.test, &split.test_sources),
        ] {
            if indices.len() != sources.len() {
                return Err(Error::shape(
                    format!("{}: sources", path.display()),
                    indices.len(),
                    sources.len(),
                ));
            }
            for (&i, source) in indices.iter().zip(sources) {
                let found = data.items.get(i).map(|it| it.source.as_str());
                if found != Some(source.as_str()) {
                    return Err(Error::format(
                        path.display().to_string(),
                        format!(
                            "item {i} was {source:?} when the split was made, now {found:?}: the data changed"
                        ),
                    ));
                }
            }
        }
        Ok(split)
    }
}
