//! `run::evaluate_run` on hand-made results folders (written with `foil_run::testing`): counts
//! and LPIPS per direction, flipped-only against all-inputs LPIPS, the notes for metrics without
//! a network, the table, the JSON's fields, diversity across seed folders, FID / COUT / MNAC /
//! similarity with small networks, the errors, the seed folders and the LPIPS resize.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::image_io::Resize;
use foil_core::{Classifier, Error, ImageEncoder, Result};
use foil_metrics::lpips::{Lpips, LpipsEncoder, LpipsNet};
use foil_metrics::run::{
    AttributeOracle, Encoder, EncoderLabel, EvaluateOptions, LPIPS_MIN_SIDE, Metric, RunEvaluation,
    Scorers, ScoringOracle, evaluate_run, lpips_resize, seed_folders,
};
use foil_models::alexnet::AlexNetConfig;
use foil_models::vgg::Vgg16Config;
use foil_run::testing::{CLASSES, FixtureItem, picture, temp_dir};
use image::{DynamicImage, RgbImage};

type I = Flex;

/// `n` inputs per direction; item `k` of direction `d` is flipped unless `k == 0 && d == 0`.
fn fixture(run: &Path, n: usize, cf_shift: u8) {
    for d in 0..2 {
        for k in 0..n {
            let orig = picture((k * 23 + d * 7) as u8, 40 + (k * 11) as u8);
            let cf = picture(
                (k * 23 + d * 7) as u8,
                ((200 + k * 13) as u8).wrapping_add(cf_shift),
            );
            FixtureItem {
                flipped: !(k == 0 && d == 0),
                ..FixtureItem::new(format!("img{d}{k:02}"), d, orig, cf)
            }
            .write(run)
            .unwrap();
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

/// Per-channel means, a 3-wide encoder.
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
fn evaluate_run_counts_scores_and_notes_per_direction() {
    let tmp = temp_dir("score");
    let dir = tmp.path();
    // bouba -> kiki: three inputs, the first not flipped, every counterfactual changed.
    for k in 0..3u8 {
        let orig = picture(k * 23, 40 + k * 11);
        let cf = picture(k * 23, 200 + k * 13);
        FixtureItem {
            flipped: k != 0,
            changed_fraction: 0.1 * f64::from(k + 1),
            ..FixtureItem::new(format!("a{k}"), 0, orig, cf)
        }
        .write(dir)
        .unwrap();
    }
    // kiki -> bouba: two flipped inputs whose counterfactual is the original.
    for k in 0..2u8 {
        let orig = picture(100 + k * 7, 90);
        FixtureItem {
            changed_fraction: 0.5,
            ..FixtureItem::new(format!("b{k}"), 1, orig.clone(), orig)
        }
        .write(dir)
        .unwrap();
    }
    let scorers = Scorers::<I> {
        lpips: Some(tiny_alex()),
        similarity_encoder: Some(Encoder {
            label: EncoderLabel {
                name: "channel-means".into(),
                inception: false,
            },
            net: Box::new(ChannelMeans),
        }),
        ..Scorers::default()
    };
    let options = EvaluateOptions {
        method: "test".into(),
        batch_size: 2,
        ..EvaluateOptions::default()
    };
    let report = evaluate_run(dir, &scorers, &options, &Default::default()).unwrap();
    assert_eq!(report.method, "test");
    assert_eq!(report.scored_folder, dir);
    assert!(report.seeds.is_empty());
    assert_eq!((report.overall.inputs, report.overall.flipped), (5, 4));
    assert!((report.overall.success_ratio - 0.8).abs() < 1e-12);
    assert_eq!(report.directions.len(), 2);
    let (forward, back) = (&report.directions[0], &report.directions[1]);
    assert_eq!(
        (forward.from, forward.to, forward.label()),
        (0, 1, "bouba -> kiki".into())
    );
    assert_eq!(
        (back.from, back.to, back.label()),
        (1, 0, "kiki -> bouba".into())
    );
    assert_eq!((forward.metrics.inputs, forward.metrics.flipped), (3, 2));
    assert!((forward.metrics.success_ratio - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!((back.metrics.inputs, back.metrics.flipped), (2, 2));
    assert_eq!(back.metrics.success_ratio, 1.0);
    assert!((forward.metrics.changed_fraction - 0.2).abs() < 1e-12);
    assert!((report.overall.changed_fraction - 0.32).abs() < 1e-12);
    assert!((report.overall.mean_abs_change - 0.16).abs() < 1e-12);
    assert_eq!(report.overall.denoiser_calls, 10.0);
    assert_eq!(report.overall.classifier_calls, 11.0);

    // LPIPS: zero for unchanged counterfactuals, positive and finite for changed ones; the
    // flipped mean leaves out the unflipped input.
    let l = forward.metrics.lpips.unwrap();
    assert!(l.all.is_finite() && l.all > 0.0, "{l:?}");
    assert!(l.flipped.unwrap().is_finite() && l.flipped.unwrap() > 0.0);
    assert!((l.flipped.unwrap() - l.all).abs() > 1e-9, "{l:?}");
    let b = back.metrics.lpips.unwrap();
    assert_eq!((b.all, b.flipped), (0.0, Some(0.0)));
    let overall = report.overall.lpips.unwrap();
    assert!((overall.all - l.all * 3.0 / 5.0).abs() < 1e-9);
    assert!((overall.flipped.unwrap() - l.flipped.unwrap() * 2.0 / 4.0).abs() < 1e-9);

    // Similarity: an unchanged counterfactual has cosine similarity 1.
    let s = back.metrics.similarity.unwrap();
    assert!((s.all.mean - 1.0).abs() < 1e-6, "{s:?}");
    assert!(forward.metrics.similarity.unwrap().flipped.is_some());

    // Metrics without a network are `None`, each with a note naming what to pass.
    for m in [
        Metric::Fid,
        Metric::Sfid,
        Metric::Cout,
        Metric::Mnac,
        Metric::Diversity,
    ] {
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.metric == m && n.direction.is_none()),
            "no note for {m:?}"
        );
    }
    assert!(
        !report
            .notes
            .iter()
            .any(|n| matches!(n.metric, Metric::Lpips | Metric::Similarity))
    );
    let o = &report.overall;
    assert!(o.fid.is_none() && o.sfid.is_none() && o.cout.is_none() && o.mnac.is_none());
    assert!(o.diversity.is_none());

    let table = report.to_string();
    for row in [
        "test: ",
        "success ratio",
        "LPIPS, flipped (papers)",
        "bouba -> kiki",
        "kiki -> bouba",
        "not computed (-):",
        "--oracle DIR",
    ] {
        assert!(table.contains(row), "no {row:?} in\n{table}");
    }

    // The JSON keeps its fields and round-trips.
    let json = report.to_json().unwrap();
    assert_eq!(RunEvaluation::from_json(&json).unwrap(), report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "method",
        "scored_folder",
        "seeds",
        "fid_encoder",
        "similarity_encoder",
        "mnac_attributes",
        "mnac_excluded",
        "directions",
        "overall",
        "notes",
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected);
    assert_eq!(value["notes"][0]["metric"], "fid");
    assert!(value["directions"][0]["metrics"]["lpips"]["flipped"].is_f64());
    assert!(value["overall"]["similarity"]["all"]["mean"].is_f64());
    assert_eq!(value["similarity_encoder"]["name"], "channel-means");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flipped_only_lpips_differs_from_all_and_json_round_trips() {
    let tmp = temp_dir("lpips");
    let dir = tmp.path();
    fixture(dir, 2, 0);
    let scorers = Scorers::<I> {
        lpips: Some(tiny_alex()),
        ..Scorers::default()
    };
    let report = evaluate_run(dir, &scorers, &options(), &Default::default()).unwrap();
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
    let tmp = temp_dir("diversity");
    let dir = tmp.path();
    fixture(&dir.join("seed-0"), 2, 0);
    fixture(&dir.join("seed-1"), 2, 0);
    let scorers = Scorers::<I> {
        diversity_lpips: Some(tiny_vgg()),
        ..Scorers::default()
    };
    let same = evaluate_run(dir, &scorers, &options(), &Default::default()).unwrap();
    assert_eq!(same.seeds, vec![0, 1]);
    assert!(same.scored_folder.ends_with("seed-0"));
    let d = same.overall.diversity.unwrap();
    assert_eq!((d.inputs, d.seeds), (4, 2));
    assert!(d.mean.abs() < 1e-9, "{}", d.mean);

    // A third seed with other counterfactuals; one input missing from it is left out.
    fixture(&dir.join("seed-2"), 2, 60);
    let gone = dir.join("seed-2/kiki_to_bouba/img101.json");
    std::fs::remove_file(&gone).unwrap();
    let varied = evaluate_run(dir, &scorers, &options(), &Default::default()).unwrap();
    let d = varied.overall.diversity.unwrap();
    assert_eq!((d.inputs, d.seeds), (3, 3));
    assert!(d.mean > 1e-6, "{}", d.mean);
    assert_eq!(varied.directions[1].metrics.diversity.unwrap().inputs, 1);
    assert!(varied.to_string().contains("first seed"));

    // One seed folder only: no diversity, and the note says why.
    let single_tmp = temp_dir("single-seed");
    let single = single_tmp.path();
    fixture(&single.join("seed-3"), 1, 0);
    let report = evaluate_run(single, &scorers, &options(), &Default::default()).unwrap();
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
    let tmp = temp_dir("all");
    let dir = tmp.path();
    fixture(dir, 6, 0);
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
    let report = evaluate_run(dir, &scorers, &options(), &Default::default()).unwrap();
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
    let fewer = evaluate_run(dir, &scorers, &exclude, &Default::default()).unwrap();
    assert!(fewer.overall.mnac.unwrap().all <= mnac.all);
    assert_eq!(fewer.mnac_excluded, Some(0));
    exclude.mnac_exclude = Some(2);
    let err = evaluate_run(dir, &scorers, &exclude, &Default::default()).unwrap_err();
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
    let tmp = temp_dir("classes");
    let dir = tmp.path();
    fixture(dir, 1, 0);
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
    let err = evaluate_run(dir, &scorers, &options(), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("cat"), "{err}");
}

#[test]
fn an_empty_folder_and_mixed_classes_are_errors() {
    let tmp = temp_dir("empty");
    let dir = tmp.path();
    let scorers = Scorers::<I>::default();
    let options = EvaluateOptions::default();
    let err = evaluate_run(dir, &scorers, &options, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("results under"), "{err}");
    FixtureItem {
        changed_fraction: 0.1,
        ..FixtureItem::new("a", 0, picture(0, 10), picture(0, 200))
    }
    .write(dir)
    .unwrap();
    let other = dir.join("cat_to_dog");
    std::fs::create_dir_all(&other).unwrap();
    let text = std::fs::read_to_string(dir.join("bouba_to_kiki/a.json"))
        .unwrap()
        .replace("bouba", "cat")
        .replace("kiki", "dog");
    std::fs::write(other.join("b.json"), text).unwrap();
    let err = evaluate_run(dir, &scorers, &options, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("classes"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn seed_folders_are_sorted_by_seed_and_small_images_are_upscaled() {
    let tmp = temp_dir("seeds");
    let dir = tmp.path();
    for s in ["seed-10", "seed-2", "seed-x", "other"] {
        std::fs::create_dir_all(dir.join(s)).unwrap();
    }
    std::fs::write(dir.join("seed-3"), b"a file").unwrap();
    let seeds: Vec<u64> = seed_folders(dir)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seeds, [2, 10]);
    std::fs::remove_dir_all(dir).unwrap();

    let image = |w, h| DynamicImage::ImageRgb8(RgbImage::new(w, h));
    assert_eq!(lpips_resize(&[image(64, 80)]), Resize::Keep);
    assert_eq!(
        lpips_resize(&[image(28, 56)]),
        Resize::Exact {
            width: LPIPS_MIN_SIDE,
            height: 2 * LPIPS_MIN_SIDE
        }
    );
    assert_eq!(lpips_resize(&[]), Resize::Keep);
}
