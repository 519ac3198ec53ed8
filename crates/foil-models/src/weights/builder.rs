//! [`Weights`]: the builder every network of this crate takes its parameters from.
//!
//! A network's constructor asks for each parameter by its original name (relative to the
//! builder's prefix, see [`Weights::pp`]) and PyTorch shape; the builder answers from its source:
//!
//! - a [`TensorFile`] ([`Weights::from_file`], [`Weights::from_file_mut`]): the tensor of that
//!   name, every missing, wrongly shaped and unexpected one recorded and reported together by
//!   [`Weights::finish`] (or the file's own [`TensorFile::finish`]);
//! - random values ([`Weights::random`]): each parameter initialised as the network documents
//!   (burn's layer defaults, drawn lazily on first use, or an explicit [`Init`]), from the
//!   backend's generator, so the same `B::seed` gives the same network;
//! - zeros ([`Weights::zeros`], norm scales one): cheap placeholders, never allocated on CPU
//!   backends until used, to count the parameters of a large network;
//! - a recorder ([`Weights::recorder`]): the names and shapes asked for, in order
//!   ([`Weights::recorded`]), with one-element placeholders.

use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;

use burn::module::{Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use foil_core::Result;

use super::{Mismatches, TensorFile};

/// How a parameter is filled when a [`Weights`] builder has no file.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones (normalisation scales).
    Ones,
    /// Drawn at once, in build order, from the backend's generator (PyTorch's defaults as
    /// guided-diffusion's UNet is initialised: `Uniform(-b, b)` with `b = 1 / sqrt(fan_in)`,
    /// `Normal(0, 1)` for embeddings).
    Draw(Distribution),
    /// A burn initializer with its fans, drawn when the parameter is first used (as burn's
    /// layer configurations initialise).
    Lazy {
        /// The initializer.
        initializer: Initializer,
        /// Fan-in, for the Kaiming and Xavier initializers.
        fan_in: Option<usize>,
        /// Fan-out, for the Kaiming and Xavier initializers.
        fan_out: Option<usize>,
    },
}

impl Init {
    /// [`Init::Lazy`] without fans.
    pub fn lazy(initializer: Initializer) -> Self {
        Init::Lazy {
            initializer,
            fan_in: None,
            fan_out: None,
        }
    }

    /// `Uniform(-bound, bound)` drawn at once.
    pub fn uniform(bound: f64) -> Self {
        Init::Draw(Distribution::Uniform(-bound, bound))
    }

    fn make<B: Backend, const D: usize>(
        &self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        match self {
            Init::Zeros => Initializer::Zeros.init(shape, device),
            Init::Ones => Initializer::Ones.init(shape, device),
            Init::Draw(d) => Param::from_tensor(Tensor::random(shape, *d, device)),
            Init::Lazy {
                initializer,
                fan_in,
                fan_out,
            } => initializer.init_with(shape, *fan_in, *fan_out, device),
        }
    }
}

/// Where the parameters come from.
enum Source<'a> {
    File(FileRef<'a>),
    Random,
    Zeros,
    Record(Vec<(String, Vec<usize>)>),
}

enum FileRef<'a> {
    Owned(TensorFile),
    Borrowed(&'a mut TensorFile),
}

impl FileRef<'_> {
    fn get(&mut self) -> &mut TensorFile {
        match self {
            FileRef::Owned(f) => f,
            FileRef::Borrowed(f) => f,
        }
    }

    fn get_ref(&self) -> &TensorFile {
        match self {
            FileRef::Owned(f) => f,
            FileRef::Borrowed(f) => f,
        }
    }
}

/// The weight builder: a source of parameters seen under a name prefix. The source is a
/// [`TensorFile`] ([`from_file`](Self::from_file), [`from_file_mut`](Self::from_file_mut): every
/// missing, wrongly shaped and unexpected tensor reported together by [`finish`](Self::finish)),
/// random values ([`random`](Self::random): each network's own initialisation, from the
/// backend's generator, so the same `B::seed` gives the same network), zeros
/// ([`zeros`](Self::zeros), norm scales one, allocated lazily) or a recorder
/// ([`recorder`](Self::recorder): names and shapes, in order, see [`recorded`](Self::recorded)).
///
/// [`pp`](Self::pp) returns a builder scoped one level deeper that shares the source (and its
/// record of what did not fit), as candle's `VarBuilder::pp` does; names join with `.`:
///
/// ```
/// # use burn::backend::NdArray;
/// use burn::nn::conv::Conv2dConfig;
/// use foil_models::weights::Weights;
/// let w = Weights::<NdArray>::recorder(&Default::default());
/// let block = w.pp("layer1").pp(0);
/// let _conv = block.conv2d("conv1", &Conv2dConfig::new([3, 8], [3, 3]));
/// let names: Vec<String> = w.recorded().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["layer1.0.conv1.weight", "layer1.0.conv1.bias"]);
/// ```
pub struct Weights<'a, B: Backend> {
    source: Rc<RefCell<Source<'a>>>,
    prefix: String,
    device: B::Device,
}

impl<B: Backend> Clone for Weights<'_, B> {
    fn clone(&self) -> Self {
        Self {
            source: Rc::clone(&self.source),
            prefix: self.prefix.clone(),
            device: self.device.clone(),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Weights<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.source.borrow() {
            Source::File(file) => format!("file {}", file.get_ref().what()),
            Source::Random => "random".into(),
            Source::Zeros => "zeros".into(),
            Source::Record(seen) => format!("recorder ({} seen)", seen.len()),
        };
        f.debug_struct("Weights")
            .field("source", &kind)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<'a, B: Backend> Weights<'a, B> {
    fn new(source: Source<'a>, device: &B::Device) -> Self {
        Self {
            source: Rc::new(RefCell::new(source)),
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// Random parameters from the backend's generator (seed it with `B::seed` for a
    /// reproducible network); each network documents its initialisation.
    pub fn random(device: &B::Device) -> Self {
        Self::new(Source::Random, device)
    }

    /// All-zero parameters (normalisation scales one), allocated lazily.
    pub fn zeros(device: &B::Device) -> Self {
        Self::new(Source::Zeros, device)
    }

    /// Parameters taken by name from `file`, which the builder keeps; [`finish`](Self::finish)
    /// reports what did not fit.
    pub fn from_file(file: TensorFile, device: &B::Device) -> Self {
        Self::new(Source::File(FileRef::Owned(file)), device)
    }

    /// Parameters taken by name from a borrowed `file`: what did not fit stays recorded in the
    /// file, for its [`TensorFile::finish`] (or this builder's [`finish`](Self::finish)).
    pub fn from_file_mut(file: &'a mut TensorFile, device: &B::Device) -> Self {
        Self::new(Source::File(FileRef::Borrowed(file)), device)
    }

    /// A recorder: every requested name and shape is noted ([`recorded`](Self::recorded)) and
    /// answered with a one-element placeholder (layers keep their full lazy shapes).
    pub fn recorder(device: &B::Device) -> Self {
        Self::new(Source::Record(Vec::new()), device)
    }

    /// This builder scoped under `name`: a parameter `p` asked of the result is `prefix.name.p`.
    pub fn pp(&self, name: impl Display) -> Self {
        Self {
            source: Rc::clone(&self.source),
            prefix: self.path(&name.to_string()),
            device: self.device.clone(),
        }
    }

    /// The prefix of this builder (empty at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The device parameters are made on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The full name of `name` under this builder's prefix (`name` empty: the prefix itself).
    pub fn path(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{name}", self.prefix),
        }
    }

    /// Whether the builder reads a file.
    pub fn is_file(&self) -> bool {
        matches!(&*self.source.borrow(), Source::File(_))
    }

    /// Whether the file (if any) holds a tensor `name` under this prefix (for checkpoints
    /// written under older names).
    pub fn contains(&self, name: &str) -> bool {
        match &*self.source.borrow() {
            Source::File(file) => file.get_ref().contains(&self.path(name)),
            _ => false,
        }
    }

    /// The names in the file (if any) under this builder's prefix, relative to it, in sorted
    /// order (taken ones included).
    pub fn names(&self) -> Vec<String> {
        match &*self.source.borrow() {
            Source::File(file) => {
                let dotted = format!("{}.", self.prefix);
                file.get_ref()
                    .names()
                    .filter_map(|n| {
                        if self.prefix.is_empty() {
                            Some(n)
                        } else {
                            n.strip_prefix(&dotted)
                        }
                    })
                    .map(str::to_string)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Marks tensors (names under this prefix) as known but unused, so a file holding them
    /// does not report them as unexpected (buffers the network recomputes, parts it drops).
    pub fn ignore(&self, names: impl IntoIterator<Item = impl AsRef<str>>) {
        if let Source::File(file) = &mut *self.source.borrow_mut() {
            let full: Vec<String> = names.into_iter().map(|n| self.path(n.as_ref())).collect();
            file.get().ignore(full);
        }
    }

    /// The parameter `name` of PyTorch shape `shape`: taken from the file, made by `init`
    /// (random builder), zeros or ones (zeros builder), or recorded with a `[1; D]` placeholder.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Param<Tensor<B, D>> {
        let full = self.path(name);
        match &mut *self.source.borrow_mut() {
            Source::File(file) => file.get().take(&full, shape, &self.device),
            Source::Random => init.make(shape, &self.device),
            Source::Zeros if init == Init::Ones => Init::Ones.make(shape, &self.device),
            Source::Zeros => Init::Zeros.make(shape, &self.device),
            Source::Record(seen) => {
                seen.push((full, shape.to_vec()));
                Param::from_tensor(Tensor::zeros([1; D], &self.device))
            }
        }
    }

    /// Records `{name}.weight` / `{name}.bias` shapes; true when the builder is a recorder.
    fn record(&self, name: &str, parts: &[(&str, Vec<usize>)]) -> bool {
        if let Source::Record(seen) = &mut *self.source.borrow_mut() {
            for (part, shape) in parts {
                seen.push((self.path(&join(name, part)), shape.clone()));
            }
            return true;
        }
        false
    }

    /// Whether layers are built with burn's default initialisers (a random builder) rather
    /// than with never-drawn zeros that the file replaces.
    fn random_layers(&self) -> bool {
        matches!(&*self.source.borrow(), Source::Random)
    }

    /// A torch `nn.Linear(d_in, d_out, bias)` named `name` (`{name}.weight` `[out, in]`,
    /// transposed to burn's `[in, out]`, and `{name}.bias`); random: burn's `LinearConfig`
    /// default (Kaiming uniform), drawn on first use.
    pub fn linear(&self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        let config = LinearConfig::new(d_in, d_out).with_bias(bias);
        if self.random_layers() {
            return config.init(&self.device);
        }
        let mut linear = config
            .with_initializer(Initializer::Zeros)
            .init(&self.device);
        let mut parts = vec![("weight", vec![d_out, d_in])];
        if bias {
            parts.push(("bias", vec![d_out]));
        }
        if self.record(name, &parts) || !self.is_file() {
            return linear;
        }
        let w = self.tensor::<2>(&join(name, "weight"), [d_out, d_in], Init::Zeros);
        // Detached: a transposed parameter is no leaf, and autodiff backends refuse to track it.
        linear.weight = Param::from_tensor(w.val().transpose().detach());
        if bias {
            linear.bias = Some(self.tensor(&join(name, "bias"), [d_out], Init::Zeros));
        }
        linear
    }

    /// A convolution named `name` (`{name}.weight` `[out, in / groups, kh, kw]` and, when the
    /// configuration has one, `{name}.bias`); random: the configuration's initialiser, drawn
    /// on first use.
    pub fn conv2d(&self, name: &str, config: &Conv2dConfig) -> Conv2d<B> {
        if self.random_layers() {
            return config.init(&self.device);
        }
        let mut conv = config
            .clone()
            .with_initializer(Initializer::Zeros)
            .init(&self.device);
        let [cin, cout] = config.channels;
        let [kh, kw] = config.kernel_size;
        let shape = [cout, cin / config.groups, kh, kw];
        let mut parts = vec![("weight", shape.to_vec())];
        if config.bias {
            parts.push(("bias", vec![cout]));
        }
        if self.record(name, &parts) || !self.is_file() {
            return conv;
        }
        conv.weight = self.tensor(&join(name, "weight"), shape, Init::Zeros);
        if config.bias {
            conv.bias = Some(self.tensor(&join(name, "bias"), [cout], Init::Zeros));
        }
        conv
    }

    /// A torch `nn.GroupNorm` with affine weights named `name` (`{name}.weight`, `{name}.bias`);
    /// otherwise ones and zeros.
    pub fn group_norm(&self, name: &str, config: &GroupNormConfig) -> GroupNorm<B> {
        let mut norm = config.init(&self.device);
        let c = config.num_channels;
        if config.affine {
            norm.gamma = Some(self.tensor(&join(name, "weight"), [c], Init::Ones));
            norm.beta = Some(self.tensor(&join(name, "bias"), [c], Init::Zeros));
        }
        norm
    }

    /// A torch `nn.LayerNorm` named `name` (`{name}.weight`, `{name}.bias`); otherwise ones and
    /// zeros.
    pub fn layer_norm(&self, name: &str, config: &LayerNormConfig) -> LayerNorm<B> {
        let mut norm = config.init(&self.device);
        let d = config.d_model;
        norm.gamma = self.tensor(&join(name, "weight"), [d], Init::Ones);
        if config.bias {
            norm.beta = Some(self.tensor(&join(name, "bias"), [d], Init::Zeros));
        }
        norm
    }

    /// The names and shapes a recorder was asked for, in order (empty for other sources).
    pub fn recorded(&self) -> Vec<(String, Vec<usize>)> {
        match &*self.source.borrow() {
            Source::Record(seen) => seen.clone(),
            _ => Vec::new(),
        }
    }

    /// What did not fit so far (nothing for sources other than a file); see
    /// [`TensorFile::mismatches`].
    pub fn mismatches(&self) -> Mismatches {
        match &*self.source.borrow() {
            Source::File(file) => file.get_ref().mismatches(),
            _ => Mismatches::default(),
        }
    }

    /// Succeeds when every tensor asked for was found with its shape and every tensor of the
    /// file was taken or ignored; otherwise one error lists the missing, wrongly shaped and
    /// unexpected tensors (always `Ok` for sources other than a file).
    pub fn finish(&self) -> Result<()> {
        match &*self.source.borrow() {
            Source::File(file) => file.get_ref().check(),
            _ => Ok(()),
        }
    }
}

/// `name.part`, or `part` alone when `name` is empty.
fn join(name: &str, part: &str) -> String {
    if name.is_empty() {
        part.to_string()
    } else {
        format!("{name}.{part}")
    }
}
