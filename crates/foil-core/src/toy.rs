//! Analytic models whose behaviour is known in closed form, for tests, examples and docs.
//!
//! They implement the real traits, so every sampler can be checked against exact answers
//! before it meets a trained network.

use burn::tensor::{Tensor, backend::Backend};

use crate::tensor::{fmt_dims, per_sample};
use crate::{Denoiser, DenoiserOutput, Error, Noise, Result};

fn check_cond<B: Backend>(cond: &Option<Tensor<B, 2>>, batch: usize, dim: usize) -> Result<()> {
    match cond {
        Some(c) if c.dims() != [batch, dim] => Err(Error::shape(
            "condition",
            fmt_dims(&[batch, dim]),
            fmt_dims(&c.dims()),
        )),
        None if dim > 0 => Err(Error::format("condition", "this denoiser needs one")),
        _ => Ok(()),
    }
}

/// `eps = (a + b t / 1000) x_t + <c, w>`: linear in `x_t` and in the condition `c`.
#[derive(Debug, Clone)]
pub struct LinearDenoiser {
    /// Image channels.
    pub channels: usize,
    /// Weights `w` of the condition (its width is `w.len()`).
    pub w: Vec<f64>,
    /// Slope in `x_t` at `t = 0`.
    pub a: f64,
    /// Growth of the slope per 1000 timesteps.
    pub b: f64,
}

impl<B: Backend> Denoiser<B> for LinearDenoiser {
    fn channels(&self) -> usize {
        self.channels
    }
    fn learned_variance(&self) -> bool {
        false
    }
    fn condition_dim(&self) -> Option<usize> {
        Some(self.w.len())
    }
    fn forward(
        &self,
        x: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        let [n, ..] = x.dims();
        check_cond(&cond, n, self.w.len())?;
        let dev = x.device();
        let slope: Vec<f64> = t
            .iter()
            .map(|&t| self.a + self.b * t as f64 / 1000.0)
            .collect();
        let mut eps = x * per_sample::<B>(&slope, &dev);
        if let Some(c) = cond {
            let w = Tensor::<B, 1>::from_floats(
                self.w
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                &dev,
            );
            let shift = (c * w.unsqueeze_dim(0)).sum_dim(1); // [N, 1]
            eps = eps + shift.reshape([n, 1, 1, 1]);
        }
        Ok(DenoiserOutput::eps(eps))
    }
}

/// `eps = tanh(P vec(x_t) + Q c + t / 1000)` with fixed random projections `P` and `Q`:
/// smooth, bounded and thoroughly nonlinear in both the image and the condition.
#[derive(Debug, Clone)]
pub struct TanhDenoiser<B: Backend> {
    shape: [usize; 3],
    p: Tensor<B, 2>,
    q: Option<Tensor<B, 2>>,
}

impl<B: Backend> TanhDenoiser<B> {
    /// A denoiser for `[C, H, W]` images and `cond_dim`-wide conditions (0: unconditional),
    /// with projections drawn from `seed`.
    pub fn new(shape: [usize; 3], cond_dim: usize, seed: u64, device: &B::Device) -> Self {
        let f: usize = shape.iter().product();
        let mut noise = Noise::new(seed);
        let p = noise.normal::<B, 2>([f, f], device) * (1.5 / (f as f64).sqrt());
        let q = (cond_dim > 0).then(|| {
            noise.normal::<B, 2>([cond_dim, f], device) * (1.0 / (cond_dim as f64).sqrt())
        });
        Self { shape, p, q }
    }
}

impl<B: Backend> Denoiser<B> for TanhDenoiser<B> {
    fn channels(&self) -> usize {
        self.shape[0]
    }
    fn learned_variance(&self) -> bool {
        false
    }
    fn condition_dim(&self) -> Option<usize> {
        self.q.as_ref().map(|q| q.dims()[0])
    }
    fn forward(
        &self,
        x: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        let [n, c, h, w] = x.dims();
        if [c, h, w] != self.shape {
            return Err(Error::shape(
                "x_t",
                fmt_dims(&[n, self.shape[0], self.shape[1], self.shape[2]]),
                fmt_dims(&x.dims()),
            ));
        }
        check_cond(&cond, n, self.condition_dim().unwrap_or(0))?;
        let dev = x.device();
        let mut pre = x.reshape([n, c * h * w]).matmul(self.p.clone());
        if let (Some(q), Some(cond)) = (&self.q, cond) {
            pre = pre + cond.matmul(q.clone());
        }
        let tt: Vec<f64> = t.iter().map(|&t| t as f64 / 1000.0).collect();
        let pre = pre + per_sample::<B>(&tt, &dev).reshape([n, 1]);
        Ok(DenoiserOutput::eps(pre.tanh().reshape([n, c, h, w])))
    }
}

/// The exact denoiser for Gaussian data `x0 ~ N(mean, std^2 I)`: its Tweedie estimate is the
/// true posterior mean `E[x0 | x_t]`, so samplers can be checked against closed forms.
#[derive(Debug, Clone)]
pub struct GaussianDenoiser<B: Backend> {
    mean: Tensor<B, 4>,
    std: f64,
    abar: Vec<f64>,
}

impl<B: Backend> GaussianDenoiser<B> {
    /// `mean` is `[1, C, H, W]`; `alphas_cumprod` is the training schedule's `abar` (indexed
    /// by the network timestep).
    pub fn new(mean: Tensor<B, 4>, std: f64, alphas_cumprod: Vec<f64>) -> Self {
        Self {
            mean,
            std,
            abar: alphas_cumprod,
        }
    }
}

impl<B: Backend> Denoiser<B> for GaussianDenoiser<B> {
    fn channels(&self) -> usize {
        self.mean.dims()[1]
    }
    fn learned_variance(&self) -> bool {
        false
    }
    fn condition_dim(&self) -> Option<usize> {
        None
    }
    fn forward(
        &self,
        x: Tensor<B, 4>,
        t: &[usize],
        _cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        let dev = x.device();
        let [n, ..] = x.dims();
        if t.len() != n {
            return Err(Error::shape("timesteps", n, t.len()));
        }
        if let Some(&bad) = t.iter().find(|&&t| t >= self.abar.len()) {
            return Err(Error::out_of_range(
                "timestep",
                format!("below {}", self.abar.len()),
                bad,
            ));
        }
        let s2 = self.std * self.std;
        // E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mean) / (a s^2 + 1 - a)
        let k: Vec<f64> = t
            .iter()
            .map(|&t| {
                let a = self.abar[t];
                (1.0 - a).sqrt() / (a * s2 + 1.0 - a)
            })
            .collect();
        let r: Vec<f64> = t.iter().map(|&t| self.abar[t].sqrt()).collect();
        let eps = (x - self.mean.clone() * per_sample::<B>(&r, &dev)) * per_sample::<B>(&k, &dev);
        Ok(DenoiserOutput::eps(eps))
    }
}

/// Settings of a [`ConvDenoiser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvDenoiserConfig {
    /// Image channels.
    pub channels: usize,
    /// Hidden feature maps.
    pub hidden: usize,
    /// Width of the conditioning vectors (0: unconditional).
    pub cond_dim: usize,
}

impl ConvDenoiserConfig {
    /// Builds the network with burn's default (random) initialisation on `device`.
    /// Seed the backend (`B::seed`) first for reproducible weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvDenoiser<B> {
        use burn::nn::{LinearConfig, PaddingConfig2d, conv::Conv2dConfig};
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        ConvDenoiser {
            conv_in: conv(self.channels, self.hidden),
            conv_mid: conv(self.hidden, self.hidden),
            conv_out: conv(self.hidden, self.channels),
            time: LinearConfig::new(TIME_FEATURES, self.hidden).init(device),
            cond: (self.cond_dim > 0)
                .then(|| LinearConfig::new(self.cond_dim, self.hidden).init(device)),
        }
    }
}

const TIME_FEATURES: usize = 8;

/// A small convolutional denoiser (three 3x3 convolutions, SiLU, sinusoidal timestep features
/// and a linear condition embedding added to the first feature maps), for tests and examples
/// that need a real network with random weights rather than a closed form.
#[derive(burn::module::Module, Debug)]
pub struct ConvDenoiser<B: Backend> {
    conv_in: burn::nn::conv::Conv2d<B>,
    conv_mid: burn::nn::conv::Conv2d<B>,
    conv_out: burn::nn::conv::Conv2d<B>,
    time: burn::nn::Linear<B>,
    cond: Option<burn::nn::Linear<B>>,
}

impl<B: Backend> Denoiser<B> for ConvDenoiser<B> {
    fn channels(&self) -> usize {
        self.conv_in.weight.dims()[1]
    }
    fn learned_variance(&self) -> bool {
        false
    }
    fn condition_dim(&self) -> Option<usize> {
        self.cond.as_ref().map(|c| c.weight.dims()[0])
    }
    fn forward(
        &self,
        x: Tensor<B, 4>,
        t: &[usize],
        cond: Option<Tensor<B, 2>>,
    ) -> Result<DenoiserOutput<B>> {
        use burn::tensor::activation::silu;
        let [n, c, ..] = x.dims();
        if c != <Self as Denoiser<B>>::channels(self) || t.len() != n {
            return Err(Error::shape(
                "x_t and timesteps",
                format!(
                    "[N, {}, H, W] and N timesteps",
                    <Self as Denoiser<B>>::channels(self)
                ),
                format!("{} and {} timesteps", fmt_dims(&x.dims()), t.len()),
            ));
        }
        check_cond(&cond, n, self.condition_dim().unwrap_or(0))?;
        let dev = x.device();
        let feats: Vec<f32> = t
            .iter()
            .flat_map(|&t| {
                (0..TIME_FEATURES / 2).flat_map(move |i| {
                    let arg = t as f32 / 10f32.powi(i as i32);
                    [arg.sin(), arg.cos()]
                })
            })
            .collect();
        let feats = Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(feats, [n, TIME_FEATURES]),
            &dev,
        );
        let mut bias = self.time.forward(feats);
        if let (Some(layer), Some(cond)) = (&self.cond, cond) {
            bias = bias + layer.forward(cond);
        }
        let hidden = bias.dims()[1];
        let h = silu(self.conv_in.forward(x) + bias.reshape([n, hidden, 1, 1]));
        let h = silu(self.conv_mid.forward(h));
        Ok(DenoiserOutput::eps(self.conv_out.forward(h)))
    }
}

/// A one-logit classifier that looks only at a rectangle: `logit = sum_R w x - bias`, with
/// distinct positive weights inside the rectangle `R` and zero elsewhere. Its gradient, and so
/// any gradient mask built from it, is known exactly.
#[derive(Debug, Clone)]
pub struct RegionClassifier {
    height: usize,
    width: usize,
    weights: Vec<f32>,
    bias: f32,
}

impl RegionClassifier {
    /// A classifier of `height x width` images (any channel count; channels are summed) that
    /// weighs rows `rows` and columns `cols`.
    pub fn new(
        height: usize,
        width: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        bias: f32,
    ) -> Self {
        let mut weights = vec![0.0; height * width];
        let cells = (rows.len() * cols.len()).max(1) as f32;
        let mut rank = 0.0;
        for r in rows.clone() {
            for c in cols.clone() {
                if r < height && c < width {
                    weights[r * width + c] = 0.5 + rank / cells;
                    rank += 1.0;
                }
            }
        }
        Self {
            height,
            width,
            weights,
            bias,
        }
    }

    /// The weight of each pixel, row-major.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }
}

impl<B: Backend> crate::Classifier<B> for RegionClassifier {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, c, h, w] = x.dims();
        if (h, w) != (self.height, self.width) {
            return Err(Error::shape(
                "images",
                format!("[N, C, {}, {}]", self.height, self.width),
                fmt_dims(&[n, c, h, w]),
            ));
        }
        let weights =
            crate::tensor::from_vec::<B, 4>(self.weights.clone(), [1, 1, h, w], &x.device())?;
        Ok((x * weights).reshape([n, c * h * w]).sum_dim(1) - self.bias)
    }
}
