//! A PyTorch checkpoint read lazily through burn-store's `PytorchReader`.
//!
//! The reader parses the pickle once and hands out `TensorSnapshot`s that read their storage from
//! the zip (or legacy file) only when asked (`to_data`), so a tensor is converted when it is taken.
//! The snapshots hold `Rc`s and may not cross threads, so they live on a worker thread of their
//! own; a [`PytorchFile`] sends it names and receives `f32` values, which keeps
//! [`TensorFile`](super::TensorFile) `Send` and `Sync`. The worker ends when every tensor has been
//! taken or the file is dropped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;

use burn::tensor::DType;
use burn_store::TensorSnapshot;
use foil_core::{Error, Result};

use super::pytorch_check;

/// Values of one tensor, or why they could not be read.
type Reply = std::result::Result<Vec<f32>, String>;

/// A request to the worker: a tensor's name and where to send its values.
type Request = (String, mpsc::Sender<Reply>);

/// Every tensor's name and shape.
type Listing = Vec<(String, Vec<usize>)>;

/// The worker thread of one open checkpoint.
#[derive(Debug)]
pub(super) struct PytorchFile {
    requests: mpsc::Sender<Request>,
}

/// Opens `path` (`top_level_key` picks a nested state dict) on a new worker thread; returns it
/// with every tensor's name and shape, or the reader's error.
pub(super) fn open(
    path: &Path,
    top_level_key: Option<&str>,
    what: &str,
) -> Result<(PytorchFile, Listing)> {
    // burn-store allocates what the file's length fields announce: check them first.
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    pytorch_check::check(&file, len).map_err(|why| {
        Error::format(
            what.to_owned(),
            format!("not a readable PyTorch checkpoint: {why}"),
        )
    })?;
    drop(file);
    let (meta_tx, meta_rx) = mpsc::channel::<std::result::Result<Listing, String>>();
    let (requests, request_rx) = mpsc::channel::<Request>();
    let owned_path = path.to_path_buf();
    let key = top_level_key.map(str::to_owned);
    std::thread::Builder::new()
        .name("foil-pytorch-reader".into())
        .spawn(move || serve(&owned_path, len, key.as_deref(), &meta_tx, &request_rx))
        .map_err(|e| Error::io(path, e))?;
    let tensors = match meta_rx.recv() {
        Ok(Ok(tensors)) => tensors,
        Ok(Err(detail)) => return Err(Error::format(what.to_owned(), detail)),
        Err(_) => {
            return Err(Error::format(
                what.to_owned(),
                "not a readable PyTorch checkpoint: the reader failed (panicked)",
            ));
        }
    };
    Ok((PytorchFile { requests }, tensors))
}

impl PytorchFile {
    /// Reads tensor `name` (at most once per name) as `f32`.
    pub(super) fn read(&self, name: &str) -> std::result::Result<Vec<f32>, String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.requests
            .send((name.to_owned(), reply_tx))
            .map_err(|_| "the PyTorch reader has stopped".to_string())?;
        reply_rx
            .recv()
            .map_err(|_| "the PyTorch reader failed (panicked)".to_string())?
    }
}

/// The worker: opens the checkpoint, reports its tensors, then answers requests until every
/// tensor is read or the [`PytorchFile`] is dropped.
fn serve(
    path: &Path,
    file_len: u64,
    top_level_key: Option<&str>,
    meta: &mpsc::Sender<std::result::Result<Listing, String>>,
    requests: &mpsc::Receiver<Request>,
) {
    use burn_store::pytorch::PytorchReader;
    let reader = match top_level_key {
        Some(key) => PytorchReader::with_top_level_key(path, key),
        None => PytorchReader::new(path),
    };
    let mut snapshots: HashMap<String, TensorSnapshot> = match reader {
        Ok(reader) => reader.into_tensors(),
        Err(e) => {
            let _ = meta.send(Err(format!("not a readable PyTorch checkpoint: {e}")));
            return;
        }
    };
    let mut tensors = Vec::with_capacity(snapshots.len());
    for (name, snapshot) in &snapshots {
        if matches!(snapshot.dtype, DType::QFloat(_)) {
            let _ = meta.send(Err(format!(
                "{name}: unsupported dtype {:?}",
                snapshot.dtype
            )));
            return;
        }
        tensors.push((name.clone(), snapshot.shape.to_vec()));
    }
    if meta.send(Ok(tensors)).is_err() {
        return;
    }
    while !snapshots.is_empty() {
        let Ok((name, reply)) = requests.recv() else {
            return;
        };
        let values = match snapshots.remove(&name) {
            None => Err("not in the checkpoint, or read already".to_string()),
            Some(snapshot) => {
                to_f32(&snapshot, file_len).map_err(|e| format!("reading {name}: {e}"))
            }
        };
        let _ = reply.send(values);
    }
}

/// The values of `snapshot` as `f32` (read from the file now). A shape whose bytes exceed the
/// file's `file_len` is refused before burn-store allocates for it.
fn to_f32(snapshot: &TensorSnapshot, file_len: u64) -> std::result::Result<Vec<f32>, String> {
    let numel = snapshot
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d));
    let bytes = numel.and_then(|n| n.checked_mul(snapshot.dtype.size()));
    match (numel, bytes) {
        (Some(0), _) => return Ok(Vec::new()),
        (Some(_), Some(b)) if b as u64 <= file_len => {}
        _ => {
            return Err(format!(
                "shape {:?} of {:?} needs more bytes than the {file_len}-byte file holds \
                 (corrupt)",
                snapshot.shape.to_vec(),
                snapshot.dtype
            ));
        }
    }
    let data = snapshot.to_data().map_err(|e| format!("{e:?}"))?;
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}
