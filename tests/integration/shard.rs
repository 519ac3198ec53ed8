//! `--shard I/N` and the job schedulers' environment variables through the `foil` binary:
//! shards of one run write into one results folder exactly the files (byte for byte) that one
//! process writes, `foil evaluate` scores their union, and bad shard settings are errors.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use foil::run::shard::{
    FOIL_SHARD_COUNT, JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_ID,
    SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_STEP,
};

/// Runs `foil` in `cwd` with the shard variables of the test's own environment removed and
/// `env` set: (success, stdout, stderr).
fn foil(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_foil"));
    cmd.args(args).current_dir(cwd);
    for name in [
        SLURM_ARRAY_TASK_ID,
        SLURM_ARRAY_TASK_COUNT,
        SLURM_ARRAY_TASK_MIN,
        SLURM_ARRAY_TASK_STEP,
        JOB_COMPLETION_INDEX,
        FOIL_SHARD_COUNT,
    ] {
        cmd.env_remove(name);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The files of a run's direction folders (`<from>_to_<to>/`), path relative to the run ->
/// bytes. The run manifest beside them records the command line and is left out.
fn results(run: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for dir in std::fs::read_dir(run).unwrap() {
        let dir = dir.unwrap().path();
        if !(dir.is_dir() && dir.file_name().unwrap().to_string_lossy().contains("_to_")) {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            found.insert(
                file.strip_prefix(run).unwrap().to_path_buf(),
                std::fs::read(&file).unwrap(),
            );
        }
    }
    found
}

fn assert_same(whole: &BTreeMap<PathBuf, Vec<u8>>, split: &BTreeMap<PathBuf, Vec<u8>>) {
    assert_eq!(
        whole.keys().collect::<Vec<_>>(),
        split.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in whole {
        assert!(split[path] == *bytes, "{} differs", path.display());
    }
}

#[test]
fn shards_write_into_one_folder_what_one_process_writes() {
    let tmp = common::temp_dir("shard", "cli");
    let dir = tmp.path();
    let data = ["--data", "kiki-bouba:16:16", "--classes", "bouba,kiki"];
    for (what, steps) in [("oracle", "5"), ("ddpm", "2")] {
        let mut args = vec!["train", what];
        args.extend_from_slice(&data);
        args.extend_from_slice(&["--image-size", "16", "--batch-size", "8", "--steps", steps]);
        if what == "oracle" {
            args.extend_from_slice(&["--width", "0.125", "--seed", "1"]);
        }
        let (ok, _, stderr) = foil(&args, dir, &[]);
        assert!(ok, "{stderr}");
    }
    // 3 inputs per direction in batches of 2: batches [0 1] [2] | [0 1] [2], dealt in turn.
    let explain = |out: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["maskdime"];
        args.extend_from_slice(&data);
        args.extend_from_slice(&[
            "--per-direction",
            "3",
            "--batch-size",
            "2",
            "--respaced-steps",
            "10",
            "--tau",
            "3",
            "--scales",
            "8",
            "--out",
            out,
        ]);
        args.extend_from_slice(extra);
        foil(&args, dir, env)
    };
    let (ok, stdout, stderr) = explain("results/whole", &[], &[]);
    assert!(ok && stdout.contains("6 explained"), "{stdout}{stderr}");
    let whole = results(&dir.join("results/whole"));
    assert_eq!(
        whole.len(),
        6 * 6,
        "orig, cf, grid, m1, m2 and json per input"
    );

    // Two shards: one by the flag, one as task 1 of a Slurm array.
    let (ok, stdout, stderr) = explain("results/split", &["--shard", "0/2"], &[]);
    assert!(ok && stdout.contains("4 explained"), "{stdout}{stderr}");
    let slurm = [(SLURM_ARRAY_TASK_ID, "1"), (SLURM_ARRAY_TASK_COUNT, "2")];
    let (ok, stdout, stderr) = explain("results/split", &[], &slurm);
    assert!(ok && stdout.contains("2 explained"), "{stdout}{stderr}");
    assert_same(&whole, &results(&dir.join("results/split")));
    // A shard run again finds its part done.
    let (ok, stdout, _) = explain("results/split", &["--shard", "0/2"], &[]);
    assert!(
        ok && stdout.contains("0 explained") && stdout.contains("4 already done"),
        "{stdout}"
    );

    // Three pods of a Kubernetes Indexed Job, in any order: batches 0 and 3, 1, 2.
    for (index, inputs) in [("2", 2), ("0", 3), ("1", 1)] {
        let k8s = [(JOB_COMPLETION_INDEX, index), (FOIL_SHARD_COUNT, "3")];
        let (ok, stdout, stderr) = explain("results/pods", &[], &k8s);
        let explained = format!("{inputs} explained");
        assert!(ok && stdout.contains(&explained), "{stdout}{stderr}");
    }
    assert_same(&whole, &results(&dir.join("results/pods")));

    // `foil evaluate` scores the union of the shards.
    let (ok, stdout, stderr) = foil(
        &["evaluate", "--lpips", "none", "--results", "results/split"],
        dir,
        &[],
    );
    assert!(ok, "{stdout}{stderr}");
    let json = std::fs::read_to_string(dir.join("results/split/metrics.json")).unwrap();
    let report = foil::pipeline::RunEvaluation::from_json(&json).unwrap();
    assert_eq!(report.overall.inputs, 6);

    // Bad shard settings: errors naming the flag or variable and its value, before any work.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let bad: [Case<'_>; 4] = [
        (&["--shard", "2/2"], &[], &["--shard", "\"2/2\""]),
        (&[], &[(JOB_COMPLETION_INDEX, "1")], &[FOIL_SHARD_COUNT]),
        (
            &[],
            &[(SLURM_ARRAY_TASK_ID, "abc"), (SLURM_ARRAY_TASK_COUNT, "2")],
            &[SLURM_ARRAY_TASK_ID, "\"abc\""],
        ),
        (
            &[],
            &[(SLURM_ARRAY_TASK_ID, "3"), (SLURM_ARRAY_TASK_COUNT, "2")],
            &[SLURM_ARRAY_TASK_ID, "=3"],
        ),
    ];
    for (flags, env, wanted) in bad {
        let (ok, _, stderr) = explain("results/bad", flags, env);
        assert!(
            !ok && !stderr.contains("panicked"),
            "{flags:?} {env:?}: {stderr}"
        );
        assert!(
            wanted.iter().all(|w| stderr.contains(w)),
            "{flags:?} {env:?}: {stderr}"
        );
    }
    assert!(!dir.join("results/bad").exists());
    let _ = std::fs::remove_dir_all(dir);
}
