//! `foil evaluate`'s library side on hand-made results folders: flipped-only against
//! all-inputs LPIPS, the typed JSON, diversity across seed folders, FID / COUT / MNAC /
//! similarity with small networks, the notes for metrics not computed, and the encoder errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use burn::tensor::{Tensor, backend::Backend};
use foil::core::{Classifier, Error, ImageEncoder, Result};
use foil::metrics::lpips::{Lpips, LpipsEncoder, LpipsNet};
use foil::models::alexnet::AlexNetConfig;
use foil::models::vgg::Vgg16Config;
use foil::pipeline::{
    AttributeOracle, Encoder, EncoderChoice, EncoderLabel, EvaluateOptions, Metric, RunEvaluation,
    ScorerPaths, Scorers, ScoringOracle, evaluate_run, load_scorers,
};
use image::{Rgb, RgbImage};

type I = Flex;

const CLASSES: [&str; 2] = ["bouba", "kiki"];

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foil-evaluate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 16 x 16 image: a gradient shifted by `level`, with a square of `patch` brightness.
fn picture(level: u8, patch: u8) -> RgbImage {
    RgbImage::from_fn(16, 16, |x, y| {
        if (4..10).contains(&x) && (5..11).contains(&y) {
            Rgb([patch, patch / 2, 255 - patch])
        } else {
            let v = level.wrapping_add((x * 9 + y * 5) as u8);
            Rgb([v, v / 3, 200 - v / 2])
        }
    })
}

/// One result as `foil maskdime` writes it: `<run>/<from>_to_<to>/<key>.{orig,cf}.png` and
/// `<key>.json`.
fn write_item(
    run: &Path,
    key: &str,
    predicted: usize,
    flipped: bool,
    orig: &RgbImage,
    cf: &RgbImage,
) {
    let to = 1 - predicted;
    let dir = run.join(format!("{}_to_{}", CLASSES[predicted], CLASSES[to]));
    std::fs::create_dir_all(&dir).unwrap();
    orig.save(dir.join(format!("{key}.orig.png"))).unwrap();
    cf.save(dir.join(format!("{key}.cf.png"))).unwrap();
    cf.save(dir.join(format!("{key}.grid.png"))).unwrap();
    let json = serde_json::json!({
        "source": key,
        "from": predicted,
        "predicted": predicted,
        "to": to,
        "classes": CLASSES,
        "flipped": flipped,
        "scale": 8.0,
        "changed_fraction": 0.25,
        "mean_abs_change": 0.1,
        "denoiser_calls": 10,
        "classifier_calls": 11,
    });
    std::fs::write(
        dir.join(format!("{key}.json")),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
}

/// `n` inputs per direction; item `k` of direction `d` is flipped unless `k == 0 && d == 0`.
fn fixture(run: &Path, n: usize, cf_shift: u8) {
    for d in 0..2 {
        for k in 0..n {
            let orig = picture((k * 23 + d * 7) as u8, 40 + (k * 11) as u8);
            let cf = picture(
                (k * 23 + d * 7) as u8,
                ((200 + k * 13) as u8).wrapping_add(cf_shift),
            );
            write_item(
                run,
                &format!("img{d}{k:02}"),
                d,
                !(k == 0 && d == 0),
                &orig,
                &cf,
            );
        }
    }
}

fn tiny_alex() -> Lpips<I> {
    Lpips::random(
        LpipsNet::Alex(AlexNetConfig {
            widths: [4, 6, 6, 4, 3],
        }),
        &Default::default(),
    )
}

fn tiny_vgg() -> Lpips<I> {
    Lpips::random(
        LpipsNet::Vgg(Vgg16Config {
            widths: [3, 4, 4, 5, 5],
        }),
        &Default::default(),
    )
}

/// A one-logit classifier: `scale * (mean of channel c - 0.1)`, images in `[-1, 1]`.
struct Brightness {
    channel: usize,
    scale: f32,
}

impl<B: Backend> Classifier<B> for Brightness {
    fn num_logits(&self) -> usize {
        1
    }

    fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, ..] = images.dims();
        let c = images.narrow(1, self.channel, 1);
        Ok((c.reshape([n as i32, -1]).mean_dim(1) - 0.1) * self.scale)
    }
}

/// Per-channel means, a 3-wide encoder that sees the patch colour.
struct ChannelMeans;

impl<B: Backend> ImageEncoder<B> for ChannelMeans {
    fn embedding_dim(&self) -> usize {
        3
    }

    fn identity(&self) -> String {
        "channel-means".into()
    }

    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, c, ..] = images.dims();
        Ok(images.mean_dim(2).mean_dim(3).reshape([n, c]))
    }
}

fn options() -> EvaluateOptions {
    EvaluateOptions {
        method: "test".into(),
        cout_steps: 4,
        sfid_repeats: 2,
        batch_size: 3,
        ..EvaluateOptions::default()
    }
}

#[test]
fn flipped_only_lpips_differs_from_all_and_json_round_trips() {
    let dir = temp_dir("lpips");
    fixture(&dir, 2, 0);
    let scorers = Scorers::<I> {
        lpips: Some(tiny_alex()),
        ..Scorers::default()
    };
    let report = evaluate_run(&dir, &scorers, &options(), &Default::default()).unwrap();
    assert_eq!(report.overall.inputs, 4);
    assert_eq!(report.overall.flipped, 3);
    assert!((report.overall.success_ratio - 0.75).abs() < 1e-12);
    assert_eq!(report.directions.len(), 2);
    let first = &report.directions[0];
    assert_eq!((first.from, first.to), (0, 1));
    assert_eq!(first.label(), "bouba -> kiki");
    assert_eq!((first.metrics.inputs, first.metrics.flipped), (2, 1));
    // Per direction and overall, the flipped mean leaves out the unflipped input.
    let l = first.metrics.lpips.unwrap();
    let overall = report.overall.lpips.unwrap();
    assert!(
        (l.flipped.unwrap() - l.all).abs() > 1e-6,
        "flipped {:?} vs all {}",
        l.flipped,
        l.all
    );
    assert!((overall.flipped.unwrap() - overall.all).abs() > 1e-7);
    // The overall all-inputs mean is the mean of the directions' (two inputs each).
    let second = report.directions[1].metrics.lpips.unwrap();
    assert!((overall.all - (l.all + second.all) / 2.0).abs() < 1e-9);
    // The second direction has no unflipped input: both means agree.
    assert!((second.flipped.unwrap() - second.all).abs() < 1e-12);
    // And the unflipped item's LPIPS: 2 * all - flipped.
    assert!(l.flipped.unwrap() > 0.0 && l.all > 0.0);

    // Notes say why the rest is missing.
    for m in [
        Metric::Fid,
        Metric::Sfid,
        Metric::Cout,
        Metric::Mnac,
        Metric::Similarity,
        Metric::Diversity,
    ] {
        assert!(
            report.notes.iter().any(|n| n.metric == m),
            "no note for {m:?}"
        );
    }
    assert!(!report.notes.iter().any(|n| n.metric == Metric::Lpips));
    let table = report.to_string();
    assert!(table.contains("LPIPS, flipped (papers)"), "{table}");
    assert!(table.contains("bouba -> kiki"), "{table}");
    assert!(table.contains("--fid-encoder"), "{table}");

    let path = dir.join("metrics.json");
    report.write_json(&path).unwrap();
    let back = RunEvaluation::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert!(value["directions"][0]["metrics"]["lpips"]["flipped"].is_f64());
    assert!(value["overall"]["fid"].is_null());
}

#[test]
fn diversity_is_zero_for_identical_seeds_and_positive_otherwise() {
    let dir = temp_dir("diversity");
    fixture(&dir.join("seed-0"), 2, 0);
    fixture(&dir.join("seed-1"), 2, 0);
    let scorers = Scorers::<I> {
        diversity_lpips: Some(tiny_vgg()),
        ..Scorers::default()
    };
    let same = evaluate_run(&dir, &scorers, &options(), &Default::default()).unwrap();
    assert_eq!(same.seeds, vec![0, 1]);
    assert!(same.scored_folder.ends_with("seed-0"));
    let d = same.overall.diversity.unwrap();
    assert_eq!((d.inputs, d.seeds), (4, 2));
    assert!(d.mean.abs() < 1e-9, "{}", d.mean);

    // A third seed with other counterfactuals; one input missing from it is left out.
    fixture(&dir.join("seed-2"), 2, 60);
    let gone = dir.join("seed-2/kiki_to_bouba/img101.json");
    std::fs::remove_file(&gone).unwrap();
    let varied = evaluate_run(&dir, &scorers, &options(), &Default::default()).unwrap();
    let d = varied.overall.diversity.unwrap();
    assert_eq!((d.inputs, d.seeds), (3, 3));
    assert!(d.mean > 1e-6, "{}", d.mean);
    assert_eq!(varied.directions[1].metrics.diversity.unwrap().inputs, 1);
    assert!(varied.to_string().contains("first seed"));

    // One seed folder only: no diversity, and the note says why.
    let single = temp_dir("single-seed");
    fixture(&single.join("seed-3"), 1, 0);
    let report = evaluate_run(&single, &scorers, &options(), &Default::default()).unwrap();
    assert!(report.overall.diversity.is_none());
    let note = report
        .notes
        .iter()
        .find(|n| n.metric == Metric::Diversity)
        .unwrap();
    assert!(note.reason.contains("found 1"), "{}", note.reason);
}

#[test]
fn fid_cout_mnac_and_similarity_with_small_networks() {
    let dir = temp_dir("all");
    fixture(&dir, 6, 0);
    // Randomly initialised from the backend's global generator: 32 output channels, so that an
    // image whose features are all cut by the last ReLU (a zero embedding, which has no cosine)
    // does not happen (with 3 channels it did, now and then).
    let encoder = |name: &str| Encoder::<I> {
        label: EncoderLabel {
            name: name.into(),
            inception: false,
        },
        net: Box::new(LpipsEncoder::new(
            Lpips::random(
                LpipsNet::Alex(AlexNetConfig {
                    widths: [8, 16, 16, 16, 32],
                }),
                &Default::default(),
            ),
            name,
        )),
    };
    let scorers = Scorers::<I> {
        fid_encoder: Some(Encoder {
            label: EncoderLabel {
                name: "channel-means".into(),
                inception: false,
            },
            net: Box::new(ChannelMeans),
        }),
        similarity_encoder: Some(encoder("lpips-alex")),
        oracle: Some(ScoringOracle {
            names: CLASSES.map(String::from).to_vec(),
            image_size: 16,
            classifier: Box::new(Brightness {
                channel: 0,
                scale: 5.0,
            }),
        }),
        mnac_oracle: Some(ScoringOracle {
            names: vec!["red".into(), "blue".into()],
            image_size: 16,
            classifier: Box::new(
                AttributeOracle::new(vec![
                    Box::new(Brightness {
                        channel: 0,
                        scale: 5.0,
                    }),
                    Box::new(Brightness {
                        channel: 2,
                        scale: 5.0,
                    }),
                ])
                .unwrap(),
            ),
        }),
        ..Scorers::default()
    };
    let report = evaluate_run(&dir, &scorers, &options(), &Default::default()).unwrap();
    let m = &report.overall;
    // 12 originals against 11 flipped counterfactuals, 3 features wide.
    let fid = m.fid.unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    assert!(m.sfid.unwrap().is_finite());
    let cout = m.cout.unwrap();
    assert!((-1.0..=1.0).contains(&cout.all));
    let mnac = m.mnac.unwrap();
    assert!((0.0..=2.0).contains(&mnac.all));
    let sim = m.similarity.unwrap();
    assert!((-1.0..=1.0).contains(&sim.all.mean));
    assert!(sim.flipped.is_some());
    assert_eq!(report.mnac_attributes, ["red", "blue"]);
    assert_eq!(report.fid_encoder.as_ref().unwrap().name, "channel-means");
    assert_eq!(
        report.similarity_encoder.as_ref().unwrap().name,
        "lpips-alex"
    );
    let table = report.to_string();
    assert!(table.contains("not InceptionV3"), "{table}");
    assert!(table.contains("every attribute counted"), "{table}");

    // Excluding an attribute never counts more; an index past the attributes is an error.
    let mut exclude = options();
    exclude.mnac_exclude = Some(0);
    let fewer = evaluate_run(&dir, &scorers, &exclude, &Default::default()).unwrap();
    assert!(fewer.overall.mnac.unwrap().all <= mnac.all);
    assert_eq!(fewer.mnac_excluded, Some(0));
    exclude.mnac_exclude = Some(2);
    let err = evaluate_run(&dir, &scorers, &exclude, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");

    // Per direction, 6 originals cannot fit 3-wide Gaussians for sFID halves: None, with the
    // reason in the notes.
    let first = &report.directions[0];
    assert!(first.metrics.sfid.is_none());
    assert!(report.notes.iter().any(|n| n.metric == Metric::Sfid
        && n.direction.as_deref() == Some("bouba -> kiki")
        && n.reason.contains("at least")));
}

#[test]
fn an_oracle_of_other_classes_is_an_error() {
    let dir = temp_dir("classes");
    fixture(&dir, 1, 0);
    let scorers = Scorers::<I> {
        oracle: Some(ScoringOracle {
            names: vec!["cat".into(), "dog".into()],
            image_size: 16,
            classifier: Box::new(Brightness {
                channel: 0,
                scale: 1.0,
            }),
        }),
        ..Scorers::default()
    };
    let err = evaluate_run(&dir, &scorers, &options(), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("cat"), "{err}");
}

#[test]
fn encoder_choices_parse_and_typos_name_the_choices() {
    assert_eq!(
        "lpips-alex".parse::<EncoderChoice>().unwrap(),
        EncoderChoice::LpipsAlex
    );
    assert_eq!(
        "clip:x/model.safetensors".parse::<EncoderChoice>().unwrap(),
        EncoderChoice::Clip("x/model.safetensors".into())
    );
    for bad in ["lpips-alx", "clip:", "inception", "vgg"] {
        let err = bad.parse::<EncoderChoice>().unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
        let text = err.to_string();
        for choice in ["lpips-alex", "lpips-vgg", "clip:FILE", "inception:FILE"] {
            assert!(text.contains(choice), "{text}");
        }
    }
    // Inception parses but cannot be built yet; an LPIPS encoder without weights names the flag.
    let paths = ScorerPaths {
        fid_encoder: Some("inception:pt_inception.pth".parse().unwrap()),
        ..ScorerPaths::default()
    };
    let err = load_scorers::<I>(&paths, &Default::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("InceptionV3"), "{err}");
    let paths = ScorerPaths {
        similarity_encoder: Some(EncoderChoice::LpipsVgg),
        ..ScorerPaths::default()
    };
    let err = load_scorers::<I>(&paths, &Default::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("--lpips-vgg"), "{err}");
}

#[test]
fn the_command_rejects_a_typo_before_scoring_and_writes_typed_json() {
    let dir = temp_dir("cli");
    fixture(&dir.join("results"), 1, 0);
    let foil = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_foil"))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = foil(&[
        "evaluate",
        "--results",
        "results",
        "--lpips",
        "none",
        "--fid-encoder",
        "lpips-alx",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("lpips-alex, lpips-vgg, clip:FILE or inception:FILE"),
        "{stderr}"
    );
    assert!(!dir.join("results/metrics.json").exists());

    let (ok, stdout, stderr) = foil(&["evaluate", "--results", "results", "--lpips", "none"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("success ratio"), "{stdout}");
    let json = std::fs::read_to_string(dir.join("results/metrics.json")).unwrap();
    let report = RunEvaluation::from_json(&json).unwrap();
    assert_eq!(report.overall.inputs, 2);
    assert!(report.overall.lpips.is_none());
}
