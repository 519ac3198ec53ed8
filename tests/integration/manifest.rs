//! The run manifest through the CLI, on the procedural kiki / bouba set with tiny networks:
//! `foil maskdime` and `foil diffusion` write `foil-run.json`; a rerun with other settings is
//! refused with each differing setting named, `--resume-any` overrides and is recorded, a
//! not-compared setting (`--per-direction`) is accepted; `foil teach` takes the run's data,
//! classes, seed, decoder and edit settings from the manifest.

use std::path::Path;

use crate::common::{self, foil};
use foil::run::manifest::{MANIFEST_FILE, RunManifest, SHA256};
use serde_json::Value;

const DATA: [&str; 4] = ["--data", "kiki-bouba:12:16", "--classes", "bouba,kiki"];

fn train(dir: &Path, what: &str, extra: &[&str]) {
    let mut args = vec!["train", what];
    args.extend_from_slice(&DATA);
    args.extend_from_slice(&["--image-size", "16", "--batch-size", "8"]);
    args.extend_from_slice(extra);
    let (ok, _, stderr) = foil(&args, dir);
    assert!(ok, "train {what}: {stderr}");
}

fn manifest(dir: &Path) -> RunManifest {
    RunManifest::read(dir)
        .unwrap()
        .unwrap_or_else(|| panic!("no {MANIFEST_FILE} in {}", dir.display()))
}

#[test]
fn runs_record_their_settings_and_refuse_other_settings_by_name() {
    let tmp = common::temp_dir("manifest", "cli");
    let dir = tmp.path();
    train(dir, "oracle", &["--steps", "10", "--width", "0.125"]);
    train(dir, "ddpm", &["--steps", "2"]);
    // `--tau 2` unless the extra flags give another.
    let maskdime = |extra: &[&str]| {
        let mut args = vec!["maskdime"];
        args.extend_from_slice(&DATA);
        args.extend_from_slice(&["--respaced-steps", "6", "--scales", "4"]);
        if !extra.contains(&"--tau") {
            args.extend_from_slice(&["--tau", "2"]);
        }
        args.extend_from_slice(&["--out", "results/m"]);
        args.extend_from_slice(extra);
        foil(&args, dir)
    };
    let (ok, stdout, stderr) = maskdime(&["--per-direction", "1"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 explained"), "{stdout}");
    let out = dir.join("results/m");
    let m = manifest(&out);
    assert_eq!((m.command.as_str(), m.seed), ("maskdime", 0));
    assert_eq!(m.get("method.tau"), Some(&Value::from(2)));
    assert_eq!(m.get("method.preset"), Some(&Value::from("maskdime")));
    assert_eq!(m.get("data.source"), Some(&Value::from("kiki-bouba:12:16")));
    assert_eq!(m.get("image_size"), Some(&Value::from(16)));
    assert_eq!(m.get("batch_size"), Some(&Value::from(16)));
    assert!(m.get("backend").is_some());
    for role in ["oracle", "ddpm"] {
        let c = &m.models[role];
        assert_eq!(
            (c.algorithm.as_str(), c.digest.len()),
            (SHA256, 64),
            "{role}"
        );
    }
    assert_eq!(m.foil_version, env!("CARGO_PKG_VERSION"));

    // Other settings: refused before anything is written, each difference named.
    let (ok, _, stderr) = maskdime(&["--per-direction", "2", "--tau", "3", "--seed", "5"]);
    assert!(!ok, "a rerun with other settings was accepted");
    assert!(stderr.contains("`method.tau`: 2 -> 3"), "{stderr}");
    assert!(stderr.contains("`seed`: 0 -> 5"), "{stderr}");
    assert!(stderr.contains("2 differ"), "{stderr}");
    assert!(stderr.contains("--resume-any"), "{stderr}");
    assert!(!stderr.contains("per_direction"), "{stderr}");
    assert_eq!(foil::run::read_results(&out).unwrap().len(), 2);

    // A not-compared setting: more inputs per direction extend the run.
    let (ok, stdout, stderr) = maskdime(&["--per-direction", "2"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("2 explained") && stdout.contains("2 already done"),
        "{stdout}"
    );
    assert_eq!(
        manifest(&out),
        m,
        "a matching run leaves the manifest as it was"
    );

    // --resume-any mixes, says so, and records it; the folder keeps its first settings.
    let (ok, _, stderr) = maskdime(&["--per-direction", "3", "--tau", "3", "--resume-any"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("`method.tau`: 2 -> 3"), "{stderr}");
    let after = manifest(&out);
    assert_eq!(after.get("method.tau"), Some(&Value::from(2)));
    assert_eq!(after.overrides.len(), 1);
    assert_eq!(after.overrides[0].differences[0].setting, "method.tau");

    // A changed model is a difference too (its checksum).
    let ddpm_json = dir.join("runs/ddpm/model.json");
    let mut spec = std::fs::read_to_string(&ddpm_json).unwrap();
    spec.push('\n');
    std::fs::write(&ddpm_json, spec).unwrap();
    let (ok, _, stderr) = maskdime(&["--per-direction", "3"]);
    assert!(!ok && stderr.contains("`model ddpm`"), "{stderr}");

    // DIFFusion, then `foil teach` with no run settings typed again.
    train(
        dir,
        "decoder",
        &["--steps", "2", "--unet-channels", "16,32"],
    );
    let mut args = vec!["diffusion"];
    args.extend_from_slice(&DATA);
    args.extend_from_slice(&[
        "--per-direction",
        "1",
        "--steps",
        "4",
        "--t-skips",
        "0.5,0",
        "--lambda",
        "3",
        "--guidance",
        "2",
        "--seed",
        "2",
        "--out",
        "results/d",
    ]);
    let (ok, _, stderr) = foil(&args, dir);
    assert!(ok, "{stderr}");
    let d = manifest(&dir.join("results/d"));
    assert_eq!(d.get("method.steps"), Some(&Value::from(4)));
    assert_eq!(d.get("method.search.lambda"), Some(&Value::from(3.0)));
    assert_eq!(
        d.get("method.inverter.target_guidance"),
        Some(&Value::from(2.0))
    );
    assert_eq!(d.models["decoder"].path, "runs/decoder");

    let teach = [
        "teach",
        "--results",
        "results/d",
        "--frames",
        "3",
        "--quiz",
        "2",
    ];
    let (ok, stdout, stderr) = foil(&teach, dir);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("run settings from"), "{stderr}");
    assert!(stderr.contains("classes bouba,kiki, seed 2"), "{stderr}");
    assert!(
        stderr.contains("steps 4, lambda [3.0], guidance 2"),
        "{stderr}"
    );
    let study: foil::teach::StudyData =
        serde_json::from_slice(&std::fs::read(dir.join("results/d/study/study.json")).unwrap())
            .unwrap();
    // The gallery's DIFFusion results are swept through the decoder the manifest names
    // (without it every transition would be a cross-fade); how many depends on which inputs
    // flipped and at which T_skip.
    let sources: Vec<_> = study.items.iter().map(|i| i.source).collect();
    assert!(
        sources.contains(&foil::teach::FrameSource::LambdaSweep),
        "the run's decoder sweeps: {sources:?}; {stdout}"
    );

    // Without a manifest the class pair must be typed, as before.
    std::fs::remove_file(dir.join("results/d").join(MANIFEST_FILE)).unwrap();
    let (ok, _, stderr) = foil(&teach, dir);
    assert!(!ok && stderr.contains("--classes"), "{stderr}");
    let mut typed = teach.to_vec();
    typed.extend_from_slice(&DATA);
    typed.extend_from_slice(&["--out", "results/d/study2"]);
    let (ok, _, stderr) = foil(&typed, dir);
    assert!(ok, "{stderr}");
}
