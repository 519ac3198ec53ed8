//! pytorch-fid's InceptionV3 (`pytorch_fid/inception.py` of pytorch-fid 0.3.0,
//! `fid_inception_v3()`): the network FID is computed with, returning the 2048-d pool3 features
//! (`InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)`).
//!
//! It loads the state dict of `pt_inception-2015-12-05-6726825d.pth` by its own names:
//! `Conv2d_1a_3x3`, `Conv2d_2a_3x3`, `Conv2d_2b_3x3`, `Conv2d_3b_1x1`, `Conv2d_4a_3x3`, then
//! `Mixed_5b..5d` (`FIDInceptionA`), `Mixed_6a` (torchvision's `InceptionB`), `Mixed_6b..6e`
//! (`FIDInceptionC`), `Mixed_7a` (`InceptionD`), `Mixed_7b` (`FIDInceptionE_1`) and `Mixed_7c`
//! (`FIDInceptionE_2`); every `BasicConv2d` is `{name}.conv.weight` (no bias) and
//! `{name}.bn.weight/bias/running_mean/running_var` (BatchNorm with eps 0.001, then ReLU). The
//! classifier `fc.*` and `num_batches_tracked` are ignored.
//!
//! The FID blocks differ from torchvision's: the pool branches of A, C and E_1 average without
//! counting the padding (`count_include_pad=False`), E_2's pool branch takes the maximum.
//!
//! Images come in foil's `[-1, 1]`, which is what pytorch-fid's `normalize_input` makes of its
//! `[0, 1]` inputs (`2x - 1`); with `resize_input` they are first resized to 299 x 299
//! bilinearly (`align_corners=False`, no antialiasing), as pytorch-fid does (resizing commutes
//! with the affine normalisation).

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{ImageEncoder, Result};

use crate::cnn::{BatchNorm2d, batch_norm, check_images, global_avg_pool};
use crate::weights::{TensorFile, Weights};

/// The side pytorch-fid resizes its inputs to.
pub const INCEPTION_SIZE: usize = 299;
/// The smallest side the network accepts without resizing.
pub const INCEPTION_MIN_SIZE: usize = 75;
/// The width of the pool3 features.
pub const INCEPTION_FEATURES: usize = 2048;
/// The BatchNorm epsilon of pytorch-fid's (torchvision's) `BasicConv2d`.
pub const INCEPTION_BN_EPS: f64 = 0.001;

/// Configuration of pytorch-fid's InceptionV3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InceptionV3Config {
    /// Resize inputs to 299 x 299 bilinearly first (pytorch-fid's `resize_input`, default on);
    /// off, inputs must be at least 75 x 75.
    pub resize_input: bool,
}

impl Default for InceptionV3Config {
    /// pytorch-fid's default: `resize_input=True`.
    fn default() -> Self {
        Self::fid()
    }
}

impl InceptionV3Config {
    /// pytorch-fid's FID network with `resize_input=True`.
    pub fn fid() -> Self {
        Self { resize_input: true }
    }

    /// Sets [`InceptionV3Config::resize_input`].
    pub fn with_resize_input(self, resize_input: bool) -> Self {
        Self { resize_input }
    }

    /// The network with random weights (burn's convolution defaults, BatchNorm at identity
    /// statistics).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<InceptionV3<B>> {
        self.build(&Weights::random(device))
    }

    /// The network with weights from `file`, by pytorch-fid's names; call
    /// [`TensorFile::finish`] afterwards for one error listing every missing, wrongly shaped and
    /// unexpected tensor.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<InceptionV3<B>> {
        self.build(&Weights::from_file_mut(file, device))
    }

    /// [`InceptionV3Config::load`] from a safetensors or PyTorch file (pytorch-fid's
    /// `pt_inception-2015-12-05-6726825d.pth`), checking that every tensor was used; the
    /// encoder's identity is `inception:{path}`.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<InceptionV3<B>> {
        let path = path.as_ref();
        let w = Weights::from_file(TensorFile::open_any(path)?, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net.with_identity(format!("inception:{}", path.display())))
    }

    /// The network with its parameters from `w`, by pytorch-fid's names under `w`'s prefix.
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<InceptionV3<B>> {
        w.ignore(["fc.weight", "fc.bias"]);
        let conv = |name: &str, cin, cout, k| BasicConv2d::new(&w.pp(name), cin, cout, k);
        Ok(InceptionV3 {
            conv_1a: conv("Conv2d_1a_3x3", 3, 32, Kernel::square(3).stride(2)),
            conv_2a: conv("Conv2d_2a_3x3", 32, 32, Kernel::square(3)),
            conv_2b: conv("Conv2d_2b_3x3", 32, 64, Kernel::square(3).pad(1, 1)),
            conv_3b: conv("Conv2d_3b_1x1", 64, 80, Kernel::square(1)),
            conv_4a: conv("Conv2d_4a_3x3", 80, 192, Kernel::square(3)),
            mixed_5: vec![
                InceptionA::new(&w.pp("Mixed_5b"), 192, 32),
                InceptionA::new(&w.pp("Mixed_5c"), 256, 64),
                InceptionA::new(&w.pp("Mixed_5d"), 288, 64),
            ],
            mixed_6a: InceptionB::new(&w.pp("Mixed_6a"), 288),
            mixed_6: vec![
                InceptionC::new(&w.pp("Mixed_6b"), 768, 128),
                InceptionC::new(&w.pp("Mixed_6c"), 768, 160),
                InceptionC::new(&w.pp("Mixed_6d"), 768, 160),
                InceptionC::new(&w.pp("Mixed_6e"), 768, 192),
            ],
            mixed_7a: InceptionD::new(&w.pp("Mixed_7a"), 768),
            mixed_7b: InceptionE::new(&w.pp("Mixed_7b"), 1280, false),
            mixed_7c: InceptionE::new(&w.pp("Mixed_7c"), 2048, true),
            resize_input: self.resize_input,
            identity: "inception".to_string(),
        })
    }
}

/// A convolution's kernel, stride and padding (torch's `kernel_size`, `stride`, `padding`).
#[derive(Debug, Clone, Copy)]
struct Kernel {
    size: [usize; 2],
    stride: usize,
    padding: [usize; 2],
}

impl Kernel {
    fn square(k: usize) -> Self {
        Self::rect(k, k)
    }

    fn rect(kh: usize, kw: usize) -> Self {
        Self {
            size: [kh, kw],
            stride: 1,
            padding: [0, 0],
        }
    }

    fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    fn pad(self, ph: usize, pw: usize) -> Self {
        Self {
            padding: [ph, pw],
            ..self
        }
    }
}

/// torchvision's `BasicConv2d`: a convolution without bias, BatchNorm (eps 0.001) and ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm2d<B>,
}

impl<B: Backend> BasicConv2d<B> {
    fn new(w: &Weights<'_, B>, cin: usize, cout: usize, k: Kernel) -> Self {
        let [ph, pw] = k.padding;
        let config = Conv2dConfig::new([cin, cout], k.size)
            .with_stride([k.stride, k.stride])
            .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
            .with_bias(false);
        let mut bn = batch_norm(w, "bn", cout);
        bn.eps = INCEPTION_BN_EPS;
        Self {
            conv: w.conv2d("conv", &config),
            bn,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// A 3 x 3, stride-1, padding-1 average pool that does not count the padding
/// (`F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`, the FID blocks' patch).
fn avg_pool_3x3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false)
}

/// A 3 x 3, stride-2 max pool without padding (`nn.MaxPool2d(3, 2)`).
fn max_pool_3x3_s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// pytorch-fid's `FIDInceptionA` (`Mixed_5b..5d`).
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch5x5: [BasicConv2d<B>; 2],
    branch3x3dbl: [BasicConv2d<B>; 3],
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionA<B> {
    fn new(w: &Weights<'_, B>, cin: usize, pool_features: usize) -> Self {
        let conv = |name: &str, i, o, k| BasicConv2d::new(&w.pp(name), i, o, k);
        Self {
            branch1x1: conv("branch1x1", cin, 64, Kernel::square(1)),
            branch5x5: [
                conv("branch5x5_1", cin, 48, Kernel::square(1)),
                conv("branch5x5_2", 48, 64, Kernel::square(5).pad(2, 2)),
            ],
            branch3x3dbl: [
                conv("branch3x3dbl_1", cin, 64, Kernel::square(1)),
                conv("branch3x3dbl_2", 64, 96, Kernel::square(3).pad(1, 1)),
                conv("branch3x3dbl_3", 96, 96, Kernel::square(3).pad(1, 1)),
            ],
            branch_pool: conv("branch_pool", cin, pool_features, Kernel::square(1)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        Tensor::cat(
            vec![
                self.branch1x1.forward(x.clone()),
                chain(&self.branch5x5, x.clone()),
                chain(&self.branch3x3dbl, x.clone()),
                self.branch_pool.forward(avg_pool_3x3(x)),
            ],
            1,
        )
    }
}

/// torchvision's `InceptionB` (`Mixed_6a`, the grid reduction to 17 x 17).
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    branch3x3: BasicConv2d<B>,
    branch3x3dbl: [BasicConv2d<B>; 3],
}

impl<B: Backend> InceptionB<B> {
    fn new(w: &Weights<'_, B>, cin: usize) -> Self {
        let conv = |name: &str, i, o, k| BasicConv2d::new(&w.pp(name), i, o, k);
        Self {
            branch3x3: conv("branch3x3", cin, 384, Kernel::square(3).stride(2)),
            branch3x3dbl: [
                conv("branch3x3dbl_1", cin, 64, Kernel::square(1)),
                conv("branch3x3dbl_2", 64, 96, Kernel::square(3).pad(1, 1)),
                conv("branch3x3dbl_3", 96, 96, Kernel::square(3).stride(2)),
            ],
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        Tensor::cat(
            vec![
                self.branch3x3.forward(x.clone()),
                chain(&self.branch3x3dbl, x.clone()),
                max_pool_3x3_s2(x),
            ],
            1,
        )
    }
}

/// pytorch-fid's `FIDInceptionC` (`Mixed_6b..6e`).
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch7x7: [BasicConv2d<B>; 3],
    branch7x7dbl: [BasicConv2d<B>; 5],
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionC<B> {
    fn new(w: &Weights<'_, B>, cin: usize, c7: usize) -> Self {
        let conv = |name: &str, i, o, k| BasicConv2d::new(&w.pp(name), i, o, k);
        let row = Kernel::rect(1, 7).pad(0, 3);
        let col = Kernel::rect(7, 1).pad(3, 0);
        Self {
            branch1x1: conv("branch1x1", cin, 192, Kernel::square(1)),
            branch7x7: [
                conv("branch7x7_1", cin, c7, Kernel::square(1)),
                conv("branch7x7_2", c7, c7, row),
                conv("branch7x7_3", c7, 192, col),
            ],
            branch7x7dbl: [
                conv("branch7x7dbl_1", cin, c7, Kernel::square(1)),
                conv("branch7x7dbl_2", c7, c7, col),
                conv("branch7x7dbl_3", c7, c7, row),
                conv("branch7x7dbl_4", c7, c7, col),
                conv("branch7x7dbl_5", c7, 192, row),
            ],
            branch_pool: conv("branch_pool", cin, 192, Kernel::square(1)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        Tensor::cat(
            vec![
                self.branch1x1.forward(x.clone()),
                chain(&self.branch7x7, x.clone()),
                chain(&self.branch7x7dbl, x.clone()),
                self.branch_pool.forward(avg_pool_3x3(x)),
            ],
            1,
        )
    }
}

/// torchvision's `InceptionD` (`Mixed_7a`, the grid reduction to 8 x 8).
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    branch3x3: [BasicConv2d<B>; 2],
    branch7x7x3: [BasicConv2d<B>; 4],
}

impl<B: Backend> InceptionD<B> {
    fn new(w: &Weights<'_, B>, cin: usize) -> Self {
        let conv = |name: &str, i, o, k| BasicConv2d::new(&w.pp(name), i, o, k);
        Self {
            branch3x3: [
                conv("branch3x3_1", cin, 192, Kernel::square(1)),
                conv("branch3x3_2", 192, 320, Kernel::square(3).stride(2)),
            ],
            branch7x7x3: [
                conv("branch7x7x3_1", cin, 192, Kernel::square(1)),
                conv("branch7x7x3_2", 192, 192, Kernel::rect(1, 7).pad(0, 3)),
                conv("branch7x7x3_3", 192, 192, Kernel::rect(7, 1).pad(3, 0)),
                conv("branch7x7x3_4", 192, 192, Kernel::square(3).stride(2)),
            ],
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        Tensor::cat(
            vec![
                chain(&self.branch3x3, x.clone()),
                chain(&self.branch7x7x3, x.clone()),
                max_pool_3x3_s2(x),
            ],
            1,
        )
    }
}

/// pytorch-fid's `FIDInceptionE_1` (`Mixed_7b`, average pool without the padding) and
/// `FIDInceptionE_2` (`Mixed_7c`, max pool).
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2: [BasicConv2d<B>; 2],
    branch3x3dbl: [BasicConv2d<B>; 2],
    branch3x3dbl_3: [BasicConv2d<B>; 2],
    branch_pool: BasicConv2d<B>,
    max_pool: bool,
}

impl<B: Backend> InceptionE<B> {
    fn new(w: &Weights<'_, B>, cin: usize, max_pool: bool) -> Self {
        let conv = |name: &str, i, o, k| BasicConv2d::new(&w.pp(name), i, o, k);
        let row = Kernel::rect(1, 3).pad(0, 1);
        let col = Kernel::rect(3, 1).pad(1, 0);
        Self {
            branch1x1: conv("branch1x1", cin, 320, Kernel::square(1)),
            branch3x3_1: conv("branch3x3_1", cin, 384, Kernel::square(1)),
            branch3x3_2: [
                conv("branch3x3_2a", 384, 384, row),
                conv("branch3x3_2b", 384, 384, col),
            ],
            branch3x3dbl: [
                conv("branch3x3dbl_1", cin, 448, Kernel::square(1)),
                conv("branch3x3dbl_2", 448, 384, Kernel::square(3).pad(1, 1)),
            ],
            branch3x3dbl_3: [
                conv("branch3x3dbl_3a", 384, 384, row),
                conv("branch3x3dbl_3b", 384, 384, col),
            ],
            branch_pool: conv("branch_pool", cin, 192, Kernel::square(1)),
            max_pool,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3_1.forward(x.clone());
        let [a, b] = &self.branch3x3_2;
        let b3 = Tensor::cat(vec![a.forward(b3.clone()), b.forward(b3)], 1);
        let d3 = chain(&self.branch3x3dbl, x.clone());
        let [a, b] = &self.branch3x3dbl_3;
        let d3 = Tensor::cat(vec![a.forward(d3.clone()), b.forward(d3)], 1);
        let pooled = if self.max_pool {
            max_pool2d(x.clone(), [3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg_pool_3x3(x.clone())
        };
        Tensor::cat(
            vec![
                self.branch1x1.forward(x),
                b3,
                d3,
                self.branch_pool.forward(pooled),
            ],
            1,
        )
    }
}

/// `convs` applied in order.
fn chain<B: Backend>(convs: &[BasicConv2d<B>], x: Tensor<B, 4>) -> Tensor<B, 4> {
    convs.iter().fold(x, |h, conv| conv.forward(h))
}

/// pytorch-fid's InceptionV3 up to pool3, see [`InceptionV3Config`]; an [`ImageEncoder`] of
/// 2048-d features.
#[derive(Module, Debug)]
pub struct InceptionV3<B: Backend> {
    conv_1a: BasicConv2d<B>,
    conv_2a: BasicConv2d<B>,
    conv_2b: BasicConv2d<B>,
    conv_3b: BasicConv2d<B>,
    conv_4a: BasicConv2d<B>,
    mixed_5: Vec<InceptionA<B>>,
    mixed_6a: InceptionB<B>,
    mixed_6: Vec<InceptionC<B>>,
    mixed_7a: InceptionD<B>,
    mixed_7b: InceptionE<B>,
    mixed_7c: InceptionE<B>,
    resize_input: bool,
    #[module(skip)]
    identity: String,
}

impl<B: Backend> InceptionV3<B> {
    /// The pool3 features `[N, 2048]` of inputs already in the network's range `[-1, 1]`, at
    /// their own size (at least 75 x 75; pytorch-fid's blocks 0 to 3).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let h = self.conv_1a.forward(x);
        let h = self.conv_2a.forward(h);
        let h = max_pool_3x3_s2(self.conv_2b.forward(h));
        let h = self.conv_3b.forward(h);
        let mut h = max_pool_3x3_s2(self.conv_4a.forward(h));
        for block in &self.mixed_5 {
            h = block.forward(h);
        }
        h = self.mixed_6a.forward(h);
        for block in &self.mixed_6 {
            h = block.forward(h);
        }
        h = self.mixed_7a.forward(h);
        h = self.mixed_7b.forward(h);
        h = self.mixed_7c.forward(h);
        global_avg_pool(h)
    }

    /// Whether inputs are resized to 299 x 299 first.
    pub fn resize_input(&self) -> bool {
        self.resize_input
    }

    /// Sets the name [`ImageEncoder::identity`] reports (default `inception`;
    /// [`InceptionV3Config::load_file`] sets `inception:{path}`).
    pub fn with_identity(self, identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            ..self
        }
    }
}

/// Bilinear resizing to `size` x `size` with `align_corners=False` (torch's
/// `F.interpolate(x, (size, size), mode="bilinear", align_corners=False)`).
pub fn resize_bilinear<B: Backend>(x: Tensor<B, 4>, size: usize) -> Tensor<B, 4> {
    interpolate(
        x,
        [size, size],
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
    )
}

impl<B: Backend> ImageEncoder<B> for InceptionV3<B> {
    fn embedding_dim(&self) -> usize {
        INCEPTION_FEATURES
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    /// Images `[N, 3, H, W]` in `[-1, 1]` (pytorch-fid's normalised inputs), resized to 299
    /// when [`InceptionV3Config::resize_input`] is on, else at least 75 x 75.
    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        if self.resize_input {
            check_images("InceptionV3 input", images.dims(), 1)?;
            Ok(self.forward(resize_bilinear(images, INCEPTION_SIZE)))
        } else {
            check_images("InceptionV3 input", images.dims(), INCEPTION_MIN_SIZE)?;
            Ok(self.forward(images))
        }
    }
}
