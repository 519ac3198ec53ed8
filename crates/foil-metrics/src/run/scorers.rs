//! The networks an evaluation scores with, ready to use.

use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, ImageEncoder, Result};
use serde::{Deserialize, Serialize};

use crate::lpips::Lpips;

/// Which encoder a number used, recorded in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderLabel {
    /// The encoder as the user named it (`lpips-alex`, `clip:FILE`, ...).
    pub name: String,
    /// Whether it is InceptionV3, the only encoder whose FIDs compare with the papers'.
    pub inception: bool,
}

/// An encoder ready to use, with its label.
pub struct Encoder<B: Backend> {
    /// What the report says was used.
    pub label: EncoderLabel,
    /// The network.
    pub net: Box<dyn ImageEncoder<B>>,
}

/// A classifier ready to score with: the oracle (two classes) or a multi-attribute oracle.
pub struct ScoringOracle<B: Backend> {
    /// Class or attribute names, one per logit (a one-logit oracle: its two classes).
    pub names: Vec<String>,
    /// Side of the square RGB images it takes.
    pub image_size: u32,
    /// The network.
    pub classifier: Box<dyn Classifier<B>>,
}

/// A multi-attribute oracle made of one-logit oracles, one attribute each: its logits are the
/// members' logits side by side, so MNAC counts the members whose decision changes.
pub struct AttributeOracle<B: Backend> {
    members: Vec<Box<dyn Classifier<B>>>,
}

impl<B: Backend> AttributeOracle<B> {
    /// Joins one-logit classifiers; each must have exactly one logit.
    pub fn new(members: Vec<Box<dyn Classifier<B>>>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::Empty {
                what: "attribute oracles".into(),
                hint: "give at least one oracle folder".into(),
            });
        }
        if let Some((i, m)) = members
            .iter()
            .enumerate()
            .find(|(_, m)| m.num_logits() != 1)
        {
            return Err(Error::shape(
                format!("attribute oracle {i} logits"),
                "1 per image",
                m.num_logits(),
            ));
        }
        Ok(Self { members })
    }
}

impl<B: Backend> Classifier<B> for AttributeOracle<B> {
    fn num_logits(&self) -> usize {
        self.members.len()
    }

    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let columns = self
            .members
            .iter()
            .map(|m| m.logits(images.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(columns, 1))
    }
}

/// The networks an evaluation scores with; every `None` leaves its metrics `None`, with a
/// note in the report saying what to pass.
#[derive(Default)]
pub struct Scorers<B: Backend> {
    /// LPIPS with AlexNet (DIFFusion's LPIPS).
    pub lpips: Option<Lpips<B>>,
    /// LPIPS with VGG16, for the diversity across seeds (the papers' sigma_L).
    pub diversity_lpips: Option<Lpips<B>>,
    /// The FID / sFID encoder.
    pub fid_encoder: Option<Encoder<B>>,
    /// The cosine-similarity encoder (FS / S3 style).
    pub similarity_encoder: Option<Encoder<B>>,
    /// The oracle, for COUT.
    pub oracle: Option<ScoringOracle<B>>,
    /// The multi-attribute oracle, for MNAC.
    pub mnac_oracle: Option<ScoringOracle<B>>,
}
