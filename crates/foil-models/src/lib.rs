//! Networks that load published weights by their original tensor names.
//!
//! - [`alexnet`]: torchvision's AlexNet feature stack, the backbone of LPIPS, with a width
//!   configuration for tiny parity tests;
//! - [`resnet`], [`mobilenet`], [`efficientnet`]: torchvision's ResNet-18, MobileNet-V2 and
//!   EfficientNet-B0 image classifiers (`foil_core::Classifier`), with [`cnn`] their shared
//!   eval-mode BatchNorm and input normalisation, and [`ensemble`] the mean-of-sigmoids oracle;
//! - [`lora`]: LoRA adapters for linear layers, chosen by module path, and their merge;
//! - [`vgg`]: torchvision's VGG16 feature stack, LPIPS's other backbone;
//! - [`weights`]: a safetensors reader that hands out tensors by name and shape and reports every
//!   missing, unexpected and wrongly shaped tensor at once.

pub mod alexnet;
pub mod cnn;
pub mod efficientnet;
pub mod ensemble;
pub mod lora;
pub mod mobilenet;
pub mod resnet;
pub mod vgg;
pub mod weights;
