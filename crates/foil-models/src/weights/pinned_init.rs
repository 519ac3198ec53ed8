//! Random initialisation is pinned: the same seed gives the same parameters (bit for bit) for
//! every network's `init`, as before the networks moved to [`Weights`](super::Weights).
//!
//! A unit test, not in `tests/models`: the backend's generator is global, and the integration
//! tests running beside it in parallel would draw from it between the seed and the draws.

use burn::backend::NdArray;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

type B = NdArray;

struct Digest(u64, usize);

impl ModuleVisitor<B> for Digest {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let values = param.val().into_data().to_vec::<f32>().unwrap();
        for v in values {
            for byte in v.to_bits().to_le_bytes() {
                self.0 = (self.0 ^ byte as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        self.1 += 1;
    }
}

fn digest<M: Module<B>>(m: &M) -> String {
    let mut d = Digest(0xcbf2_9ce4_8422_2325, 0);
    m.visit(&mut d);
    format!("{:016x}/{}", d.0, d.1)
}

fn digests() -> Vec<(&'static str, String)> {
    use crate::{adm, alexnet, clip, efficientnet, kandinsky, mobilenet, resnet, vgg};
    let dev = Default::default();
    let mut out = Vec::new();
    macro_rules! pin {
        ($name:expr, $net:expr) => {{
            B::seed(&dev, 20_26);
            let net = $net;
            out.push(($name, digest(&net)));
        }};
    }
    pin!(
        "resnet",
        resnet::ResNetConfig::tiny().init::<B>(&dev).unwrap()
    );
    pin!(
        "mobilenet",
        mobilenet::MobileNetV2Config::tiny()
            .init::<B>(&dev)
            .unwrap()
    );
    pin!(
        "efficientnet",
        efficientnet::EfficientNetConfig::tiny()
            .init::<B>(&dev)
            .unwrap()
    );
    pin!("adm", adm::AdmConfig::tiny().init::<B>(&dev).unwrap());
    pin!(
        "adm_cond",
        adm::AdmConfig::tiny_cond().init::<B>(&dev).unwrap()
    );
    pin!(
        "unet",
        kandinsky::UNetConfig::tiny().init::<B>(&dev).unwrap()
    );
    pin!(
        "movq",
        kandinsky::MoVqConfig::tiny().init::<B>(&dev).unwrap()
    );
    pin!(
        "clip",
        clip::ClipVisionConfig::tiny().init::<B>(&dev).unwrap()
    );
    pin!("vgg19", vgg::Vgg19Config::tiny().init::<B>(&dev).unwrap());
    pin!("vgg16", vgg::Vgg16Config::tiny().init::<B>(&dev));
    pin!("alexnet", alexnet::AlexNetConfig::tiny().init::<B>(&dev));
    out
}

/// FNV-1a of every parameter's bits (in visit order) and the parameter count, recorded with
/// each network's own initialisation code before the networks moved to `Weights`.
const PINNED: [(&str, &str); 11] = [
    ("resnet", "6096c8225348e6a8/102"),
    ("mobilenet", "5f1e459cc04e1f0c/262"),
    ("efficientnet", "799436186f3d8034/197"),
    ("adm", "292b64c7da665cc2/142"),
    ("adm_cond", "694009f73d7bed0c/129"),
    ("unet", "b988bbf540c49606/280"),
    ("movq", "692f7a07ad7788c7/219"),
    ("clip", "8b14ee6c668393ba/40"),
    ("vgg19", "8b399827e592b2b4/16"),
    ("vgg16", "4d849bc080e44f44/26"),
    ("alexnet", "de940632820d8bb2/10"),
];

#[test]
fn random_init_is_pinned_per_seed() {
    let found = digests();
    for ((name, digest), (pinned_name, pinned)) in found.iter().zip(PINNED) {
        assert_eq!(*name, pinned_name);
        assert_eq!(digest, pinned, "{name}: init changed for the same seed");
    }
    assert_eq!(found.len(), PINNED.len());
}
