//! End to end through the facade on the procedural kiki / bouba set with tiny models: train the
//! oracle, a DDPM and DIFFusion's decoder, explain both directions with MaskDiME and DIFFusion,
//! rerun after an interruption, score the results, and the same through the `foil` binary.

use crate::common;

use common::foil;

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use foil::core::{Classifier, Result};
use foil::data::{Dataset, Source};
use foil::diffusion::{DiffusionMethod, Editor, Nearest, SearchConfig, TargetMean};
use foil::embed::ClassStats;
use foil::metrics::lpips::{Lpips, LpipsNet};
use foil::models::alexnet::AlexNetConfig;
use foil::pipeline::{
    Arch, DdpmSpec, DecoderSpec, DiffusionConfig, EmbeddingDecoder, EvaluateOptions, ExplainConfig,
    GuideModels, Member, Metric, OracleSpec, Preset, STATS_FILE, Scorers, direction_dir,
    evaluate_run, load_ddpm, load_decoder, load_oracle, read_results, train_ddpm_on,
    train_decoder_on, train_oracle, write_class_stats,
};
use foil::run::{RunSummary, SetRun, run_set};
use foil::train::{ImageSet, TrainConfig, evaluate_accuracy};
use image::RgbImage;

// burn-flex: its GEMM convolution backward trains several times faster than ndarray's.
type I = Flex;
type B = Autodiff<I>;

fn temp_dir(tag: &str) -> tempfile::TempDir {
    common::temp_dir("e2e", tag)
}

fn data() -> (Dataset, Dataset) {
    let source: Source = "kiki-bouba:80:16".parse().unwrap();
    source.load_pair("bouba", "kiki", 0.25, 3).unwrap()
}

/// The set run of these tests: the first `per` inputs per direction of `data`, `batch` per
/// call, at 16 px, seed 0.
fn plan<'a>(
    data: &'a Dataset,
    out: &'a Path,
    per: Option<usize>,
    batch: usize,
    device: &'a burn::tensor::Device<I>,
) -> SetRun<'a, I> {
    SetRun {
        per_direction: per,
        batch_size: batch,
        ..SetRun::new(data, out, 16, device)
    }
}

/// DIFFusion of `config` over `plan` (its target-mean baseline when `baseline`), judged by
/// `oracle`.
fn diffusion_run<C: Classifier<I>>(
    (decoder, spec): (&EmbeddingDecoder<I>, &DecoderSpec),
    stats: &ClassStats,
    oracle: &C,
    (config, baseline): (&DiffusionConfig, bool),
    plan: &SetRun<'_, I>,
) -> Result<RunSummary> {
    let editor = Editor::new(
        decoder,
        &spec.schedule()?,
        stats,
        config.clone(),
        plan.device,
    )?;
    let classes = [
        plan.data.class_names()[0].clone(),
        plan.data.class_names()[1].clone(),
    ];
    if baseline {
        let method = TargetMean {
            editor,
            oracle,
            classes,
        };
        run_set(&method, oracle, plan)
    } else {
        run_set(
            &DiffusionMethod::new(editor, oracle, &classes)?,
            oracle,
            plan,
        )
    }
}

/// The nearest-neighbour baseline over `plan`, from the images of `train`.
fn nearest_run<C: Classifier<I>>(
    decoder: &EmbeddingDecoder<I>,
    train: &Dataset,
    oracle: &C,
    plan: &SetRun<'_, I>,
) -> Result<RunSummary> {
    let method = Nearest::new(decoder, oracle, train, plan.image_size, plan.device)?;
    run_set(&method, oracle, plan)
}

fn json_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

#[test]
fn train_explain_resume_and_score() {
    let tmp = temp_dir("pipeline");
    let dir = tmp.path();
    let device = Default::default();
    let clock = std::time::Instant::now();
    let lap = |what: &str| eprintln!("{what}: {:.1} s", clock.elapsed().as_secs_f64());
    let (train, test) = data();
    let classes = ["bouba".to_string(), "kiki".to_string()];

    // The oracle: a ResNet-18 at width 8, trained from scratch (BatchNorm in training mode).
    let spec = OracleSpec::new(
        classes.clone(),
        16,
        vec![Member::new(Arch::Resnet18, 0.125)],
    )
    .unwrap();
    let config = TrainConfig::new(100, 16, 3e-3, dir.join("unused")).with_seed(1);
    let trained =
        train_oracle::<B>(&spec, &train, &test, &config, &dir.join("oracle"), &device).unwrap();
    let accuracy = trained.members[0].test_accuracy.unwrap();
    // A one-member ensemble scores what its member does.
    assert_eq!(trained.test_accuracy, Some(accuracy));
    lap("oracle trained");
    // Chance is 0.5; usually 0.9 or more. The initial weights come from burn's generator, seeded
    // by `train_oracle` but shared with the other tests of this binary running alongside, so
    // the exact figure varies between runs (one gave 0.875) and the bar leaves room.
    assert!(accuracy >= 0.8, "oracle test accuracy {accuracy}");
    // Reloaded from its folder on the plain backend it scores the same.
    let (loaded_spec, oracle) = load_oracle::<I>(&dir.join("oracle"), &device).unwrap();
    assert_eq!(loaded_spec, trained);
    let all: Vec<usize> = (0..test.len()).collect();
    let (mode, resize) = foil::pipeline::image_mode(16);
    let test_set = ImageSet::<I>::from_dataset(&test, &all, mode, resize, &device).unwrap();
    let again = evaluate_accuracy(&oracle, &test_set, 64).unwrap();
    assert!((again - accuracy).abs() < 1e-9, "{again} vs {accuracy}");

    // A DDPM, trained for a few steps only: this test is about the mechanics.
    let mut ddpm_spec = DdpmSpec::small(classes.to_vec(), 16);
    ddpm_spec.diffusion_steps = 100;
    let ddpm_config = TrainConfig::new(2, 4, 1e-3, dir.join("unused")).with_seed(2);
    let loss =
        train_ddpm_on::<B>(&ddpm_spec, &train, &ddpm_config, &dir.join("ddpm"), &device).unwrap();
    assert!(loss.is_finite());
    lap("ddpm trained");
    let (loaded_ddpm_spec, ddpm) = load_ddpm::<I>(&dir.join("ddpm"), &device).unwrap();
    assert_eq!(loaded_ddpm_spec, ddpm_spec);

    // MaskDiME on two test images per direction.
    let (_, guide_oracle) = load_oracle::<B>(&dir.join("oracle"), &device).unwrap();
    let mut explain = ExplainConfig::new(Preset::Maskdime);
    explain.respaced_steps = 10;
    explain.guide.tau = 4;
    explain.guide.scales = vec![8.0];
    let out = dir.join("results");
    let schedule = ddpm_spec.schedule().unwrap();
    let run = |config: &ExplainConfig| {
        let models = GuideModels::<B, _, _> {
            ddpm: &ddpm,
            schedule: &schedule,
            oracle: &guide_oracle,
            perceptual: None,
        };
        models
            .run(config, &plan(&test, &out, Some(2), 2, &device))
            .unwrap()
    };
    let first = run(&explain);
    lap("4 inputs explained");
    assert_eq!((first.done, first.skipped), (4, 0));
    let forward = direction_dir(&out, &classes, 0, 1);
    assert_eq!(json_count(&forward), 2);
    let results = read_results(&out).unwrap();
    assert_eq!(results.len(), 4);
    let oracle_label = |path: &Path| {
        let img = image::open(path).unwrap();
        let x = foil::core::image_io::images_to_tensor::<I>(
            &[img],
            foil::core::image_io::ColorMode::Rgb,
            foil::core::image_io::Resize::Keep,
            &device,
        )
        .unwrap();
        foil::core::predicted_labels(&oracle, x).unwrap()[0]
    };
    for (path, r) in &results {
        // The target is the other class of the oracle's prediction on the original.
        assert_eq!(r.predicted, oracle_label(&path.with_extension("orig.png")));
        assert_eq!(r.to, 1 - r.predicted);
        assert!((0.0..=1.0).contains(&r.changed_fraction));
        assert!(r.denoiser_calls > 0);
        // Original | counterfactual | heat map | M1 | M2.
        let grid = image::open(path.with_extension("grid.png")).unwrap();
        assert_eq!((grid.width(), grid.height()), (5 * 16 + 4 * 2, 16));
        let (m1, m2) = (r.m1.as_ref().unwrap(), r.m2.as_ref().unwrap());
        assert!(m2.share <= m1.share, "{r:?}");
    }

    // A rerun does nothing; after an interruption (a result without its .json) it redoes
    // exactly the unfinished input.
    let second = run(&explain);
    assert_eq!((second.done, second.skipped), (0, 4));
    std::fs::remove_file(&results[0].0).unwrap();
    let third = run(&explain);
    assert_eq!((third.done, third.skipped), (1, 3));

    // Scoring counts every input, per direction (the oracle's prediction to the other class)
    // and overall; LPIPS with a small random AlexNet scores every pair.
    let results = read_results(&out).unwrap();
    let scorers = Scorers::<I> {
        lpips: Some(Lpips::random(
            LpipsNet::Alex(AlexNetConfig {
                widths: [4, 6, 6, 4, 3],
            }),
            &device,
        )),
        ..Scorers::default()
    };
    let options = EvaluateOptions {
        method: "maskdime".into(),
        ..EvaluateOptions::default()
    };
    let report = evaluate_run::<I>(&out, &scorers, &options, &device).unwrap();
    lap("scored");
    assert_eq!(report.method, "maskdime");
    assert_eq!(report.overall.inputs, 4);
    let flipped = results.iter().filter(|(_, r)| r.flipped).count();
    assert_eq!(report.overall.flipped, flipped);
    assert!((report.overall.success_ratio - flipped as f64 / 4.0).abs() < 1e-12);
    let mean_changed =
        results.iter().map(|(_, r)| r.changed_fraction).sum::<f64>() / results.len() as f64;
    assert!((report.overall.changed_fraction - mean_changed).abs() < 1e-12);
    let directions: std::collections::BTreeSet<(usize, usize)> =
        results.iter().map(|(_, r)| (r.predicted, r.to)).collect();
    assert_eq!(
        report
            .directions
            .iter()
            .map(|d| (d.from, d.to))
            .collect::<Vec<_>>(),
        directions.into_iter().collect::<Vec<_>>()
    );
    for d in &report.directions {
        let of: Vec<_> = results
            .iter()
            .filter(|(_, r)| (r.predicted, r.to) == (d.from, d.to))
            .map(|(_, r)| r)
            .collect();
        let n_flipped = of.iter().filter(|r| r.flipped).count();
        assert_eq!((d.metrics.inputs, d.metrics.flipped), (of.len(), n_flipped));
        assert!((d.metrics.success_ratio - n_flipped as f64 / of.len() as f64).abs() < 1e-12);
        assert_eq!(d.from_name, classes[d.from]);
        assert_eq!(d.to_name, classes[d.to]);
    }
    let lpips = report.overall.lpips.unwrap();
    assert!(lpips.all.is_finite() && lpips.all >= 0.0, "{lpips:?}");
    assert_eq!(lpips.flipped.is_some(), flipped > 0);
    assert!(lpips.flipped.is_none_or(|l| l.is_finite() && l >= 0.0));
    assert!(!report.notes.iter().any(|n| n.metric == Metric::Lpips));

    // DIFFusion: the decoder and its encoder (a few steps: mechanics), the class statistics,
    // then the edit search on two inputs per direction.
    let mut decoder_spec = DecoderSpec::small(classes.to_vec(), 16);
    decoder_spec.diffusion_steps = 100;
    decoder_spec.unet_channels = vec![16, 32];
    // The encoder pre-trained as a classifier for a few steps, then frozen.
    decoder_spec.encoder_pretraining_steps = 2;
    let decoder_config = TrainConfig::new(3, 8, 1e-3, dir.join("unused")).with_seed(4);
    let decoder_dir = dir.join("decoder");
    let loss = train_decoder_on::<B>(
        &decoder_spec,
        &train,
        Some(&train),
        &decoder_config,
        &decoder_dir,
        &device,
    )
    .unwrap();
    assert!(decoder_dir.join("encoder-train").exists());
    assert!(loss.is_finite());
    lap("decoder trained");
    let (loaded_decoder_spec, decoder) = load_decoder::<I>(&decoder_dir, &device).unwrap();
    assert_eq!(loaded_decoder_spec, decoder_spec);
    let stats_path = decoder_dir.join(STATS_FILE);
    let stats = write_class_stats(&decoder, &train, 16, 32, &stats_path, &device).unwrap();
    assert_eq!(stats.counts().iter().sum::<usize>(), train.len());
    assert_eq!(stats.names(), &classes[..]);
    let stats = foil::embed::ClassStats::load(&stats_path).unwrap();

    let diffusion = DiffusionConfig {
        steps: 10,
        search: SearchConfig {
            t_skips: vec![0.6, 0.0],
            ..SearchConfig::default()
        },
        ..DiffusionConfig::default()
    };
    let diffusion_out = dir.join("diffusion");
    let run_diffusion = |stats: &foil::embed::ClassStats| {
        diffusion_run(
            (&decoder, &decoder_spec),
            stats,
            &oracle,
            (&diffusion, false),
            &plan(&test, &diffusion_out, Some(2), 2, &device),
        )
    };
    let first = run_diffusion(&stats).unwrap();
    lap("4 inputs explained by DIFFusion");
    assert_eq!((first.done, first.skipped), (4, 0));
    let results = read_results(&diffusion_out).unwrap();
    assert_eq!(results.len(), 4);
    for (path, r) in &results {
        assert_eq!(r.predicted, oracle_label(&path.with_extension("orig.png")));
        assert_eq!(r.to, 1 - r.predicted);
        assert_eq!(r.scale, None);
        // The inversion (10) plus 4 then 10 regeneration steps, two branches each (guidance 4);
        // one oracle pass per regeneration, and one on the original.
        let (calls, t_skip) = if r.flipped {
            (r.classifier_calls - 1, r.t_skip.unwrap())
        } else {
            assert_eq!(r.t_skip, None);
            (2, 0.0)
        };
        assert!(diffusion.search.t_skips.contains(&t_skip));
        let expected = 10 + 2 * [4, 10][..calls].iter().sum::<usize>();
        assert_eq!(r.denoiser_calls, expected, "{r:?}");
    }
    let second = run_diffusion(&stats).unwrap();
    assert_eq!((second.done, second.skipped), (0, 4));
    // A lambda ladder: inputs left unflipped at lambda 2 are searched again at 4 (a new
    // inversion and the whole T_skip search), and their calls add up.
    let ladder = DiffusionConfig {
        extra_lambdas: vec![4.0],
        ..diffusion.clone()
    };
    let ladder_out = dir.join("ladder");
    diffusion_run(
        (&decoder, &decoder_spec),
        &stats,
        &oracle,
        (&ladder, false),
        &plan(&test, &ladder_out, Some(2), 2, &device),
    )
    .unwrap();
    let one_rung = |trials: usize| 10 + 2 * [4, 10][..trials].iter().sum::<usize>();
    for (_, r) in read_results(&ladder_out).unwrap() {
        // Regenerations tried (the oracle's pass on the original aside).
        let trials = r.classifier_calls - 1;
        match r.lambda {
            Some(2.0) => {
                assert!(r.flipped);
                assert_eq!(r.denoiser_calls, one_rung(trials), "{r:?}");
            }
            Some(l) => {
                assert_eq!(l, 4.0);
                assert!(r.flipped && trials > 2, "{r:?}");
                assert_eq!(r.denoiser_calls, one_rung(2) + one_rung(trials - 2));
            }
            None => {
                assert!(!r.flipped && r.t_skip.is_none());
                assert_eq!((trials, r.denoiser_calls), (4, 2 * one_rung(2)));
            }
        }
    }
    // Statistics from another encoder are refused, with both identities named.
    let other = foil::embed::ClassStatsBuilder::new("another encoder", stats.dim())
        .add(
            "bouba",
            burn::tensor::Tensor::<I, 2>::ones([1, stats.dim()], &device),
        )
        .unwrap()
        .add(
            "kiki",
            burn::tensor::Tensor::<I, 2>::ones([1, stats.dim()], &device),
        )
        .unwrap()
        .build()
        .unwrap();
    std::fs::remove_file(&results[0].0).unwrap();
    let err = run_diffusion(&other).unwrap_err().to_string();
    assert!(err.contains("another encoder"), "{err}");

    // The baselines: the target mean alone runs the same search ...
    let mean_out = dir.join("target-mean");
    let summary = diffusion_run(
        (&decoder, &decoder_spec),
        &stats,
        &oracle,
        (&diffusion, true),
        &plan(&test, &mean_out, Some(2), 2, &device),
    )
    .unwrap();
    assert_eq!(summary.done, 4);
    // ... the nearest neighbour hands back a training image of the label's other class.
    let nearest_out = dir.join("nearest");
    let summary = nearest_run(
        &decoder,
        &train,
        &oracle,
        &plan(&test, &nearest_out, Some(2), 16, &device),
    )
    .unwrap();
    assert_eq!(summary.done, 4);
    for (path, r) in read_results(&nearest_out).unwrap() {
        assert_eq!(r.denoiser_calls, 0);
        let cf = image::open(path.with_extension("cf.png"))
            .unwrap()
            .to_rgb8();
        let found = (0..train.len()).any(|i| {
            let item = &train.items()[i];
            let (x, _) = train.tensors::<I>(&[i], mode, resize, &device).unwrap();
            let img = foil::core::image_io::tensor_to_images(&x).unwrap()[0].to_rgb8();
            item.label == 1 - r.from && img == cf
        });
        assert!(
            found,
            "{} is not a training image of class {}",
            path.display(),
            1 - r.from
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// LoRA tuning of a trained decoder: the folder holds only the adapters and names its base;
/// the encoder stays frozen (same embeddings, new identity), the UNet's outputs move, the
/// statistics and DIFFusion work through it, and a replaced base or a chained LoRA is refused.
#[test]
fn lora_tunes_a_frozen_decoder() {
    use burn::tensor::Tensor;
    use foil::core::{Denoiser, ImageEncoder};
    use foil::models::lora::LoraConfig;
    use foil::pipeline::{LORA_FILE, tune_decoder_lora};
    let tmp = temp_dir("lora");
    let dir = tmp.path();
    let device = Default::default();
    let (train, test) = data();
    let classes = ["bouba".to_string(), "kiki".to_string()];
    let mut spec = DecoderSpec::small(classes.to_vec(), 16);
    spec.diffusion_steps = 100;
    spec.unet_channels = vec![16, 32];
    let base = dir.join("decoder");
    let config = TrainConfig::new(2, 8, 1e-3, dir.join("unused")).with_seed(4);
    train_decoder_on::<B>(&spec, &train, None, &config, &base, &device).unwrap();

    let lora = LoraConfig::new(4, 8.0, "to_q|to_k|to_v|to_out|add_k_proj|add_v_proj").unwrap();
    let tuned_dir = dir.join("lora");
    let tune = TrainConfig::new(4, 8, 1e-2, dir.join("unused")).with_seed(1);
    let loss = tune_decoder_lora::<B>(&base, &train, &lora, &tune, &tuned_dir, &device).unwrap();
    assert!(loss.is_finite());
    assert!(tuned_dir.join(LORA_FILE).exists() && !tuned_dir.join("decoder.mpk").exists());

    let (base_spec, base_net) = load_decoder::<I>(&base, &device).unwrap();
    let (tuned_spec, tuned_net) = load_decoder::<I>(&tuned_dir, &device).unwrap();
    let info = tuned_spec.lora.clone().unwrap();
    assert_eq!((info.rank, info.alpha), (4, 8.0));
    assert_eq!(info.base, PathBuf::from("../decoder"));
    assert_eq!(tuned_spec.unet_channels, base_spec.unet_channels);
    let (mode, resize) = foil::pipeline::image_mode(16);
    let (x, _) = test.tensors::<I>(&[0, 1], mode, resize, &device).unwrap();
    let diff = |a: Tensor<I, 2>, b: Tensor<I, 2>| {
        foil::core::tensor::to_vec_f32(&(a - b).abs().max()).unwrap()[0]
    };
    // The encoder is frozen: the same embeddings, under another identity.
    let (eb, et) = (
        base_net.encode(x.clone()).unwrap(),
        tuned_net.encode(x.clone()).unwrap(),
    );
    assert_eq!(diff(eb.clone(), et), 0.0);
    assert_ne!(base_net.identity(), tuned_net.identity());
    // The adapters trained: the decoder's predictions moved.
    let eps = |net: &foil::pipeline::EmbeddingDecoder<I>| {
        let out = Denoiser::forward(net, x.clone(), &[50, 50], Some(eb.clone())).unwrap();
        out.eps.reshape([2, 3 * 16 * 16])
    };
    let moved = diff(eps(&base_net), eps(&tuned_net));
    assert!(
        moved > 1e-5,
        "LoRA tuning did not change the decoder ({moved})"
    );

    let stats_path = tuned_dir.join(STATS_FILE);
    let stats = write_class_stats(&tuned_net, &train, 16, 32, &stats_path, &device).unwrap();
    let oracle_dir = dir.join("oracle");
    let oracle_spec = OracleSpec::new(
        classes.clone(),
        16,
        vec![Member::new(Arch::Resnet18, 0.125)],
    )
    .unwrap();
    let oracle_config = TrainConfig::new(2, 8, 1e-3, dir.join("unused"));
    train_oracle::<B>(
        &oracle_spec,
        &train,
        &test,
        &oracle_config,
        &oracle_dir,
        &device,
    )
    .unwrap();
    let (_, oracle) = load_oracle::<I>(&oracle_dir, &device).unwrap();
    let diffusion = DiffusionConfig {
        steps: 5,
        search: SearchConfig {
            t_skips: vec![0.0],
            ..SearchConfig::default()
        },
        ..DiffusionConfig::default()
    };
    let summary = diffusion_run(
        (&tuned_net, &tuned_spec),
        &stats,
        &oracle,
        (&diffusion, false),
        &plan(&test, &dir.join("diffusion"), Some(1), 16, &device),
    )
    .unwrap();
    assert_eq!(summary.done, 2);

    // A LoRA folder cannot be the base of another.
    let err = tune_decoder_lora::<B>(
        &tuned_dir,
        &train,
        &lora,
        &tune,
        &dir.join("chained"),
        &device,
    )
    .unwrap_err();
    assert!(err.to_string().contains("another LoRA folder"), "{err}");
    // A retrained base no longer fits the adapters.
    std::fs::remove_dir_all(base.join("train")).unwrap();
    let other_seed = TrainConfig::new(2, 8, 1e-3, dir.join("unused")).with_seed(5);
    train_decoder_on::<B>(&spec, &train, None, &other_seed, &base, &device).unwrap();
    let err = load_decoder::<I>(&tuned_dir, &device).err().unwrap();
    assert!(err.to_string().contains("tune the adapters again"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_cli_trains_explains_and_scores() {
    let tmp = temp_dir("cli");
    let dir = tmp.path();
    let data = ["--data", "kiki-bouba:80:16", "--classes", "bouba,kiki"];
    let train = |what: &str, extra: &[&str]| {
        let mut args = vec!["train", what];
        args.extend_from_slice(&data);
        args.extend_from_slice(&["--image-size", "16", "--batch-size", "16"]);
        args.extend_from_slice(extra);
        foil(&args, dir)
    };
    let (ok, stdout, stderr) = train(
        "oracle",
        &[
            "--steps", "100", "--lr", "3e-3", "--width", "0.125", "--seed", "1",
        ],
    );
    assert!(ok, "{stderr}");
    let accuracy: f64 = stdout
        .lines()
        .find_map(|l| l.split("test accuracy ").nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(accuracy >= 0.8, "{stdout}");
    let (ok, _, stderr) = train("ddpm", &["--steps", "2"]);
    assert!(ok, "{stderr}");

    let explain = |extra: &[&str]| {
        let mut args = vec!["maskdime"];
        args.extend_from_slice(&data);
        args.extend_from_slice(&[
            "--per-direction",
            "1",
            "--respaced-steps",
            "10",
            "--tau",
            "3",
        ]);
        args.extend_from_slice(&["--scales", "8"]);
        args.extend_from_slice(extra);
        foil(&args, dir)
    };
    let (ok, stdout, stderr) = explain(&[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 explained"), "{stdout}");
    let (ok, stdout, _) = explain(&[]);
    assert!(
        ok && stdout.contains("0 explained") && stdout.contains("2 already done"),
        "{stdout}"
    );

    // --seeds: one run per seed under <out>/seed-<s>/, each a single run's layout.
    let (ok, stdout, stderr) = explain(&["--seeds", "0,1", "--out", "results/seeds"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("2 explained").count(), 2, "{stdout}");
    for seed in ["seed-0", "seed-1"] {
        let run = dir.join("results/seeds").join(seed);
        assert_eq!(read_results(&run).unwrap().len(), 2, "{seed}");
    }
    let (ok, _, stderr) = explain(&["--seed", "1", "--seeds", "0,1"]);
    assert!(!ok && stderr.contains("--seeds"), "{stderr}");
    let (ok, _, stderr) = explain(&["--seeds", "1,1", "--out", "results/twice"]);
    assert!(!ok && stderr.contains("distinct"), "{stderr}");

    let (ok, stdout, stderr) = foil(&["evaluate", "--lpips", "none"], dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("bouba"), "{stdout}");
    // One grid per direction: the per-input grids stacked.
    let sheet = image::open(dir.join("results/maskdime/bouba_to_kiki.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (5 * 16 + 4 * 2, 16));
    assert!(stdout.contains("grid: "), "{stdout}");
    let json = std::fs::read_to_string(dir.join("results/maskdime/metrics.json")).unwrap();
    let report = foil::pipeline::RunEvaluation::from_json(&json).unwrap();
    assert_eq!(report.overall.inputs, 2);

    // DIFFusion: `train decoder` also writes the class statistics `diffusion` reads.
    let (ok, stdout, stderr) = train("decoder", &["--steps", "2", "--unet-channels", "16,32"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("class statistics of"), "{stdout}");
    assert!(dir.join("runs/decoder/stats.json").exists());
    let diffusion = || {
        let mut args = vec!["diffusion"];
        args.extend_from_slice(&data);
        args.extend_from_slice(&["--per-direction", "1", "--steps", "5", "--t-skips", "0.4,0"]);
        foil(&args, dir)
    };
    let (ok, stdout, stderr) = diffusion();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 explained"), "{stdout}");
    let (ok, stdout, _) = diffusion();
    assert!(ok && stdout.contains("2 already done"), "{stdout}");
    let mut args = vec![
        "diffusion",
        "--seeds",
        "3,4",
        "--out",
        "results/diffusion-seeds",
    ];
    args.extend_from_slice(&data);
    args.extend_from_slice(&["--per-direction", "1", "--steps", "5", "--t-skips", "0"]);
    let (ok, stdout, stderr) = foil(&args, dir);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("2 explained").count(), 2, "{stdout}");
    for seed in [3, 4] {
        let run = foil::pipeline::seed_dir(&dir.join("results/diffusion-seeds"), seed);
        assert_eq!(read_results(&run).unwrap().len(), 2);
    }
    let (ok, _, stderr) = foil(
        &[
            "evaluate",
            "--lpips",
            "none",
            "--results",
            "results/diffusion",
        ],
        dir,
    );
    assert!(ok, "{stderr}");
    let json = std::fs::read_to_string(dir.join("results/diffusion/metrics.json")).unwrap();
    let report = foil::pipeline::RunEvaluation::from_json(&json).unwrap();
    assert_eq!(report.overall.inputs, 2);

    // Teaching material from the DIFFusion run: lambda sweeps through the decoder.
    let mut args = vec![
        "teach",
        "--results",
        "results/diffusion",
        "--decoder",
        "runs/decoder",
        "--steps",
        "5",
        "--frames",
        "4",
        "--quiz",
        "4",
    ];
    args.extend_from_slice(&data);
    let (ok, stdout, stderr) = foil(&args, dir);
    assert!(ok, "{stderr}");
    let study_dir = dir.join("results/diffusion/study");
    let study: foil::teach::StudyData =
        serde_json::from_slice(&std::fs::read(study_dir.join("study.json")).unwrap()).unwrap();
    assert_eq!(study.items.len(), 2);
    assert_eq!(study.quiz.len(), 4);
    // Flipped results get true sweeps (the T_skip that flipped them is known), others fades.
    let flipped = foil::pipeline::read_results(&dir.join("results/diffusion"))
        .unwrap()
        .iter()
        .filter(|(_, r)| r.flipped)
        .count();
    let swept = study
        .items
        .iter()
        .filter(|i| i.source == foil::teach::FrameSource::LambdaSweep)
        .count();
    assert_eq!(swept, flipped, "{stdout}");
    assert!(study.items.iter().all(|i| i.frames.len() == 4));
    assert!(stdout.contains("study page: "), "{stdout}");
    // Quiz images are unseen: none is an input of the results.
    let open = |p: &str| image::open(study_dir.join(p)).unwrap().to_rgb8();
    let inputs: Vec<RgbImage> = study.items.iter().map(|i| open(&i.frames[0])).collect();
    for q in &study.quiz {
        assert!(!inputs.contains(&open(&q.image)), "{} was studied", q.image);
    }

    let mut args = vec!["diffusion", "--method", "nearest", "--per-direction", "1"];
    args.extend_from_slice(&data);
    let (ok, stdout, stderr) = foil(&args, dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("nearest: 2 explained"), "{stdout}");

    // LoRA domain tuning of the decoder (with a cosine schedule), its statistics, and DIFFusion
    // through the LoRA folder.
    let (ok, stdout, stderr) = train(
        "lora",
        &[
            "--base",
            "runs/decoder",
            "--steps",
            "2",
            "--lr-schedule",
            "cosine",
            "--warmup",
            "1",
            "--out",
            "runs/lora",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("class statistics of"), "{stdout}");
    assert!(dir.join("runs/lora/lora.safetensors").exists());
    assert!(!dir.join("runs/lora/decoder.mpk").exists());
    let mut args = vec![
        "diffusion",
        "--decoder",
        "runs/lora",
        "--out",
        "results/lora",
    ];
    args.extend_from_slice(&data);
    args.extend_from_slice(&["--per-direction", "1", "--steps", "5", "--t-skips", "0"]);
    let (ok, stdout, stderr) = foil(&args, dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 explained"), "{stdout}");
    // A warm-up with the constant schedule is a user error.
    let (ok, _, stderr) = train("lora", &["--base", "runs/decoder", "--warmup", "3"]);
    assert!(!ok && stderr.contains("--warmup"), "{stderr}");

    // User errors are reported, not panics: a class the data lacks, a device not built in.
    let (ok, _, stderr) = foil(
        &[
            "maskdime",
            "--data",
            "kiki-bouba:4:16",
            "--classes",
            "bouba,blob",
        ],
        dir,
    );
    assert!(
        !ok && stderr.contains("blob") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (ok, _, stderr) = foil(
        &[
            "maskdime",
            "--data",
            "kiki-bouba:4:16",
            "--classes",
            "bouba,kiki",
            "--device",
            "tpu",
        ],
        dir,
    );
    assert!(
        !ok && stderr.contains("cpu, ndarray, flex, wgpu, cuda"),
        "{stderr}"
    );
    // With flex compiled in, the command line has one CPU backend; ndarray says how to get it.
    let (ok, _, stderr) = foil(
        &[
            "maskdime",
            "--data",
            "kiki-bouba:4:16",
            "--classes",
            "bouba,kiki",
            "--device",
            "ndarray",
        ],
        dir,
    );
    assert!(
        !ok && stderr.contains("--no-default-features") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A one-logit oracle on the mean pixel: `slope * (mean(x) - threshold)`, kiki (1) above the
/// threshold. Differentiable, so the guided sampler has a gradient to follow.
#[derive(Debug, Clone, Copy)]
struct MeanOracle {
    threshold: f32,
    slope: f32,
}

impl<Bk: burn::tensor::backend::Backend> foil::core::Classifier<Bk> for MeanOracle {
    fn num_logits(&self) -> usize {
        1
    }

    fn logits(
        &self,
        images: burn::tensor::Tensor<Bk, 4>,
    ) -> foil::core::Result<burn::tensor::Tensor<Bk, 2>> {
        let mean = images.flatten::<2>(1, 3).mean_dim(1);
        Ok((mean - self.threshold) * self.slope)
    }
}

impl MeanOracle {
    /// Calls every image kiki: every bouba input is misclassified.
    fn says_kiki() -> Self {
        Self {
            threshold: -1e3,
            slope: 1e-3,
        }
    }

    fn label(&self, path: &Path) -> usize {
        let img = image::open(path).unwrap();
        let x = foil::core::image_io::images_to_tensor::<I>(
            &[img],
            foil::core::image_io::ColorMode::Rgb,
            foil::core::image_io::Resize::Keep,
            &Default::default(),
        )
        .unwrap();
        foil::core::predicted_labels::<I, _>(self, x).unwrap()[0]
    }
}

/// Issue 15, item 11: the target is the other class of the oracle's prediction on the input,
/// not of its label, and a flip is judged against it. An oracle that calls everything kiki
/// misclassifies every bouba: its target is bouba, its own label, and it is not flipped (the
/// counterfactual is still called kiki), where the label's other class would have counted
/// it as flipped with no change. Holds for MaskDiME, FastDiME (whose mask is saved as M1),
/// DIFFusion, its lambda ladder and both baselines; inputs of one batch with different
/// predictions are searched towards their own targets.
#[test]
fn targets_come_from_the_oracles_prediction() {
    let tmp = temp_dir("targets");
    let dir = tmp.path();
    let device = Default::default();
    let (train, test) = data();
    let classes = ["bouba".to_string(), "kiki".to_string()];
    let says_kiki = MeanOracle::says_kiki();
    let check = |out: &Path, oracle: &MeanOracle| {
        let results = read_results(out).unwrap();
        assert_eq!(results.len(), 4);
        for (path, r) in &results {
            // The direction folders stay by label.
            assert_eq!(
                path.parent().unwrap(),
                direction_dir(out, &classes, r.from, 1 - r.from)
            );
            assert_eq!(r.predicted, oracle.label(&path.with_extension("orig.png")));
            assert_eq!(r.to, 1 - r.predicted, "{r:?}");
        }
        results
    };

    // MaskDiME and FastDiME (a short warm-up, so its mask exists) with the all-kiki oracle.
    let mut ddpm_spec = DdpmSpec::small(classes.to_vec(), 16);
    ddpm_spec.diffusion_steps = 100;
    let ddpm_config = TrainConfig::new(2, 4, 1e-3, dir.join("unused")).with_seed(2);
    train_ddpm_on::<B>(&ddpm_spec, &train, &ddpm_config, &dir.join("ddpm"), &device).unwrap();
    let (_, ddpm) = load_ddpm::<I>(&dir.join("ddpm"), &device).unwrap();
    let schedule = ddpm_spec.schedule().unwrap();
    for preset in [Preset::Maskdime, Preset::Fastdime] {
        let mut explain = ExplainConfig::new(preset);
        explain.respaced_steps = 10;
        explain.guide.tau = 4;
        explain.guide.scales = vec![8.0];
        if let foil::guide::MaskPolicy::Difference { warmup, .. } = &mut explain.guide.mask {
            *warmup = 1;
        }
        let out = dir.join(preset.name());
        let models = GuideModels::<B, _, _> {
            ddpm: &ddpm,
            schedule: &schedule,
            oracle: &says_kiki,
            perceptual: None,
        };
        models
            .run(&explain, &plan(&test, &out, Some(2), 2, &device))
            .unwrap();
        for (path, r) in check(&out, &says_kiki) {
            assert_eq!((r.predicted, r.to), (1, 0), "{r:?}");
            assert!(!r.flipped, "{r:?}");
            assert_eq!(says_kiki.label(&path.with_extension("cf.png")), 1);
            // The guidance passes, a flip check and the prediction on the original.
            assert!(r.classifier_calls >= 3, "{r:?}");
            // M1 (both) and M2 (MaskDiME only): gray PNGs beside the result, their share in
            // the JSON, shown in the grid after the heat map.
            let m1 = r.m1.as_ref().expect("an outer mask");
            assert_eq!(r.m2.is_some(), preset == Preset::Maskdime, "{r:?}");
            let panels = 3 + 1 + usize::from(r.m2.is_some());
            let grid = image::open(path.with_extension("grid.png"))
                .unwrap()
                .to_rgb8();
            assert_eq!(grid.dimensions(), (panels as u32 * 18 - 2, 16));
            for m in [Some(m1), r.m2.as_ref()].into_iter().flatten() {
                let key = path.file_stem().unwrap().to_string_lossy();
                let name = if m == m1 { "m1" } else { "m2" };
                assert_eq!(m.file, format!("{key}.{name}.png"));
                let png = image::open(path.with_file_name(&m.file)).unwrap();
                assert_eq!(png.color(), image::ColorType::L8);
                let gray = png.to_luma8();
                assert!(gray.pixels().all(|p| p[0] == 0 || p[0] == 255));
                assert_eq!(m.share, foil::pipeline::mask_share(&gray));
                assert!(m.share > 0.0 && m.share <= 1.0, "{m:?}");
                // The grid's panel of this mask is the mask.
                let x0 = if m == m1 { 3 * 18 } else { 4 * 18 };
                for (x, y, p) in gray.enumerate_pixels() {
                    assert_eq!(grid.get_pixel(x0 + x, y).0, [p[0]; 3]);
                }
            }
        }
    }

    // The study page leaves out the inputs the oracle misclassified (every bouba here): their
    // target is their own label.
    let options = foil::teach::TeachOptions {
        frames: 3,
        max_items: 10,
        quiz: 2,
        delay_ms: 100,
        seed: 0,
        page: foil::teach::StudySettings {
            title: "t".into(),
            classes: classes.clone(),
            study_seconds: 1,
            display_px: 32,
        },
    };
    let maskdime_out = dir.join(Preset::Maskdime.name());
    let study = foil::teach::build_study::<I>(
        &maskdime_out,
        &test,
        &options,
        None,
        &dir.join("study"),
        &device,
    )
    .unwrap();
    let kiki = read_results(&maskdime_out)
        .unwrap()
        .iter()
        .filter(|(_, r)| r.from == 1)
        .count();
    assert_eq!(
        study.items, kiki,
        "only the correctly classified kiki inputs"
    );
    assert!(kiki > 0 && kiki < 4);

    // The perceptual term (the references' VGG-19 MSE, weight 30) is wired through: it changes
    // the counterfactuals, and a weight without a network is refused before anything is written.
    let vgg = foil::models::vgg::Vgg19Perceptual::<B>::load_file(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crates/foil-models/tests/fixtures/vgg19_tiny.pth"
        ),
        &foil::models::vgg::Vgg19Config::tiny(),
        &device,
    )
    .unwrap();
    let mut explain = ExplainConfig::new(Preset::Dime);
    explain.respaced_steps = 10;
    explain.guide.tau = 3;
    explain.guide.scales = vec![8.0];
    let run =
        |perceptual: Option<&dyn foil::core::FeatureExtractor<B>>, weight: f64, name: &str| {
            let mut config = explain.clone();
            config.guide.lambda_perc = weight;
            let models = GuideModels {
                ddpm: &ddpm,
                schedule: &schedule,
                oracle: &says_kiki,
                perceptual,
            };
            let out = dir.join(name);
            models
                .run(&config, &plan(&test, &out, Some(1), 16, &device))
                .map(|_| out)
        };
    let plain = run(None, 0.0, "dime-plain").unwrap();
    let perc = run(Some(&vgg), 3000.0, "dime-perceptual").unwrap();
    let cfs = |out: &Path| -> Vec<Vec<u8>> {
        read_results(out)
            .unwrap()
            .iter()
            .map(|(p, _)| std::fs::read(p.with_extension("cf.png")).unwrap())
            .collect()
    };
    assert_ne!(
        cfs(&plain),
        cfs(&perc),
        "the perceptual gradient moves the samples"
    );
    let err = run(None, 30.0, "dime-refused").unwrap_err().to_string();
    assert!(
        err.contains("lambda_perc") && err.contains("vgg19"),
        "{err}"
    );
    assert!(!dir.join("dime-refused").exists());
    // A misclassified input's target is its label: under the old rule (target = the label's
    // other class) each bouba here was "flipped" to kiki without a change.
    let bouba = read_results(&dir.join("maskdime"))
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.from == 0)
        .count();
    assert_eq!(bouba, 2);

    // DIFFusion, the ladder and the target-mean baseline with the same oracle.
    let mut decoder_spec = DecoderSpec::small(classes.to_vec(), 16);
    decoder_spec.diffusion_steps = 100;
    decoder_spec.unet_channels = vec![16, 32];
    let decoder_dir = dir.join("decoder");
    let decoder_config = TrainConfig::new(2, 8, 1e-3, dir.join("unused")).with_seed(4);
    train_decoder_on::<B>(
        &decoder_spec,
        &train,
        None,
        &decoder_config,
        &decoder_dir,
        &device,
    )
    .unwrap();
    let (_, decoder) = load_decoder::<I>(&decoder_dir, &device).unwrap();
    let stats = write_class_stats(
        &decoder,
        &train,
        16,
        32,
        &decoder_dir.join(STATS_FILE),
        &device,
    )
    .unwrap();
    let diffusion = DiffusionConfig {
        steps: 5,
        search: SearchConfig {
            t_skips: vec![0.6, 0.0],
            ..SearchConfig::default()
        },
        ..DiffusionConfig::default()
    };
    let run = |config: (&DiffusionConfig, bool), oracle: &MeanOracle, name: &str| {
        let out = dir.join(name);
        diffusion_run(
            (&decoder, &decoder_spec),
            &stats,
            oracle,
            config,
            &plan(&test, &out, Some(2), 2, &device),
        )
        .unwrap();
        check(&out, oracle)
    };
    let ladder = DiffusionConfig {
        extra_lambdas: vec![4.0],
        ..diffusion.clone()
    };
    for (config, name, rungs) in [
        ((&diffusion, false), "diffusion", 1),
        ((&ladder, false), "ladder", 2),
        ((&diffusion, true), "target-mean", 1),
    ] {
        for (path, r) in run(config, &says_kiki, name) {
            assert_eq!((r.predicted, r.to), (1, 0), "{name}: {r:?}");
            assert!(
                !r.flipped && r.t_skip.is_none() && r.lambda.is_none(),
                "{r:?}"
            );
            assert_eq!(says_kiki.label(&path.with_extension("cf.png")), 1);
            // Every T_skip of every rung tried, then the prediction on the original.
            assert_eq!(r.classifier_calls, 2 * rungs + 1, "{name}: {r:?}");
            assert!(r.m1.is_none() && r.m2.is_none());
        }
    }
    let nearest_out = dir.join("nearest");
    nearest_run(
        &decoder,
        &train,
        &says_kiki,
        &plan(&test, &nearest_out, Some(2), 16, &device),
    )
    .unwrap();
    for (_, r) in check(&nearest_out, &says_kiki) {
        assert_eq!((r.predicted, r.to, r.flipped), (1, 0, false), "{r:?}");
        assert_eq!(r.classifier_calls, 2);
    }

    // An oracle between the two bouba inputs' mean pixels predicts one bouba and one kiki in
    // the same batch: each is searched towards the other class of its own prediction.
    let (mode, resize) = foil::pipeline::image_mode(16);
    let first_bouba: Vec<usize> = (0..test.len())
        .filter(|&i| test.items()[i].label == 0)
        .take(2)
        .collect();
    let (x, _) = test
        .tensors::<I>(&first_bouba, mode, resize, &device)
        .unwrap();
    let means = foil::core::tensor::to_vec_f32(&x.flatten::<2>(1, 3).mean_dim(1)).unwrap();
    assert_ne!(means[0], means[1]);
    let split = MeanOracle {
        threshold: (means[0] + means[1]) / 2.0,
        slope: 50.0,
    };
    let results = run((&diffusion, false), &split, "split");
    let bouba: Vec<_> = results.iter().filter(|(_, r)| r.from == 0).collect();
    assert_eq!(bouba.len(), 2);
    assert_ne!(bouba[0].1.predicted, bouba[1].1.predicted, "{bouba:?}");
    let _ = std::fs::remove_dir_all(dir);
}
