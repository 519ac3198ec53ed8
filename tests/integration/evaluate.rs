//! `foil evaluate`'s facade side: the encoder choices and their errors, loading scorers from
//! files, and the command on a hand-made results folder (written with `foil_run::testing`). The
//! scoring itself is tested in foil-metrics (`tests/metrics/run.rs`).

use crate::common;

use burn::backend::Flex;
use foil::core::Error;
use foil::pipeline::{EncoderChoice, RunEvaluation, ScorerPaths, load_scorers};
use foil_run::testing::{FixtureItem, picture, temp_dir};

type I = Flex;

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
    let tmp = temp_dir("evaluate-cli");
    let dir = tmp.path();
    // One input per direction, the first not flipped.
    for d in 0..2 {
        let level = (d * 7) as u8;
        FixtureItem {
            flipped: d != 0,
            ..FixtureItem::new(
                format!("img{d}00"),
                d,
                picture(level, 40),
                picture(level, 200),
            )
        }
        .write(&dir.join("results"))
        .unwrap();
    }
    let foil = |args: &[&str]| common::foil(args, dir);
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
