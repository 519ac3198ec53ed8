//! Networks that load published weights by their original tensor names.
//!
//! - [`alexnet`]: torchvision's AlexNet feature stack, the backbone of LPIPS, with a width
//!   configuration for tiny parity tests;
//! - [`kandinsky`]: the Kandinsky 2.2 decoder UNet and MoVQ autoencoder (diffusers names);
//! - [`vgg`]: torchvision's VGG16 feature stack, LPIPS's other backbone;
//! - [`weights`]: a safetensors reader that hands out tensors by name and shape and reports every
//!   missing, unexpected and wrongly shaped tensor at once.

pub mod alexnet;
pub mod kandinsky;
pub mod vgg;
pub mod weights;
