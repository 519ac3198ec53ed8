//! Metrics for visual counterfactuals, from both papers, for any method.
//!
//! - [`lpips`]: LPIPS (AlexNet or VGG16) with the published weights, also a perceptual feature
//!   extractor and (pooled) an image encoder;
//! - [`flips`]: success / flip ratio over all inputs, per direction and overall;
//! - [`fid`]: Fréchet distance of Gaussian fits to features of any `ImageEncoder` (FID), and
//!   the split-half protocol (sFID);
//! - [`cout`]: COUT, the insertion curve of counterfactual pixels ordered by change;
//! - [`mnac`]: MNAC, how many attributes of a multi-attribute oracle change;
//! - [`similarity`]: cosine similarities of encoder embeddings (FS / FVA / S3);
//! - [`diversity`]: mean pairwise distance between counterfactuals made with different seeds;
//! - [`run`]: every metric above over a results folder (`foil_run`'s format), per direction
//!   and overall, as a typed [`RunEvaluation`] printed as a table or written as JSON.

pub mod cout;
pub mod diversity;
pub mod fid;
pub mod flips;
pub mod lpips;
pub mod mnac;
pub mod run;
pub mod similarity;

pub use run::{RunEvaluation, evaluate_run};
