//! `foil maskdime` on the authors' published files, end to end through the `foil` binary: a
//! guided-diffusion DDPM checkpoint and DiME's CelebA classifier, here their tiny twins
//! recorded in the published layouts (`crates/foil-models/tests/fixtures`: `adm_tiny.safetensors`
//! is guided-diffusion's `UNetModel` at `AdmConfig::tiny`, `dime_classifier_tiny.pth` the
//! authors' nested `classifier.pth` layout at tiny DenseNet widths), on a class-folder set the
//! test writes.

use crate::common;

use common::foil;

use std::path::Path;

use burn::backend::NdArray;
use foil::core::image_io::{image_mode, images_to_tensor};
use foil::core::predicted_labels;
use foil::guide::GuideConfig;
use foil::models::dime_classifier::DimeClassifierConfig;
use foil::pipeline::{ExplainConfig, Preset, read_results};
use image::{DynamicImage, Rgb, RgbImage};

/// Side of the tiny ADM's images (`AdmConfig::tiny().image_size`).
const SIZE: u32 = 16;

fn fixture(name: &str) -> String {
    format!(
        "{}/crates/foil-models/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn temp_dir(tag: &str) -> tempfile::TempDir {
    common::temp_dir("published", tag)
}

/// `dir/<class>/<i>.png`: 16 px RGB images, four per class, smooth gradients with a
/// class-dependent bright band (`smiling`) or none (`plain`).
fn write_folder_set(dir: &Path) {
    for (c, class) in ["plain", "smiling"].into_iter().enumerate() {
        let sub = dir.join(class);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..4u32 {
            let img = RgbImage::from_fn(SIZE, SIZE, |x, y| {
                let band = c == 1 && (6..10).contains(&y);
                let base = (x * 9 + y * 5 + i * 23) % 200;
                Rgb([
                    if band { 250 } else { base as u8 },
                    (base / 2 + 40 * i) as u8,
                    (255 - base) as u8,
                ])
            });
            img.save(sub.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// A copy of a safetensors file with every tensor renamed `module.<name>` (a `DataParallel`
/// state dict): the header's keys change, the data offsets do not.
fn with_module_prefix(from: &str, to: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let renamed: serde_json::Map<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| {
            if k == "__metadata__" {
                (k, v)
            } else {
                (format!("module.{k}"), v)
            }
        })
        .collect();
    let header = serde_json::to_vec(&renamed).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(to, out).unwrap();
}

#[test]
fn published_settings_are_the_authors_scripts() {
    for (preset, guide) in [
        (Preset::Maskdime, GuideConfig::maskdime()),
        (Preset::Fastdime, GuideConfig::fastdime()),
        (Preset::Dime, GuideConfig::dime()),
    ] {
        let config = ExplainConfig::published(preset);
        assert_eq!(config.preset, preset);
        assert_eq!(config.guide, guide);
        assert_eq!((config.respaced_steps, config.guide.tau), (200, 60));
    }
    // foil's own small networks keep their settings.
    assert_eq!(ExplainConfig::new(Preset::Maskdime).respaced_steps, 100);
}

#[test]
fn maskdime_runs_on_published_files() {
    let tmp = temp_dir("maskdime");
    let dir = tmp.path();
    write_folder_set(&dir.join("data"));
    let adm = fixture("adm_tiny.safetensors");
    let classifier = format!("dime-tiny:{}", fixture("dime_classifier_tiny.pth"));
    let run = |ddpm: &str, attribute: &str, extra: &[&str]| {
        let mut args = vec![
            "maskdime",
            "--data",
            "data",
            "--classes",
            "plain,smiling",
            "--test-fraction",
            "0.5",
            "--ddpm-checkpoint",
            ddpm,
            "--ddpm-config",
            "tiny",
            "--classifier",
            &classifier,
            "--attribute",
            attribute,
            "--respaced-steps",
            "10",
            "--tau",
            "3",
            "--scales",
            "8",
        ];
        args.extend_from_slice(extra);
        foil(&args, dir)
    };

    let (ok, stdout, stderr) = run(&adm, "31", &["--out", "results/published"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 explained"), "{stdout}");
    let out = dir.join("results/published");
    let results = read_results(&out).unwrap();
    assert_eq!(results.len(), 4);
    // The prediction recorded is the tiny classifier's (attribute 31) on the saved original.
    let net = DimeClassifierConfig::tiny(31)
        .load_file::<NdArray>(fixture("dime_classifier_tiny.pth"), &Default::default())
        .unwrap();
    let (mode, resize) = image_mode(SIZE);
    for (json, item) in &results {
        let folder = json.parent().unwrap();
        let stem = json.file_stem().unwrap().to_string_lossy();
        let m1 = item.m1.as_ref().expect("MaskDiME writes M1");
        let m2 = item.m2.as_ref().expect("MaskDiME writes M2");
        assert!(folder.join(&m1.file).exists() && folder.join(&m2.file).exists());
        let orig = image::open(folder.join(format!("{stem}.orig.png"))).unwrap();
        assert_eq!((orig.width(), orig.height()), (SIZE, SIZE));
        let x = images_to_tensor::<NdArray>(
            &[DynamicImage::from(orig.to_rgb8())],
            mode,
            resize,
            &Default::default(),
        )
        .unwrap();
        let predicted = predicted_labels(&net, x).unwrap()[0];
        assert_eq!(item.predicted, predicted, "{}", json.display());
        assert_eq!(item.to, 1 - predicted, "{}", json.display());
        assert_eq!(item.classes, ["plain".to_string(), "smiling".to_string()]);
    }
    // A rerun skips every input.
    let (ok, stdout, stderr) = run(&adm, "31", &["--out", "results/published"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("0 explained") && stdout.contains("4 already done"),
        "{stdout}"
    );

    // The same DDPM saved by DataParallel (`module.` names), the attribute by name.
    let module = dir.join("adm_module.safetensors");
    with_module_prefix(&adm, &module);
    let (ok, stdout, stderr) = run(
        module.to_str().unwrap(),
        "Smiling",
        &["--out", "results/module", "--per-direction", "1"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 explained"), "{stdout}");

    // Typed errors, not panics.
    let (ok, _, stderr) = run("missing-ddpm.safetensors", "31", &[]);
    assert!(
        !ok && stderr.contains("missing-ddpm.safetensors") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&adm, "41", &[]);
    assert!(
        !ok && stderr.contains("41") && stderr.contains("40") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&adm, "31", &["--ddpm", "runs/ddpm"]);
    assert!(
        !ok && stderr.contains("--ddpm-checkpoint") && stderr.contains("cannot be used with"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&adm, "31", &["--oracle", "runs/oracle"]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = foil(
        &[
            "maskdime",
            "--classes",
            "plain,smiling",
            "--classifier",
            "densenet:x.pth",
            "--attribute",
            "31",
        ],
        dir,
    );
    assert!(!ok && stderr.contains("dime-densenet121:FILE"), "{stderr}");
    let (ok, _, stderr) = foil(
        &[
            "maskdime",
            "--classes",
            "plain,smiling",
            "--classifier",
            &classifier,
        ],
        dir,
    );
    assert!(!ok && stderr.contains("--attribute"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

fn published(name: &str) -> String {
    format!(
        "{}/tests/fixtures/published/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `foil stats --image-encoder` and `foil diffusion --kandinsky` on the tiny folders in the
/// publishers' layouts (`tools/write_published_tiny.py`), on a user's flat image folder
/// (`--images DIR --from --to`): the statistics are cached, every input gets a result, progress
/// is shown, and the counterfactual is the published pipeline's (not the input).
#[test]
fn diffusion_runs_on_published_folders() {
    let tmp = temp_dir("diffusion");
    let dir = tmp.path();
    write_folder_set(&dir.join("data"));
    let prior = published("kandinsky-2-2-prior");
    let stats = [
        "stats",
        "--data",
        "data",
        "--classes",
        "plain,smiling",
        "--image-encoder",
        &prior,
        "--image-size",
        "32",
        "--out",
        "stats.json",
    ];
    let (ok, stdout, stderr) = foil(&stats, dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("class statistics of"), "{stdout}");
    let (ok, stdout, _) = foil(&stats, dir);
    assert!(ok && stdout.contains("up to date"), "{stdout}");

    let classifier = format!("dime-tiny:{}", fixture("dime_classifier_tiny.pth"));
    let decoder = published("kandinsky-2-2-decoder");
    let lora = published("lora-peft");
    let run = |size: &str, extra: &[&str]| {
        let mut args = vec![
            "diffusion",
            "--kandinsky",
            &decoder,
            "--image-encoder",
            &prior,
            "--stats",
            "stats.json",
            "--classifier",
            &classifier,
            "--attribute",
            "31",
            "--images",
            "data/plain",
            "--from",
            "plain",
            "--to",
            "smiling",
            "--image-size",
            size,
            "--steps",
            "4",
            "--t-skips",
            "0.5,0",
        ];
        args.extend_from_slice(extra);
        foil(&args, dir)
    };
    let (ok, stdout, stderr) = run("32", &["--out", "results/k", "--lora", &lora]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 explained"), "{stdout}");
    // Progress lines (plain, stderr is not a terminal): the first and the last input at least.
    assert!(
        stderr.contains("explain [1/4] inputs") && stderr.contains("explain [4/4] inputs"),
        "progress lines: {stderr}"
    );
    let results = read_results(&dir.join("results/k")).unwrap();
    assert_eq!(results.len(), 4);
    for (_, r) in &results {
        assert_eq!(r.classes, ["plain", "smiling"]);
        assert!(r.denoiser_calls >= 4 && r.encoder_calls == 1, "{r:?}");
    }
    let folder = dir.join("results/k/plain_to_smiling");
    let key = foil::pipeline::result_key(&results[0].1.source);
    let orig = image::open(folder.join(format!("{key}.orig.png"))).unwrap();
    let cf = image::open(folder.join(format!("{key}.cf.png"))).unwrap();
    assert_eq!((cf.width(), cf.height()), (SIZE * 2, SIZE * 2));
    assert_ne!(orig.to_rgb8().into_raw(), cf.to_rgb8().into_raw());

    // A side that is not a multiple of the latent factor, and a missing folder, are errors.
    let (ok, _, stderr) = run("36", &["--out", "results/bad"]);
    assert!(!ok && stderr.contains("multiple of"), "{stderr}");
    let (ok, _, stderr) = foil(
        &[
            "diffusion",
            "--kandinsky",
            "nowhere",
            "--image-encoder",
            &prior,
            "--stats",
            "stats.json",
            "--images",
            "data/plain",
            "--from",
            "plain",
            "--to",
            "smiling",
        ],
        dir,
    );
    assert!(!ok && stderr.contains("nowhere"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--ddpm-config FILE.json`: guided-diffusion's flags describe the checkpoint's network (here
/// the tiny ADM's), and a flag foil cannot honour is refused by name.
#[test]
fn maskdime_reads_guided_diffusion_flags() {
    let tmp = temp_dir("flags");
    let dir = tmp.path();
    write_folder_set(&dir.join("data"));
    let flags = r#"{"image_size": "16", "num_channels": "32", "num_res_blocks": "1",
        "attention_resolutions": "8", "channel_mult": "1,1", "num_heads": "1",
        "num_head_channels": "16", "learn_sigma": "True", "use_scale_shift_norm": "True",
        "resblock_updown": "True", "class_cond": "False", "diffusion_steps": "500"}"#;
    std::fs::write(dir.join("flags.json"), flags).unwrap();
    std::fs::write(
        dir.join("cosine.json"),
        flags.replace(
            r#""diffusion_steps": "500""#,
            r#""noise_schedule": "cosine""#,
        ),
    )
    .unwrap();
    let adm = fixture("adm_tiny.safetensors");
    let classifier = format!("dime-tiny:{}", fixture("dime_classifier_tiny.pth"));
    let run = |config: &str| {
        let args = [
            "maskdime",
            "--data",
            "data",
            "--classes",
            "plain,smiling",
            "--test-fraction",
            "0.5",
            "--ddpm-checkpoint",
            &adm,
            "--ddpm-config",
            config,
            "--classifier",
            &classifier,
            "--attribute",
            "31",
            "--respaced-steps",
            "10",
            "--tau",
            "3",
            "--scales",
            "8",
            "--out",
            "results/flags",
        ];
        foil(&args, dir)
    };
    let (ok, stdout, stderr) = run("flags.json");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 explained"), "{stdout}");
    let (ok, _, stderr) = run("cosine.json");
    assert!(!ok && stderr.contains("noise_schedule"), "{stderr}");
    let (ok, _, stderr) = run("wide");
    assert!(!ok && stderr.contains("FILE.json"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `foil maskdime --classifier resnet18:FILE --logits I,J` on the tiny DDPM checkpoint: a
/// torchvision state dict (`classifiers_resnet.safetensors`, torchvision's `resnet18` at width
/// 4 with 3 classes, recorded by `tools/record_classifiers.py`) as the classifier under
/// explanation, without --attribute. Every input gets its results; the prediction recorded is
/// the arg-max of the pair's two logits (ImageNet normalisation inside); misuse is a typed error.
#[test]
fn maskdime_explains_a_torchvision_classifier() {
    use foil::core::Classifier;
    use foil::models::torchvision::{Logits, TorchvisionArch, TorchvisionClassifier};

    let tmp = temp_dir("torchvision");

    let dir = tmp.path();
    write_folder_set(&dir.join("data"));
    let adm = fixture("adm_tiny.safetensors");
    let file = fixture("classifiers_resnet.safetensors");
    let classifier = format!("resnet18:{file}");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "maskdime",
            "--data",
            "data",
            "--classes",
            "plain,smiling",
            "--test-fraction",
            "0.5",
            "--ddpm-checkpoint",
            &adm,
            "--ddpm-config",
            "tiny",
            "--classifier",
            &classifier,
            "--respaced-steps",
            "10",
            "--tau",
            "3",
            "--scales",
            "8",
        ];
        args.extend_from_slice(extra);
        foil(&args, dir)
    };

    let (ok, stdout, stderr) = run(&["--logits", "2,0", "--out", "results/torchvision"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 explained"), "{stdout}");
    let results = read_results(&dir.join("results/torchvision")).unwrap();
    assert_eq!(results.len(), 4);
    let net = TorchvisionClassifier::<NdArray>::load_file(
        TorchvisionArch::Resnet18,
        &file,
        Logits::Pair([2, 0]),
        &Default::default(),
    )
    .unwrap();
    assert_eq!((net.num_outputs(), net.num_logits()), (3, 2));
    let (mode, resize) = image_mode(SIZE);
    for (json, item) in &results {
        let folder = json.parent().unwrap();
        let stem = json.file_stem().unwrap().to_string_lossy();
        let m1 = item.m1.as_ref().expect("MaskDiME writes M1");
        assert!(folder.join(&m1.file).exists());
        let orig = image::open(folder.join(format!("{stem}.orig.png"))).unwrap();
        let x = images_to_tensor::<NdArray>(
            &[DynamicImage::from(orig.to_rgb8())],
            mode,
            resize,
            &Default::default(),
        )
        .unwrap();
        // Logit 2 stands for label 0 (plain), logit 0 for label 1 (smiling).
        let all = foil::core::tensor::to_vec_f32(&net.all_logits(x.clone()).unwrap()).unwrap();
        let predicted = usize::from(all[0] > all[2]);
        assert_eq!(predicted_labels(&net, x).unwrap()[0], predicted);
        assert_eq!(item.predicted, predicted, "{}", json.display());
        assert_eq!(item.to, 1 - predicted, "{}", json.display());
        assert_eq!(item.classes, ["plain".to_string(), "smiling".to_string()]);
    }

    // A 3-class head without --logits, an index past it, --attribute with a torchvision
    // classifier, --logits with --attribute, an architecture foil does not build.
    let (ok, _, stderr) = run(&["--out", "results/e1"]);
    assert!(
        !ok && stderr.contains("3 logits")
            && stderr.contains("--logits")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["--logits", "0,3", "--out", "results/e2"]);
    assert!(
        !ok && stderr.contains("classifiers_resnet.safetensors")
            && stderr.contains("3 logits")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["--attribute", "31", "--out", "results/e3"]);
    assert!(
        !ok && stderr.contains("--attribute") && stderr.contains("--logits"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["--logits", "0,1", "--attribute", "31"]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = run(&["--logits", "1,1"]);
    assert!(!ok && stderr.contains("two different"), "{stderr}");
    let (ok, _, stderr) = foil(
        &[
            "maskdime",
            "--classes",
            "plain,smiling",
            "--classifier",
            "resnet50:x.pth",
            "--logits",
            "0,1",
        ],
        dir,
    );
    assert!(
        !ok && stderr.contains("resnet18") && stderr.contains("mobilenet_v2"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
