//! Training on the procedural kiki/bouba set at 16x16 with tiny models, on
//! `Autodiff<Flex>`: the classifier learns, the DDPM's loss falls, resume is exact and a
//! corrupted checkpoint is reported without deleting anything.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use foil_core::Classifier;
use foil_core::image_io::{ColorMode, Resize};
use foil_core::{Denoiser, Noise};
use foil_models::adm::AdmConfig;
use foil_schedule::{BetaSchedule, NoiseSchedule, Steps};
use foil_train::{
    Augment, ImageSet, LrSchedule, TrainConfig, evaluate_accuracy, read_metrics, train_classifier,
    train_ddpm,
};

// burn-flex: its convolution backward is GEMM-based; burn-ndarray's is per-element and made
// the DDPM test take minutes (docs/train.md).
type B = Autodiff<Flex>;
type I = Flex;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foil-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small CNN classifier: two stride-2 3x3 convolutions, global average pooling, one logit.
#[derive(Module, Debug)]
struct SmallCnn<B: Backend> {
    c1: Conv2d<B>,
    c2: Conv2d<B>,
    fc: Linear<B>,
}

impl<Bk: Backend> Classifier<Bk> for SmallCnn<Bk> {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, images: Tensor<Bk, 4>) -> foil_core::Result<Tensor<Bk, 2>> {
        let h = relu(self.c1.forward(images));
        let h = relu(self.c2.forward(h));
        let [n, c, hh, ww] = h.dims();
        let pooled = h.reshape([n, c, hh * ww]).mean_dim(2).reshape([n, c]);
        Ok(self.fc.forward(pooled))
    }
}

fn tiny_cnn(device: &burn::backend::flex::FlexDevice) -> SmallCnn<B> {
    let conv = |i, o| {
        Conv2dConfig::new([i, o], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device)
    };
    let model = SmallCnn {
        c1: conv(1, 8),
        c2: conv(8, 16),
        fc: LinearConfig::new(16, 1).init(device),
    };
    // Parameters are initialised lazily: force it, so clones share the same values.
    let _ = weights::<B, _>(&model);
    model
}

/// Every float parameter, flattened, in visiting order.
fn weights<Bk: Backend, M: Module<Bk>>(model: &M) -> Vec<f32> {
    struct All(Vec<f32>);
    impl<Bk: Backend> ModuleVisitor<Bk> for All {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.extend(
                param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap(),
            );
        }
    }
    let mut all = All(Vec::new());
    model.visit(&mut all);
    all.0
}

fn kiki_bouba_sets(
    per_class: usize,
    mode: ColorMode,
) -> (ImageSet<B>, ImageSet<I>, burn::backend::flex::FlexDevice) {
    let device = Default::default();
    let data = foil_data::procedural::kiki_bouba(per_class, 16, 3).unwrap();
    let split = data.split(0.25, 3).unwrap();
    let train =
        ImageSet::<B>::from_dataset(&data, &split.train, mode, Resize::Keep, &device).unwrap();
    let test =
        ImageSet::<I>::from_dataset(&data, &split.test, mode, Resize::Keep, &device).unwrap();
    (train, test, device)
}

#[test]
fn classifier_learns_kiki_bouba() {
    let (train, test, device) = kiki_bouba_sets(80, ColorMode::Gray);
    let dir = out_dir("classifier");
    let config = TrainConfig::new(60, 32, 1e-2, &dir)
        .with_seed(1)
        .with_checkpoint_every(30);
    let model = tiny_cnn(&device);
    let before = evaluate_accuracy(&model.valid(), &test, 64).unwrap();
    let t0 = Instant::now();
    let trained = train_classifier(model, &train, &config).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let after = evaluate_accuracy(&trained.model.valid(), &test, 64).unwrap();
    let log = read_metrics(&config.metrics_path()).unwrap();
    let first: f64 = log[..5].iter().map(|l| l.loss).sum::<f64>() / 5.0;
    let last: f64 = log[log.len() - 5..].iter().map(|l| l.loss).sum::<f64>() / 5.0;
    eprintln!(
        "classifier: {} steps in {secs:.1} s, loss (mean of 5) {first:.4} -> {last:.4}, \
         held-out accuracy {before:.3} -> {after:.3} on {} images",
        log.len(),
        test.len()
    );
    assert_eq!(log.len(), 60);
    assert!(log.iter().all(|l| l.accuracy.is_some()));
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // Usually 0.95 (chance: 0.5); the initial weights are not seeded (burn's backend RNG is
    // global and the tests run in parallel) and one run gave 0.900 (36 of 40), so the bar
    // leaves room.
    assert!(after >= 0.85, "held-out accuracy {after}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// MSE of the eps prediction on a fixed batch, fixed timesteps and fixed noise.
fn fixed_ddpm_loss<M: Denoiser<I>>(model: &M, images: &ImageSet<I>, steps: &Steps) -> f32 {
    let idx: Vec<usize> = (0..images.len().min(16)).collect();
    let (x0, _) = images.batch(&idx).unwrap();
    let t: Vec<usize> = (0..idx.len()).map(|i| (i * 37) % steps.len()).collect();
    let noise = Noise::new(99).normal_like(&x0);
    let x_t = steps.q_sample(x0, &t, noise.clone()).unwrap();
    let eps = model.forward(x_t, &t, None).unwrap().eps;
    (eps - noise).powi_scalar(2).mean().into_scalar()
}

#[test]
fn ddpm_loss_falls() {
    let (train, _, device) = kiki_bouba_sets(32, ColorMode::Gray);
    let eval_set = train.to_backend::<I>(&device);
    let schedule = NoiseSchedule::new(&BetaSchedule::ddpm(), 100).unwrap();
    let steps = Steps::full(&schedule);
    let mut cfg = AdmConfig::tiny();
    cfg.in_channels = 1;
    // The ADM builds its parameters from computed tensors: build on the inner backend.
    let model = foil_train::trainable(<foil_models::adm::Adm<B> as AutodiffModule<B>>::from_inner(
        cfg.init::<I>(&device).unwrap(),
    ));
    let before = fixed_ddpm_loss(&model.valid(), &eval_set, &steps);
    let dir = out_dir("ddpm");
    let config = TrainConfig::new(12, 8, 2e-3, &dir).with_seed(2);
    let t0 = Instant::now();
    let trained = train_ddpm(model, &train, &schedule, &config).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let after = fixed_ddpm_loss(&trained.model.valid(), &eval_set, &steps);
    let log = read_metrics(&config.metrics_path()).unwrap();
    eprintln!(
        "ddpm: {} steps in {secs:.1} s, fixed-batch eps MSE {before:.4} -> {after:.4}, \
         logged loss first {:.4} last {:.4}",
        log.len(),
        log[0].loss,
        log[log.len() - 1].loss
    );
    assert_eq!(log.len(), 12);
    assert!(after < 0.8 * before, "eps MSE {before} -> {after}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_gives_the_same_weights_and_an_unbroken_log() {
    let (train, _, device) = kiki_bouba_sets(16, ColorMode::Gray);
    let init = tiny_cnn(&device);
    let n = 8;
    // Augmented batches: their draws too must be a function of (seed, step) alone.
    let augment = Augment {
        flip: true,
        shift: 2,
    };

    let dir_a = out_dir("resume-a");
    let config_a = TrainConfig::new(n, 8, 1e-2, &dir_a)
        .with_seed(5)
        .with_augment(augment);
    let a = train_classifier(init.clone(), &train, &config_a).unwrap();
    assert_eq!(a.resumed_from, None);

    let dir_b = out_dir("resume-b");
    let half = TrainConfig::new(n / 2, 8, 1e-2, &dir_b)
        .with_seed(5)
        .with_augment(augment);
    let first = train_classifier(init.clone(), &train, &half).unwrap();
    assert_eq!(first.losses.len(), n / 2);
    // A leftover log line past the checkpoint (as after a crash) must be dropped on resume.
    let mut log = std::fs::read_to_string(half.metrics_path()).unwrap();
    log.push_str("{\"step\":5,\"loss\":123.0}\n");
    std::fs::write(half.metrics_path(), log).unwrap();
    // Resume into a differently initialised model: the checkpoint must overwrite it.
    let full = TrainConfig::new(n, 8, 1e-2, &dir_b)
        .with_seed(5)
        .with_augment(augment);
    let b = train_classifier(tiny_cnn(&device), &train, &full).unwrap();
    assert_eq!(b.resumed_from, Some(n / 2));
    assert_eq!(b.losses.len(), n / 2);

    let (wa, wb) = (weights(&a.model.valid()), weights(&b.model.valid()));
    assert_eq!(wa.len(), wb.len());
    let max_diff = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let moved = weights(&init.valid())
        .iter()
        .zip(&wa)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "resume: max |w_one_go - w_resumed| = {max_diff:e}; training moved weights by {moved:e}"
    );
    assert!(max_diff <= 1e-6, "max weight diff {max_diff}");
    assert!(moved > 1e-3, "training did not move the weights ({moved})");

    let (la, lb) = (
        read_metrics(&config_a.metrics_path()).unwrap(),
        read_metrics(&full.metrics_path()).unwrap(),
    );
    assert_eq!(
        lb.iter().map(|l| l.step).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    for (x, y) in la.iter().zip(&lb) {
        assert!((x.loss - y.loss).abs() <= 1e-6, "{x:?} vs {y:?}");
        assert_eq!(x.accuracy, y.accuracy);
    }

    // Running again at the same target does nothing.
    let again = train_classifier(tiny_cnn(&device), &train, &full).unwrap();
    assert_eq!(again.resumed_from, Some(n));
    assert!(again.losses.is_empty());
    assert_eq!(weights(&again.model.valid()), wb);

    // Resuming with another seed, or without the augmentation, is refused.
    let other = TrainConfig::new(n + 2, 8, 1e-2, &dir_b)
        .with_seed(6)
        .with_augment(augment);
    let err = train_classifier(tiny_cnn(&device), &train, &other).unwrap_err();
    assert!(err.to_string().contains("another run"), "{err}");
    let plain = TrainConfig::new(n + 2, 8, 1e-2, &dir_b).with_seed(5);
    let err = train_classifier(tiny_cnn(&device), &train, &plain).unwrap_err();
    assert!(err.to_string().contains("another run"), "{err}");

    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}

/// A cosine-scheduled run killed after its step-3 checkpoint (simulated by removing the later
/// checkpoints) and rerun with the same settings ends with the weights of an uninterrupted run;
/// and the schedule is really used (a constant rate ends elsewhere).
#[test]
fn cosine_schedule_resumes_exactly() {
    let (train, _, device) = kiki_bouba_sets(16, ColorMode::Gray);
    let init = tiny_cnn(&device);
    let n = 6;
    let cosine = LrSchedule::Cosine { warmup: 2 };
    let config = |dir: &PathBuf| {
        let mut c = TrainConfig::new(n, 8, 1e-2, dir)
            .with_seed(2)
            .with_checkpoint_every(1)
            .with_lr_schedule(cosine);
        c.keep_checkpoints = n;
        c
    };
    let dir_a = out_dir("cosine-a");
    let a = train_classifier(init.clone(), &train, &config(&dir_a)).unwrap();
    let dir_b = out_dir("cosine-b");
    train_classifier(init.clone(), &train, &config(&dir_b)).unwrap();
    for step in 4..=n {
        std::fs::remove_dir_all(
            config(&dir_b)
                .checkpoints_dir()
                .join(format!("step-{step:08}")),
        )
        .unwrap();
    }
    let b = train_classifier(tiny_cnn(&device), &train, &config(&dir_b)).unwrap();
    assert_eq!(b.resumed_from, Some(3));
    let (wa, wb) = (weights(&a.model.valid()), weights(&b.model.valid()));
    let max_diff = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-6, "max weight diff {max_diff}");

    let dir_c = out_dir("cosine-c");
    let constant = TrainConfig::new(n, 8, 1e-2, &dir_c).with_seed(2);
    let c = train_classifier(init, &train, &constant).unwrap();
    let wc = weights(&c.model.valid());
    let apart = wa
        .iter()
        .zip(&wc)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        apart > 1e-4,
        "cosine and constant rates gave the same weights ({apart})"
    );

    // A warm-up as long as the run is refused before anything is written.
    let dir_d = out_dir("cosine-d");
    let bad =
        TrainConfig::new(4, 8, 1e-2, &dir_d).with_lr_schedule(LrSchedule::Cosine { warmup: 4 });
    let err = train_classifier(tiny_cnn(&device), &train, &bad).unwrap_err();
    assert!(err.to_string().contains("warm-up"), "{err}");
    assert!(!dir_d.exists());
    for d in [dir_a, dir_b, dir_c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn corrupted_checkpoint_is_reported_and_kept() {
    let (train, _, device) = kiki_bouba_sets(8, ColorMode::Gray);
    let dir = out_dir("corrupt");
    let config = TrainConfig::new(2, 8, 1e-2, &dir).with_checkpoint_every(1);
    train_classifier(tiny_cnn(&device), &train, &config).unwrap();
    let ckpts = config.checkpoints_dir();
    let latest = ckpts.join("step-00000002");
    let model_file = latest.join("model.mpk");
    let bytes = std::fs::read(&model_file).unwrap();
    std::fs::write(&model_file, &bytes[..bytes.len() / 3]).unwrap();
    let log_before = std::fs::read(config.metrics_path()).unwrap();

    let more = TrainConfig::new(4, 8, 1e-2, &dir).with_checkpoint_every(1);
    let err = train_classifier(tiny_cnn(&device), &train, &more).unwrap_err();
    let msg = err.to_string();
    eprintln!("corrupted checkpoint: {msg}");
    assert!(
        msg.contains("step-00000002") && msg.contains("model.mpk"),
        "{msg}"
    );
    assert!(msg.contains("Nothing was deleted"), "{msg}");
    assert!(
        msg.contains("truncated or corrupt") && !msg.contains("0.14.0"),
        "{msg}"
    );
    assert!(ckpts.join("step-00000001").join("model.mpk").exists());
    assert_eq!(std::fs::read(&model_file).unwrap().len(), bytes.len() / 3);
    assert_eq!(std::fs::read(config.metrics_path()).unwrap(), log_before);

    // A broken state.json is reported the same way.
    std::fs::write(latest.join("state.json"), "{not json").unwrap();
    let err = train_classifier(tiny_cnn(&device), &train, &more).unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An image encoder and a decoder conditioned on its embeddings, as DIFFusion's pipeline joins
/// them.
#[derive(Module, Debug)]
struct EncDec<B: Backend> {
    enc: foil_models::clip::ClipVision<B>,
    unet: foil_models::kandinsky::KandinskyUNet<B>,
}

impl<Bk: Backend> Denoiser<Bk> for EncDec<Bk> {
    fn channels(&self) -> usize {
        self.unet.channels()
    }
    fn learned_variance(&self) -> bool {
        false
    }
    fn condition_dim(&self) -> Option<usize> {
        self.unet.condition_dim()
    }
    fn forward(
        &self,
        x_t: Tensor<Bk, 4>,
        t: &[usize],
        cond: Option<Tensor<Bk, 2>>,
    ) -> foil_core::Result<foil_core::DenoiserOutput<Bk>> {
        self.unet.forward(x_t, t, cond)
    }
}

impl<Bk: Backend> foil_core::ImageEncoder<Bk> for EncDec<Bk> {
    fn embedding_dim(&self) -> usize {
        self.enc.embedding_dim()
    }
    fn identity(&self) -> String {
        "test".into()
    }
    fn encode(&self, images: Tensor<Bk, 4>) -> foil_core::Result<Tensor<Bk, 2>> {
        self.enc.encode(images)
    }
}

fn enc_dec(
    embedding: usize,
    condition: usize,
    device: &burn::backend::flex::FlexDevice,
) -> EncDec<B> {
    use foil_models::clip::{ClipImageProcessor, ClipVisionConfig};
    use foil_models::kandinsky::UNetConfig;
    let enc = ClipVisionConfig {
        image_size: 16,
        patch_size: 4,
        projection_dim: embedding,
        ..ClipVisionConfig::tiny()
    }
    .init::<I>(device)
    .unwrap()
    .with_processor(ClipImageProcessor::for_size(16))
    .unwrap();
    let unet = UNetConfig {
        in_channels: 3,
        out_channels: 3,
        encoder_hid_dim: condition,
        sample_size: 16,
        ..UNetConfig::tiny()
    }
    .init::<I>(device)
    .unwrap();
    foil_train::trainable(<EncDec<B> as AutodiffModule<B>>::from_inner(EncDec {
        enc,
        unet,
    }))
}

#[test]
fn embedding_ddpm_trains_decoder_and_encoder_together() {
    use foil_core::ImageEncoder;
    let (train, _, device) = kiki_bouba_sets(32, ColorMode::Rgb);
    let eval_set = train.to_backend::<I>(&device);
    let schedule = NoiseSchedule::new(&BetaSchedule::ddpm(), 100).unwrap();
    let steps = Steps::full(&schedule);
    let model = enc_dec(24, 24, &device);
    // The eps MSE on a fixed batch, conditioned on the model's own embeddings.
    let loss = |m: &EncDec<I>| {
        let idx: Vec<usize> = (0..16).collect();
        let (x0, _) = eval_set.batch(&idx).unwrap();
        let t: Vec<usize> = (0..16).map(|i| (i * 37) % 100).collect();
        let noise = Noise::new(99).normal_like(&x0);
        let c = m.encode(x0.clone()).unwrap();
        let x_t = steps.q_sample(x0, &t, noise.clone()).unwrap();
        let eps = m.forward(x_t, &t, Some(c)).unwrap().eps;
        (eps - noise).powi_scalar(2).mean().into_scalar()
    };
    let before_model = model.valid();
    let before = loss(&before_model);
    let dir = out_dir("embedding-ddpm");
    let config = TrainConfig::new(12, 8, 2e-3, &dir).with_seed(5);
    let t0 = Instant::now();
    let trained =
        foil_train::train_embedding_ddpm(model, &train, &schedule, 0.1, true, &config).unwrap();
    let after_model = trained.model.valid();
    let after = loss(&after_model);
    eprintln!(
        "embedding ddpm: 12 steps in {:.1} s, eps MSE {before:.4} -> {after:.4}",
        t0.elapsed().as_secs_f64()
    );
    assert!(after < 0.8 * before, "eps MSE {before} -> {after}");
    // The gradient reaches the encoder through the condition: its weights moved.
    let (w0, w1) = (weights(&before_model.enc), weights(&after_model.enc));
    let moved = w0.iter().zip(&w1).filter(|(a, b)| a != b).count();
    assert!(
        moved > w0.len() / 2,
        "{moved} of {} encoder weights moved",
        w0.len()
    );
    // With a frozen encoder only the decoder moves.
    let dir2 = out_dir("embedding-ddpm-frozen");
    let config = TrainConfig::new(3, 8, 2e-3, &dir2).with_seed(5);
    let model = enc_dec(24, 24, &device);
    let enc_before = weights(&model.valid().enc);
    let unet_before = weights(&model.valid().unet);
    let trained =
        foil_train::train_embedding_ddpm(model, &train, &schedule, 0.1, false, &config).unwrap();
    let frozen = trained.model.valid();
    assert_eq!(weights(&frozen.enc), enc_before);
    assert_ne!(weights(&frozen.unet), unet_before);
    let _ = std::fs::remove_dir_all(&dir2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embedding_ddpm_rejects_bad_settings() {
    let (train, _, device) = kiki_bouba_sets(8, ColorMode::Rgb);
    let schedule = NoiseSchedule::new(&BetaSchedule::ddpm(), 100).unwrap();
    let dir = out_dir("embedding-ddpm-bad");
    let config = TrainConfig::new(1, 4, 1e-3, &dir);
    let err = foil_train::train_embedding_ddpm(
        enc_dec(24, 24, &device),
        &train,
        &schedule,
        1.0,
        true,
        &config,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("condition drop probability"), "{err}");
    // The encoder makes 16 values, the decoder wants 24.
    let err = foil_train::train_embedding_ddpm(
        enc_dec(16, 24, &device),
        &train,
        &schedule,
        0.1,
        true,
        &config,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("16 values") && err.contains("24"), "{err}");
    assert!(!dir.exists(), "nothing is written for a refused run");
}

#[test]
fn multiclass_training_learns_and_checks_labels() {
    use foil_models::clip::{ClipImageProcessor, ClipVisionConfig};
    let (train, test, device) = kiki_bouba_sets(48, ColorMode::Rgb);
    // A tiny ViT whose two embedding values are the logits.
    let enc = ClipVisionConfig {
        image_size: 16,
        patch_size: 4,
        projection_dim: 2,
        ..ClipVisionConfig::tiny()
    }
    .init::<I>(&device)
    .unwrap()
    .with_processor(ClipImageProcessor::for_size(16))
    .unwrap();
    let model = foil_train::trainable(<Vit<B> as AutodiffModule<B>>::from_inner(Vit { enc }));
    let dir = out_dir("multiclass");
    let config = TrainConfig::new(40, 16, 3e-3, &dir).with_seed(1);
    let trained = foil_train::train_multiclass(model, &train, &config).unwrap();
    let model = trained.model.valid();
    let idx: Vec<usize> = (0..test.len()).collect();
    let (x, labels) = test.batch(&idx).unwrap();
    let predicted = foil_core::predicted_labels(&model, x).unwrap();
    let right = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    let accuracy = right as f64 / labels.len() as f64;
    eprintln!("multiclass: held-out accuracy {accuracy}");
    assert!(accuracy >= 0.8, "held-out accuracy {accuracy}");
    let log = read_metrics(&config.metrics_path()).unwrap();
    assert!(log.iter().all(|l| l.accuracy.is_some()));
    // One logit is not a multi-class classifier.
    let one = ClipVisionConfig {
        image_size: 16,
        patch_size: 4,
        projection_dim: 1,
        ..ClipVisionConfig::tiny()
    }
    .init::<I>(&device)
    .unwrap()
    .with_processor(ClipImageProcessor::for_size(16))
    .unwrap();
    let one = <Vit<B> as AutodiffModule<B>>::from_inner(Vit { enc: one });
    let err = foil_train::train_multiclass(one, &train, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny ViT whose embedding values are the logits.
#[derive(Module, Debug)]
struct Vit<B: Backend> {
    enc: foil_models::clip::ClipVision<B>,
}

impl<Bk: Backend> Classifier<Bk> for Vit<Bk> {
    fn num_logits(&self) -> usize {
        use foil_core::ImageEncoder;
        self.enc.embedding_dim()
    }
    fn logits(&self, images: Tensor<Bk, 4>) -> foil_core::Result<Tensor<Bk, 2>> {
        use foil_core::ImageEncoder;
        self.enc.encode(images)
    }
}
