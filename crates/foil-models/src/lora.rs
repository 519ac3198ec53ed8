//! LoRA adapters for burn [`Linear`] layers (Hu et al. 2021, as in peft):
//! `y = x W + b + (alpha / r) x A B`, with `A` `[in, r]` random and `B` `[r, out]` zero at
//! initialisation, so a fresh adapter leaves the layer's output unchanged.
//!
//! A network picks which of its linear layers get adapters by module path:
//! [`LoraConfig::matches`] tests a path such as `"down.1.attn.to_q"` against target names such as
//! `"to_q|to_k|to_v|to_out"`, and [`LoraConfig::adapt`] wraps a layer only when its path matches.
//! [`LoraLinear::merge`] folds a trained adapter back into a plain [`Linear`].

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{Distribution, Tensor, backend::Backend};
use foil_core::tensor::fmt_dims;
use foil_core::{Error, Result};

/// Rank, scale and target layers of LoRA adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update `A B` (at least 1).
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank` (peft's `lora_alpha`).
    pub alpha: f64,
    /// Target names separated by `|` (e.g. `"to_q|to_k|to_v|to_out"`); a module path matches
    /// when one target occurs in it as whole dot-separated segments (`"to_out"` matches
    /// `"mid.attn.to_out.0"` but not `"mid.attn.to_outer"`). An empty string matches nothing.
    pub targets: String,
}

impl LoraConfig {
    /// A configuration, checking `rank >= 1` and a finite `alpha`.
    pub fn new(rank: usize, alpha: f64, targets: impl Into<String>) -> Result<Self> {
        let config = Self {
            rank,
            alpha,
            targets: targets.into(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::out_of_range("LoRA rank", ">= 1", self.rank));
        }
        if !self.alpha.is_finite() {
            return Err(Error::out_of_range("LoRA alpha", "finite", self.alpha));
        }
        Ok(())
    }

    /// The update scale `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether the module at `path` (dot-separated) is a target.
    pub fn matches(&self, path: &str) -> bool {
        let padded = format!(".{path}.");
        self.targets
            .split('|')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .any(|t| padded.contains(&format!(".{t}.")))
    }

    /// A fresh update for a `[in, out]` layer: `A` uniform in `+-1/sqrt(in)` (peft's
    /// Kaiming-uniform bound with `a = sqrt(5)`), `B` zero, so the layer's output is unchanged
    /// until `B` trains. Seed the backend (`B::seed`) for reproducible `A`.
    pub fn delta_for<B: Backend>(&self, base: &Linear<B>) -> Result<LoraDelta<B>> {
        self.validate()?;
        let [d_in, d_out] = base.weight.dims();
        let device = base.weight.device();
        let bound = 1.0 / (d_in.max(1) as f64).sqrt();
        let a = Tensor::random(
            [d_in, self.rank],
            Distribution::Uniform(-bound, bound),
            &device,
        );
        let b = Tensor::zeros([self.rank, d_out], &device);
        LoraDelta::new(d_in, d_out, a, b, self.alpha)
    }

    /// An adapter around `base` with a fresh update ([`LoraConfig::delta_for`]) and `base`
    /// frozen (`no_grad`).
    pub fn init<B: Backend>(&self, base: Linear<B>) -> Result<LoraLinear<B>> {
        let update = self.delta_for(&base)?;
        Ok(LoraLinear {
            base: base.no_grad(),
            update,
        })
    }

    /// [`LoraConfig::init`] if `path` matches the targets, the plain layer otherwise.
    pub fn adapt<B: Backend>(&self, path: &str, base: Linear<B>) -> Result<Adapted<B>> {
        if self.matches(path) {
            Ok(Adapted::Lora(self.init(base)?))
        } else {
            Ok(Adapted::Plain(base))
        }
    }
}

/// The low-rank update `(alpha / r) x A B` of one `[in, out]` linear layer, kept beside the
/// layer it adapts.
#[derive(Module, Debug)]
pub struct LoraDelta<B: Backend> {
    /// Down projection `A`, `[in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// Up projection `B`, `[r, out]`.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scale: f64,
}

impl<B: Backend> LoraDelta<B> {
    /// The update of a `[d_in, d_out]` layer from explicit factors `a` `[d_in, r]` and `b`
    /// `[r, d_out]` (burn's `[in, out]` layout, the transposes of peft's `lora_A.weight`
    /// `[r, in]` and `lora_B.weight` `[out, r]`), scaled by `alpha / r`.
    pub fn new(
        d_in: usize,
        d_out: usize,
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
        alpha: f64,
    ) -> Result<Self> {
        let [a_in, r] = a.dims();
        let [b_r, b_out] = b.dims();
        if a_in != d_in || r == 0 {
            return Err(Error::shape(
                "LoRA A",
                format!("[{d_in}, r >= 1]"),
                fmt_dims(&[a_in, r]),
            ));
        }
        if b_r != r || b_out != d_out {
            return Err(Error::shape(
                "LoRA B",
                fmt_dims(&[r, d_out]),
                fmt_dims(&[b_r, b_out]),
            ));
        }
        if !alpha.is_finite() {
            return Err(Error::out_of_range("LoRA alpha", "finite", alpha));
        }
        Ok(Self {
            lora_a: Param::from_tensor(a),
            lora_b: Param::from_tensor(b),
            scale: alpha / r as f64,
        })
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.dims()[1]
    }

    /// `scale x A B` for `x` `[..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear(linear(x, self.lora_a.val(), None), self.lora_b.val(), None).mul_scalar(self.scale)
    }

    /// `base` with `W + scale A B` and the same bias: a plain layer equal to
    /// `base.forward(x) + self.forward(x)`.
    pub fn merge_into(&self, base: &Linear<B>) -> Linear<B> {
        let delta = self
            .lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale);
        Linear {
            weight: Param::from_tensor((base.weight.val() + delta).detach()),
            bias: base
                .bias
                .as_ref()
                .map(|b| Param::from_tensor(b.val().detach())),
        }
    }
}

/// A [`Linear`] layer with a low-rank update: `x W + b + (alpha / r) x A B`.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The adapted layer (frozen by [`LoraConfig::init`]).
    pub base: Linear<B>,
    /// Its update.
    pub update: LoraDelta<B>,
}

impl<B: Backend> LoraLinear<B> {
    /// An adapter from explicit factors `a` `[in, r]` and `b` `[r, out]` (see
    /// [`LoraDelta::new`]), scaled by `alpha / r`.
    pub fn new(base: Linear<B>, a: Tensor<B, 2>, b: Tensor<B, 2>, alpha: f64) -> Result<Self> {
        let [d_in, d_out] = base.weight.dims();
        let update = LoraDelta::new(d_in, d_out, a, b, alpha)?;
        Ok(Self { base, update })
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.update.rank()
    }

    /// `x W + b + scale x A B` for `x` `[..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.base.forward(x.clone()) + self.update.forward(x)
    }

    /// A plain layer with `W + scale A B` and the same bias, equal to [`LoraLinear::forward`].
    pub fn merge(&self) -> Linear<B> {
        self.update.merge_into(&self.base)
    }
}

/// A linear layer that may carry a LoRA adapter (what [`LoraConfig::adapt`] returns).
// burn modules cannot be boxed; a layer is built once, so the size difference is harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Adapted<B: Backend> {
    /// Not a target: the layer as it was.
    Plain(Linear<B>),
    /// A target: the layer with its adapter.
    Lora(LoraLinear<B>),
}

impl<B: Backend> Adapted<B> {
    /// The layer's output for `x` `[..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Adapted::Plain(l) => l.forward(x),
            Adapted::Lora(l) => l.forward(x),
        }
    }

    /// The plain layer, with any adapter merged in.
    pub fn merge(self) -> Linear<B> {
        match self {
            Adapted::Plain(l) => l,
            Adapted::Lora(l) => l.merge(),
        }
    }
}
