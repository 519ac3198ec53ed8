//! Helpers the facade's integration tests share.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// A fresh, empty folder `foil-{suite}-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
pub fn temp_dir(suite: &str, tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-{suite}-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Runs the `foil` binary with `args` in `cwd`: (success, stdout, stderr).
pub fn foil(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_foil"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
