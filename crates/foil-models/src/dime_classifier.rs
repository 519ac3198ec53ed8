//! DiME's CelebA classifier: torchvision's DenseNet-121 feature extractor with a 40-attribute
//! linear head, one attribute explained (`--classifier densenet121:FILE --attribute 31`).
//!
//! # What the authors' code does
//!
//! From DiME (`guillaumejs2403/DiME`, `core/classifier/densenet.py`, "taken from
//! ServiceNow/beyond-trivial-explanations"; MaskDiME's and FastDiME's copies of that file are
//! byte for byte the same):
//!
//! - `DenseNet121` wraps `torchvision.models.densenet121(pretrained=False)` as `feat_extract`
//!   with its `classifier` replaced by `Identity`: it returns torchvision's pooled features
//!   (`features`, ReLU, adaptive average pooling, flatten), 1024 of them (`output_size`);
//! - `ClassificationModel(path, query_label)` is `feat_extract = DenseNet121()` followed by
//!   `classifier = nn.Linear(1024, 40)`; its `forward(x)` returns `x[:, query_label]`, the raw
//!   logit of one attribute (no sigmoid: DiME applies `sigmoid` / `logsigmoid` itself, in
//!   `core/sample_utils.py` `clean_class_cond_fn` and `main.py`, and predicts `logit > 0`);
//!   `forward(x, get_other_attrs=True)` also returns all 40 logits
//!   ([`DimeClassifier::all_logits`] here);
//! - the checkpoint is read by `torch.load(path, map_location='cpu')` as a dictionary of two
//!   state dicts, `state_dict['feat_extract']` (names `feat_extract.features.conv0.weight`, ...,
//!   torchvision's current dense-layer spelling, BatchNorm `num_batches_tracked` included, no
//!   `feat_extract.classifier.*` since that module is an `Identity`) and
//!   `state_dict['classifier']` (`weight` `[40, 1024]`, `bias` `[40]`). Flattened with `.`, as
//!   [`TensorFile::open_pytorch`] reads nested dictionaries, that is
//!   `feat_extract.feat_extract.features.*` and `classifier.{weight,bias}`: exactly the names of
//!   the whole `ClassificationModel`'s `state_dict()`, so a flat state dict of the model loads
//!   too;
//! - inputs are images in `[-1, 1]`, fed unchanged: `main.py` calls `classifier(img)` on its
//!   CelebA loader's images, whose transform ends with `Normalize([0.5] * 3, [0.5] * 3)`
//!   (`core/image_datasets.py` `CelebADataset`, 128 x 128 in `test.sh`), and the guidance
//!   differentiates `classifier(x_t)` on the diffusion model's clean estimate, also in
//!   `[-1, 1]`. No ImageNet statistics, no mapping to `[0, 1]` (only the oracle of
//!   `eval_utils/oracle_metrics.py` maps to `[0, 1]`);
//! - the attribute is `--query_label` (CelebA's `list_attr_celeba` column order; `test.sh` and
//!   the README use 31, Smiling). `main.py`'s default `-1` is Python indexing: the last
//!   attribute, 39 (Young); here the index must be `0..num_attributes`.
//!
//! # Loading
//!
//! [`DimeClassifierConfig::build`] finds the layout's root in a file: the names above as they
//! are, or under one prefix, such as `module.` (a `DataParallel(ClassificationModel)` state
//! dict) or a wrapping key (`model_state_dict.`, ...), found by the unique name ending in
//! `feat_extract.feat_extract.features.conv0.weight`. The feature extractor is a
//! [`DenseNet`] built under `feat_extract.feat_extract` (either spelling of the dense layers).
//!
//! The extractor is built without a classifier (`DenseNetConfig::with_outputs(0)`, torchvision's
//! `Identity`), so the layout's names are exactly the network's: [`Weights::finish`] reports
//! anything missing, misshapen or left over.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::{Classifier, Error, Result};

use crate::cnn::{Normalization, check_images};
use crate::densenet::{DenseNet, DenseNetConfig};
use crate::weights::{TensorFile, Weights};

/// CelebA's 40 attributes in `list_attr_celeba` column order: the index DiME's
/// `--query_label` (and [`DimeClassifierConfig::attribute`]) selects (31: `Smiling`,
/// 39: `Young`).
pub const CELEBA_ATTRIBUTES: [&str; 40] = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
];

/// The index of a CelebA attribute by name (ASCII case-insensitive), see
/// [`CELEBA_ATTRIBUTES`].
pub fn celeba_attribute_index(name: &str) -> Option<usize> {
    CELEBA_ATTRIBUTES
        .iter()
        .position(|a| a.eq_ignore_ascii_case(name))
}

/// The feature extractor's first tensor, relative to the layout's root.
const CONV0: &str = "feat_extract.feat_extract.features.conv0.weight";
/// Configuration of DiME's CelebA classifier (the authors' `ClassificationModel`).
#[derive(Debug, Clone, PartialEq)]
pub struct DimeClassifierConfig {
    /// The DenseNet feature extractor's widths and blocks (DenseNet-121); its `num_outputs` and
    /// `normalization` are not used (the authors' extractor has no classifier, and images in
    /// `[-1, 1]` go in unchanged).
    pub densenet: DenseNetConfig,
    /// Outputs of the linear head (CelebA: 40 attributes).
    pub num_attributes: usize,
    /// The explained attribute, `0..num_attributes` (the authors' `query_label`; see
    /// [`CELEBA_ATTRIBUTES`]).
    pub attribute: usize,
}

impl DimeClassifierConfig {
    /// The authors' model: DenseNet-121 features, 40 CelebA attributes, explaining `attribute`
    /// (6,994,856 parameters in PyTorch).
    pub fn celeba(attribute: usize) -> Self {
        Self {
            densenet: DenseNetConfig::densenet121(),
            num_attributes: CELEBA_ATTRIBUTES.len(),
            attribute,
        }
    }

    /// A tiny twin for tests: [`DenseNetConfig::tiny`]'s widths (14 features), 40 attributes
    /// (`tools/record_dime_classifier.py` records the authors' class at these widths).
    pub fn tiny(attribute: usize) -> Self {
        Self {
            densenet: DenseNetConfig::tiny(),
            ..Self::celeba(attribute)
        }
    }

    /// Sets the explained attribute.
    pub fn with_attribute(self, attribute: usize) -> Self {
        Self { attribute, ..self }
    }

    /// Sets the number of head outputs.
    pub fn with_num_attributes(self, num_attributes: usize) -> Self {
        Self {
            num_attributes,
            ..self
        }
    }

    /// Sets the feature extractor's configuration.
    pub fn with_densenet(self, densenet: DenseNetConfig) -> Self {
        Self { densenet, ..self }
    }

    /// Checks that there is at least one attribute and that [`attribute`](Self::attribute)
    /// indexes one: an [`Error::OutOfRange`] naming the index and the count otherwise.
    pub fn validate(&self) -> Result<()> {
        check_attribute(self.attribute, self.num_attributes)
    }

    /// The network with random weights (DenseNet's initialisation, burn's default linear head).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<DimeClassifier<B>> {
        self.build(&Weights::random(device))
    }

    /// The network from `file` in the authors' layout (see the [module docs](self)), checked
    /// at once: one error lists every missing, wrongly shaped and unexpected tensor.
    pub fn load<B: Backend>(
        &self,
        file: &mut TensorFile,
        device: &B::Device,
    ) -> Result<DimeClassifier<B>> {
        let w = Weights::from_file_mut(file, device);
        let net = self.build(&w)?;
        w.finish()?;
        Ok(net)
    }

    /// [`load`](Self::load) from a PyTorch checkpoint (`.pt`, `.pth`: the authors'
    /// `classifier.pth`) or a safetensors file.
    pub fn load_file<B: Backend>(
        &self,
        path: impl AsRef<std::path::Path>,
        device: &B::Device,
    ) -> Result<DimeClassifier<B>> {
        let mut file = TensorFile::open_any(path)?;
        self.load(&mut file, device)
    }

    /// The network with its parameters from `w`, by the authors' names under `w`'s prefix or,
    /// for a file, under the one deeper prefix that holds them (`module.`, ...); finish with
    /// [`Weights::finish`].
    pub fn build<B: Backend>(&self, w: &Weights<'_, B>) -> Result<DimeClassifier<B>> {
        self.validate()?;
        let root = layout_root(w);
        let densenet = self
            .densenet
            .clone()
            .with_outputs(0)
            .with_normalization(Normalization::identity());
        let features = densenet.build(&root.pp("feat_extract").pp("feat_extract"))?;
        let head = root.linear(
            "classifier",
            densenet.num_features(),
            self.num_attributes,
            true,
        );
        Ok(DimeClassifier {
            features,
            head,
            attribute: self.attribute,
        })
    }
}

/// `w`, or `w` scoped under the one prefix of its file that holds the authors' layout.
fn layout_root<'a, B: Backend>(w: &Weights<'a, B>) -> Weights<'a, B> {
    if !w.is_file() || w.contains(CONV0) {
        return w.clone();
    }
    let names = w.names();
    let roots: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(CONV0)?.strip_suffix('.'))
        .collect();
    match roots.as_slice() {
        [root] => w.pp(root),
        // None (reported as missing by `Weights::finish`) or ambiguous: the names as they are.
        _ => w.clone(),
    }
}

fn check_attribute(attribute: usize, num_attributes: usize) -> Result<()> {
    if num_attributes == 0 {
        return Err(Error::out_of_range(
            "DiME classifier num_attributes",
            ">= 1",
            num_attributes,
        ));
    }
    if attribute >= num_attributes {
        return Err(Error::out_of_range(
            "DiME classifier attribute",
            format!(
                "an index below the number of attributes, {num_attributes} (0 to {})",
                num_attributes - 1
            ),
            attribute,
        ));
    }
    Ok(())
}

/// DiME's CelebA classifier (the authors' `ClassificationModel`): DenseNet pooled features, a
/// linear head of one logit per attribute, one of them explained. As a
/// [`foil_core::Classifier`] it has one logit: the explained attribute's, before the sigmoid,
/// for images in `[-1, 1]` fed unchanged.
#[derive(Module, Debug)]
pub struct DimeClassifier<B: Backend> {
    /// The feature extractor; its own one-output classifier is never used.
    features: DenseNet<B>,
    head: Linear<B>,
    attribute: usize,
}

impl<B: Backend> DimeClassifier<B> {
    /// The explained attribute's index.
    pub fn attribute(&self) -> usize {
        self.attribute
    }

    /// Number of head outputs (CelebA: 40).
    pub fn num_attributes(&self) -> usize {
        self.head.weight.dims()[1]
    }

    /// The same network explaining another attribute (an [`Error::OutOfRange`] naming the
    /// index and the count if there is no such attribute).
    pub fn with_attribute(self, attribute: usize) -> Result<Self> {
        check_attribute(attribute, self.num_attributes())?;
        Ok(Self { attribute, ..self })
    }

    /// The DenseNet feature extractor (its [`DenseNet::pooled_features`] feed the head; its
    /// own classifier is unused).
    pub fn densenet(&self) -> &DenseNet<B> {
        &self.features
    }

    /// The smallest input height and width accepted (DenseNet-121: 29).
    pub fn min_input_size(&self) -> usize {
        self.features.min_input_size()
    }

    /// The pooled features `[N, C]` (the authors' `DenseNet121.forward`) of images
    /// `[N, 3, H, W]` in `[-1, 1]`.
    pub fn pooled_features(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        check_images(
            "DiME classifier input",
            images.dims(),
            self.min_input_size(),
        )?;
        Ok(self.features.pooled_features(images))
    }

    /// Every attribute's logit `[N, num_attributes]` (the authors' second output with
    /// `get_other_attrs=True`) for images in `[-1, 1]`.
    pub fn all_logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(self.head.forward(self.pooled_features(images)?))
    }
}

impl<B: Backend> Classifier<B> for DimeClassifier<B> {
    fn num_logits(&self) -> usize {
        1
    }

    /// The explained attribute's logit `[N, 1]` (the authors' `forward`, before any sigmoid)
    /// for images `[N, 3, H, W]` in `[-1, 1]`, fed unchanged; images smaller than
    /// [`DimeClassifier::min_input_size`] are an error.
    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(self.all_logits(images)?.narrow(1, self.attribute, 1))
    }
}
