//! `run::evaluate_run` on a hand-made results folder: counts and LPIPS per direction, the
//! notes for metrics without a network, the table, the JSON's fields, the seed folders and
//! the LPIPS resize.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, backend::Backend};
use foil_core::image_io::Resize;
use foil_core::{ImageEncoder, Result};
use foil_metrics::lpips::{Lpips, LpipsNet};
use foil_metrics::run::{
    Encoder, EncoderLabel, EvaluateOptions, LPIPS_MIN_SIDE, Metric, RunEvaluation, Scorers,
    evaluate_run, lpips_resize, seed_folders,
};
use foil_models::alexnet::AlexNetConfig;
use foil_run::{ItemResult, write_json};
use image::{DynamicImage, Rgb, RgbImage};

type I = Flex;

const CLASSES: [&str; 2] = ["bouba", "kiki"];

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foil-metrics-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 16 x 16 gradient shifted by `level`, with a square of `patch` brightness.
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

/// One result as the methods write it: `<run>/<from>_to_<to>/<key>.{orig,cf}.png` and
/// `<key>.json`.
fn write_item(
    run: &Path,
    key: &str,
    predicted: usize,
    flipped: bool,
    changed: f64,
    (orig, cf): (&RgbImage, &RgbImage),
) {
    let to = 1 - predicted;
    let dir = run.join(format!("{}_to_{}", CLASSES[predicted], CLASSES[to]));
    std::fs::create_dir_all(&dir).unwrap();
    orig.save(dir.join(format!("{key}.orig.png"))).unwrap();
    cf.save(dir.join(format!("{key}.cf.png"))).unwrap();
    let item = ItemResult {
        source: key.into(),
        from: predicted,
        predicted,
        to,
        classes: CLASSES.map(String::from),
        flipped,
        scale: Some(8.0),
        t_skip: None,
        lambda: None,
        changed_fraction: changed,
        mean_abs_change: changed / 2.0,
        denoiser_calls: 10,
        classifier_calls: 11,
        encoder_calls: 0,
        m1: None,
        m2: None,
    };
    write_json(&dir.join(format!("{key}.json")), &item).unwrap();
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

#[test]
fn evaluate_run_counts_scores_and_notes_per_direction() {
    let dir = temp_dir("score");
    // bouba -> kiki: three inputs, the first not flipped, every counterfactual changed.
    for k in 0..3u8 {
        let orig = picture(k * 23, 40 + k * 11);
        let cf = picture(k * 23, 200 + k * 13);
        write_item(
            &dir,
            &format!("a{k}"),
            0,
            k != 0,
            0.1 * f64::from(k + 1),
            (&orig, &cf),
        );
    }
    // kiki -> bouba: two flipped inputs whose counterfactual is the original.
    for k in 0..2u8 {
        let orig = picture(100 + k * 7, 90);
        write_item(&dir, &format!("b{k}"), 1, true, 0.5, (&orig, &orig));
    }
    let scorers = Scorers::<I> {
        lpips: Some(Lpips::random(
            LpipsNet::Alex(AlexNetConfig {
                widths: [4, 6, 6, 4, 3],
            }),
            &Default::default(),
        )),
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
    let report = evaluate_run(&dir, &scorers, &options, &Default::default()).unwrap();
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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_folder_and_mixed_classes_are_errors() {
    let dir = temp_dir("empty");
    let scorers = Scorers::<I>::default();
    let options = EvaluateOptions::default();
    let err = evaluate_run(&dir, &scorers, &options, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("results under"), "{err}");
    let (orig, cf) = (picture(0, 10), picture(0, 200));
    write_item(&dir, "a", 0, true, 0.1, (&orig, &cf));
    let other = dir.join("cat_to_dog");
    std::fs::create_dir_all(&other).unwrap();
    let text = std::fs::read_to_string(dir.join("bouba_to_kiki/a.json"))
        .unwrap()
        .replace("bouba", "cat")
        .replace("kiki", "dog");
    std::fs::write(other.join("b.json"), text).unwrap();
    let err = evaluate_run(&dir, &scorers, &options, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("classes"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn seed_folders_are_sorted_by_seed_and_small_images_are_upscaled() {
    let dir = temp_dir("seeds");
    for s in ["seed-10", "seed-2", "seed-x", "other"] {
        std::fs::create_dir_all(dir.join(s)).unwrap();
    }
    std::fs::write(dir.join("seed-3"), b"a file").unwrap();
    let seeds: Vec<u64> = seed_folders(&dir)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seeds, [2, 10]);
    std::fs::remove_dir_all(&dir).unwrap();

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
