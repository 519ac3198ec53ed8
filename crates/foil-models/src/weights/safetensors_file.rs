//! A safetensors file read lazily: [`parse_header`] reads and checks only the header (the 8-byte
//! length and the JSON table), and [`read_values`] reads one tensor's bytes with positioned
//! reads, a chunk at a time, straight into its `f32` values.
//!
//! The format: a little-endian `u64` header length `n`, `n` bytes of JSON mapping each tensor
//! name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to byte `8 + n`)
//! plus an optional `"__metadata__"` object, then the tensor bytes.

use std::fmt;
use std::fs::File;

use foil_core::{Error, Result};
use serde::de::{Deserializer, MapAccess, Visitor};

/// The largest header accepted, as the safetensors crate does: anything larger is corrupt.
pub(super) const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes read (and converted) at a time; a multiple of every element size.
const CHUNK_BYTES: u64 = 1 << 20;

/// The element types a weight file may hold; all are converted to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
}

impl Dtype {
    /// Bytes per element.
    pub(super) fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    /// The dtype of a safetensors header entry (`"F32"`, …), `None` for one foil does not read.
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            _ => return None,
        })
    }

    /// The safetensors crate's dtype, `None` for one foil does not read.
    pub(super) fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        use safetensors::Dtype as D;
        Some(match dtype {
            D::F32 => Dtype::F32,
            D::F16 => Dtype::F16,
            D::BF16 => Dtype::BF16,
            D::F64 => Dtype::F64,
            D::I64 => Dtype::I64,
            D::I32 => Dtype::I32,
            _ => return None,
        })
    }

    /// Appends the values of little-endian `bytes` (whole elements) to `out` as `f32`.
    pub(super) fn extend_f32(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            Dtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Dtype::F64 => out.extend(bytes.chunks_exact(8).map(|b| {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            })),
            Dtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            Dtype::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
            ),
            // Integer buffers (`num_batches_tracked` of a torch state dict saved as is).
            Dtype::I64 => out.extend(bytes.chunks_exact(8).map(|b| {
                i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            })),
            Dtype::I32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
            ),
        }
    }
}

/// IEEE half precision bits to `f32`, exactly (every half is an `f32`).
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// One tensor of a safetensors header, checked against the file.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Number of elements (the product of `shape`).
    pub numel: usize,
    /// Absolute byte offset of the tensor in the file.
    pub start: u64,
    /// Byte length (`numel * dtype.size()`).
    pub len: u64,
}

/// Reads and checks the header of the safetensors file `file` of `file_len` bytes; `what` names
/// it in errors. Nothing is allocated from a length field before it is checked against the file
/// size and [`MAX_HEADER_BYTES`].
pub(super) fn parse_header(file: &File, file_len: u64, what: &str) -> Result<Vec<Entry>> {
    let bad = |detail: String| Error::format(what.to_owned(), detail);
    if file_len < 8 {
        return Err(bad(format!(
            "not a safetensors file: {file_len} bytes, shorter than the 8-byte header length"
        )));
    }
    let mut len_bytes = [0u8; 8];
    read_at(file, &mut len_bytes, 0).map_err(|e| bad(format!("reading the header length: {e}")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "not a safetensors file (or corrupt): header length {header_len} bytes exceeds the \
             {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if header_len > file_len - 8 {
        return Err(bad(format!(
            "truncated or not a safetensors file: header length {header_len} bytes runs past \
             the end of the {file_len}-byte file"
        )));
    }
    // Checked above: at most MAX_HEADER_BYTES and within the file.
    let mut header = vec![0u8; header_len as usize];
    read_at(file, &mut header, 8).map_err(|e| bad(format!("reading the header: {e}")))?;
    if header.first() != Some(&b'{') {
        return Err(bad(
            "not a safetensors file: the header is not a JSON object".to_string(),
        ));
    }
    let table: Table = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("corrupt safetensors header: {e}")))?;
    drop(header);

    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut seen = std::collections::BTreeSet::new();
    let mut entries = Vec::with_capacity(table.0.len());
    for (name, value) in table.0 {
        if name == "__metadata__" {
            continue;
        }
        if !seen.insert(name.clone()) {
            return Err(bad(format!("tensor {name} appears twice in the header")));
        }
        let raw: RawEntry = serde_json::from_value(value)
            .map_err(|e| bad(format!("corrupt safetensors header: tensor {name}: {e}")))?;
        let dtype = Dtype::parse(&raw.dtype)
            .ok_or_else(|| bad(format!("{name}: unsupported dtype {}", raw.dtype)))?;
        let shape = raw
            .shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>();
        let numel = shape
            .as_ref()
            .and_then(|s| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d)));
        let bytes = numel.and_then(|n| n.checked_mul(dtype.size()));
        let (Some(shape), Some(numel), Some(bytes)) = (shape, numel, bytes) else {
            return Err(bad(format!(
                "{name}: shape {:?} is too large for this machine",
                raw.shape
            )));
        };
        let [begin, end] = raw.data_offsets;
        if begin > end {
            return Err(bad(format!(
                "{name}: data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        if end > data_len {
            return Err(bad(format!(
                "{name}: data_offsets [{begin}, {end}] run past the end of the data \
                 ({data_len} bytes): the file is truncated"
            )));
        }
        if end - begin != bytes as u64 {
            return Err(bad(format!(
                "{name}: data_offsets [{begin}, {end}] hold {} bytes, but {:?} of shape {:?} \
                 needs {bytes}",
                end - begin,
                dtype,
                shape
            )));
        }
        entries.push(Entry {
            name,
            dtype,
            shape,
            numel,
            start: data_start + begin,
            len: end - begin,
        });
    }
    Ok(entries)
}

/// Reads the tensor `entry` of `file` as `f32`, a chunk at a time: besides the values, at most
/// [`CHUNK_BYTES`] are held.
pub(super) fn read_values(file: &File, entry: &Entry) -> std::io::Result<Vec<f32>> {
    let mut values = Vec::with_capacity(entry.numel);
    let mut chunk = vec![0u8; entry.len.min(CHUNK_BYTES) as usize];
    let mut done = 0u64;
    while done < entry.len {
        let n = (entry.len - done).min(CHUNK_BYTES) as usize;
        let buf = &mut chunk[..n];
        read_at(file, buf, entry.start + done)?;
        entry.dtype.extend_f32(buf, &mut values);
        done += n as u64;
    }
    Ok(values)
}

/// Fills `buf` from `file` at `offset`, without moving a shared cursor where the platform allows.
#[cfg(unix)]
pub(super) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// Fills `buf` from `file` at `offset`.
#[cfg(not(unix))]
pub(super) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// A header entry before it is checked.
#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header's top-level object in file order, duplicates kept (a map would drop them).
struct Table(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Table {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct TableVisitor;
        impl<'de> Visitor<'de> for TableVisitor {
            type Value = Table;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Table, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(Table(entries))
            }
        }
        deserializer.deserialize_map(TableVisitor)
    }
}
