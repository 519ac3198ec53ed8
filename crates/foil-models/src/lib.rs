//! Networks that load published weights by their original tensor names.
//!
//! - [`adm`]: guided-diffusion's UNet (ADM), the unconditional CelebA DDPM of DiME / FastDiME /
//!   MaskDiME, as a `foil_core::Denoiser`;
//! - [`alexnet`]: torchvision's AlexNet feature stack, the backbone of LPIPS, with a width
//!   configuration for tiny parity tests;
//! - [`vgg`]: torchvision's VGG16 feature stack, LPIPS's other backbone;
//! - [`weights`]: a safetensors reader that hands out tensors by name and shape and reports every
//!   missing, unexpected and wrongly shaped tensor at once.

pub mod adm;
pub mod alexnet;
pub mod vgg;
pub mod weights;
