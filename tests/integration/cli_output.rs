//! What the `foil` binary writes where: results and summaries on stdout (unchanged by `-q` and
//! `-v`), progress and log lines on stderr. Here stderr is a pipe, so progress comes as plain
//! lines (`<task> [done/total] <unit>, ...`).

use crate::common;

use std::path::Path;
use std::process::Command;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::temp_dir;
use foil::core::Classifier;

/// Runs `foil args` in `cwd` with `env` set (and neither RUST_LOG nor the progress interval
/// inherited): (success, stdout, stderr).
fn foil_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_foil"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("FOIL_PROGRESS_INTERVAL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `foil [flags] train oracle [extra]` on a tiny procedural set, 6 steps, into `cwd/oracle`.
fn train_oracle(
    flags: &[&str],
    extra: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut args = flags.to_vec();
    args.extend_from_slice(&[
        "train",
        "oracle",
        "--data",
        "kiki-bouba:20:16",
        "--classes",
        "bouba,kiki",
        "--image-size",
        "16",
        "--batch-size",
        "8",
        "--steps",
        "6",
        "--width",
        "0.125",
        "--out",
        "oracle",
    ]);
    args.extend_from_slice(extra);
    foil_env(&args, cwd, env)
}

/// The lines of `text` that start with `prefix`.
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn training_shows_progress_and_info_and_quiet_and_verbose_change_only_stderr() {
    let root_tmp = temp_dir("cli-output", "train");
    let root = root_tmp.path();
    let run = |name: &str, flags: &[&str], env: &[(&str, &str)]| {
        let cwd = root.join(name);
        std::fs::create_dir_all(&cwd).unwrap();
        let (ok, stdout, stderr) = train_oracle(flags, &[], &cwd, env);
        assert!(ok, "{name}: {stderr}");
        (stdout, stderr)
    };

    // Default: information and progress, the first and the last line of the task (the run is
    // far shorter than the interval between lines), no debug lines.
    let (stdout, stderr) = run("default", &[], &[]);
    assert!(stdout.contains("test accuracy"), "{stdout}");
    assert!(
        stderr.contains("oracle: 32 training and 8 test images"),
        "{stderr}"
    );
    let progress = lines_with(&stderr, "train classifier [");
    assert_eq!(progress.len(), 2, "{stderr}");
    assert!(
        progress[0].starts_with("train classifier [0/6] steps"),
        "{stderr}"
    );
    assert!(
        progress[1].starts_with("train classifier [6/6] steps, loss "),
        "{stderr}"
    );
    assert!(!stderr.contains("debug "), "{stderr}");

    // Every step with an interval of 0.
    let (_, every) = run("every", &[], &[("FOIL_PROGRESS_INTERVAL", "0")]);
    let progress = lines_with(&every, "train classifier [");
    assert_eq!(progress.len(), 7, "{every}");
    for (k, line) in progress.iter().enumerate() {
        assert!(
            line.starts_with(&format!("train classifier [{k}/6] steps")),
            "{every}"
        );
    }

    // -q: nothing at all on stderr; the same results on stdout.
    let (quiet_out, quiet_err) = run("quiet", &["-q"], &[]);
    assert_eq!(quiet_err, "", "-q must silence progress and information");
    assert_eq!(quiet_out, stdout);

    // -v: debug lines besides the rest; the same stdout.
    let (verbose_out, verbose_err) = run("verbose", &["-v"], &[]);
    assert!(verbose_err.contains("debug foil"), "{verbose_err}");
    assert!(verbose_err.contains("oracle: 32 training"), "{verbose_err}");
    assert_eq!(verbose_out, stdout);

    // RUST_LOG replaces the flags' levels.
    let (_, logged) = run("rust-log", &[], &[("RUST_LOG", "foil=debug")]);
    assert!(logged.contains("debug foil"), "{logged}");
    let (_, off) = run("rust-log-off", &[], &[("RUST_LOG", "off")]);
    assert!(!off.contains("oracle: 32 training"), "{off}");
    assert!(
        off.contains("train classifier [6/6]"),
        "progress is not a log: {off}"
    );

    // --threads: the CPU pool's size (-v says it); 0 is refused before anything runs.
    let (_, threads_err) = run("threads", &["-v", "--threads", "3"], &[]);
    assert!(threads_err.contains("3 CPU threads"), "{threads_err}");
    let (ok, _, stderr) = train_oracle(&["--threads", "0"], &[], &root.join("default"), &[]);
    assert!(!ok && stderr.contains("--threads"), "{stderr}");

    // -q and -v together make no sense.
    let (ok, _, stderr) = train_oracle(&["-q", "-v"], &[], &root.join("default"), &[]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
}

/// The seed decides a training run: its initial weights as well as its batches, so two runs
/// with one seed log the same losses and write the same weights, and another seed does not.
#[test]
fn training_is_a_function_of_its_seed() {
    let tmp = temp_dir("cli-output", "seed");
    let root = tmp.path();
    let device = Default::default();
    let probe = Tensor::<Flex, 4>::from_data(
        TensorData::new(
            (0..2 * 3 * 16 * 16)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect(),
            [2, 3, 16, 16],
        ),
        &device,
    );
    let run = |name: &str, seed: &str| {
        let cwd = root.join(name);
        std::fs::create_dir_all(&cwd).unwrap();
        let (ok, stdout, stderr) = train_oracle(&["-q"], &["--seed", seed], &cwd, &[]);
        assert!(ok, "{name}: {stderr}");
        let oracle = cwd.join("oracle");
        let log =
            std::fs::read_to_string(oracle.join("train-resnet18-w125/metrics.jsonl")).unwrap();
        // The weights, through the logits they give a fixed batch (the record files differ
        // anyway: burn writes a fresh random id for every parameter).
        let (_, net) = foil::pipeline::load_oracle::<Flex>(&oracle, &device).unwrap();
        let logits = net.logits(probe.clone()).unwrap().into_data();
        (stdout, log, logits.to_vec::<f32>().unwrap())
    };
    let (first_out, first_log, first) = run("first", "3");
    let (again_out, again_log, again) = run("again", "3");
    let (_, other_log, other) = run("other", "4");
    assert_eq!(again_log, first_log);
    assert_eq!(again_out, first_out);
    assert_eq!(again, first);
    assert_ne!(other_log, first_log);
    assert_ne!(other, first);
}

#[test]
fn explaining_shows_inputs_done_and_flips_and_warnings_survive_quiet() {
    let tmp = temp_dir("cli-output", "explain");
    let dir = tmp.path();
    let data = ["--data", "kiki-bouba:20:16", "--classes", "bouba,kiki"];
    let (ok, _, stderr) = train_oracle(&[], &[], dir, &[]);
    assert!(ok, "{stderr}");
    let mut ddpm = vec!["train", "ddpm"];
    ddpm.extend_from_slice(&data);
    ddpm.extend_from_slice(&["--image-size", "16", "--batch-size", "8", "--steps", "2"]);
    let (ok, _, stderr) = foil_env(&ddpm, dir, &[]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("train ddpm [2/2] steps"), "{stderr}");

    let explain = |flags: &[&str], extra: &[&str], env: &[(&str, &str)]| {
        let mut args = flags.to_vec();
        args.push("maskdime");
        args.extend_from_slice(&data);
        args.extend_from_slice(&[
            "--oracle",
            "oracle",
            "--respaced-steps",
            "4",
            "--scales",
            "8",
            "--batch-size",
            "1",
        ]);
        args.extend_from_slice(extra);
        foil_env(&args, dir, env)
    };
    let every = [("FOIL_PROGRESS_INTERVAL", "0")];
    let (ok, stdout, stderr) = explain(&[], &["--per-direction", "2", "--tau", "2"], &every);
    assert!(ok, "{stderr}");
    // The summary line scripts read is unchanged.
    let summary = lines_with(&stdout, "maskdime: 4 explained (");
    assert_eq!(summary.len(), 1, "{stdout}");
    let flips: usize = summary[0]
        .split(" explained (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    // One line per input, with the count, the flips so far and the input's outcome.
    let progress = lines_with(&stderr, "explain [");
    assert_eq!(progress.len(), 4, "{stderr}");
    let mut last_flips = 0;
    for (k, line) in progress.iter().enumerate() {
        assert!(
            line.starts_with(&format!("explain [{}/4] inputs, ", k + 1)),
            "{line}"
        );
        let so_far: usize = line
            .split("inputs, ")
            .nth(1)
            .and_then(|s| s.split(" flipped").next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(so_far >= last_flips && so_far <= k + 1, "{stderr}");
        last_flips = so_far;
        assert!(
            line.ends_with(": flipped)") || line.ends_with(": not flipped)"),
            "{line}"
        );
    }
    assert_eq!(last_flips, flips, "{stderr}");

    // A rerun with other settings: the warning shows even with -q, progress and
    // information do not.
    let (ok, stdout, stderr) = explain(
        &["-q"],
        &["--per-direction", "3", "--tau", "3", "--resume-any"],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("maskdime: 2 explained"), "{stdout}");
    assert!(
        stderr.starts_with("warning: --resume-any: mixing"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // --sync-timings: the network calls wait for the device (said once, at the first call),
    // the time split is still printed, and it is no setting of the results (the mixing
    // warning's list of differences does not name it).
    let (ok, stdout, stderr) = explain(
        &["-v"],
        &[
            "--per-direction",
            "4",
            "--tau",
            "3",
            "--resume-any",
            "--sync-timings",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("maskdime: 2 explained"), "{stdout}");
    assert_eq!(lines_with(&stdout, "  time: ").len(), 1, "{stdout}");
    let waits = "--sync-timings: network calls wait for the device";
    assert_eq!(stderr.matches(waits).count(), 1, "{stderr}");
    let mixing: Vec<_> = stderr.lines().filter(|l| l.contains("mixing")).collect();
    assert_eq!(mixing.len(), 1, "{stderr}");
    assert!(!mixing[0].contains("sync"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
