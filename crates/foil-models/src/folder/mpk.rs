//! A check of a burn named-MessagePack record (`.mpk`) before burn deserialises it.
//!
//! burn's recorder trusts its input: a record whose tensor holds fewer bytes than its shape
//! needs, or whose shape has another rank than the network's parameter, panics while the
//! network is built, and a truncated file reads as "the internal data format has changed since
//! version 0.14.0". [`scan`] walks the MessagePack structure once (nothing is allocated from a
//! length field: byte strings are skipped, only short keys and shapes are kept), and
//! [`check_against`] compares the tensors found with the network's parameters by path.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use foil_core::tensor::fmt_dims;

/// The deepest nesting accepted (foil's networks nest a few levels; burn's own limit is 1024).
const MAX_DEPTH: usize = 128;

/// Keys and dtype names longer than this are skipped, not kept.
const MAX_KEY: u64 = 1024;

/// The most dimensions a shape may have.
const MAX_RANK: u64 = 16;

/// What a tensor of a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// Float or integer values.
    Numeric,
    /// Booleans.
    Bool,
}

/// One tensor found in a record.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub shape: Vec<usize>,
    pub kind: Kind,
}

/// The tensors of a record by path (module fields joined by `.`, as burn's module visitor names
/// them).
pub(super) type Tensors = BTreeMap<String, Found>;

/// Why a record is refused (the caller adds the file's name).
pub(super) type Why = String;

/// Walks the record at `path` and returns its tensors; a truncated or corrupt file is an error
/// saying where it broke.
pub(super) fn scan(path: &Path) -> std::io::Result<std::result::Result<Tensors, Why>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut walker = Walker {
        rd: BufReader::new(file),
        pos: 0,
        len,
        path: Vec::new(),
        tensors: BTreeMap::new(),
    };
    Ok(walker.record().map(|()| walker.tensors))
}

/// Compares the record's tensors with `model`'s parameters: the same paths, shapes and kinds.
pub(super) fn check_against<B: Backend, M: Module<B>>(
    tensors: &Tensors,
    model: &M,
) -> std::result::Result<(), Why> {
    let mut visitor = Expected {
        path: Vec::new(),
        params: BTreeMap::new(),
    };
    model.visit(&mut visitor);
    let mut problems = Vec::new();
    for (path, (shape, bool_param)) in &visitor.params {
        match tensors.get(path) {
            None => problems.push(format!("no tensor {path}")),
            Some(found) if found.shape != *shape => problems.push(format!(
                "{path} has shape {}, the network's is {}",
                fmt_dims(&found.shape),
                fmt_dims(shape)
            )),
            Some(found) if (found.kind == Kind::Bool) != *bool_param => problems.push(format!(
                "{path} holds {}, the network's parameter is {}",
                if found.kind == Kind::Bool {
                    "booleans"
                } else {
                    "numbers"
                },
                if *bool_param { "boolean" } else { "numeric" }
            )),
            Some(_) => {}
        }
    }
    for path in tensors.keys() {
        if !visitor.params.contains_key(path) {
            problems.push(format!("unexpected tensor {path}"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let total = problems.len();
    problems.truncate(8);
    let more = if total > 8 {
        format!(" (and {} more)", total - 8)
    } else {
        String::new()
    };
    Err(format!(
        "not a record of this network (another model, or other settings): {}{more}",
        problems.join("; ")
    ))
}

/// The parameters of a network by path, with their shapes and whether they are boolean.
struct Expected {
    path: Vec<String>,
    params: BTreeMap<String, (Vec<usize>, bool)>,
}

impl Expected {
    fn add(&mut self, shape: Vec<usize>, boolean: bool) {
        self.params.insert(self.path.join("."), (shape, boolean));
    }
}

impl<B: Backend> ModuleVisitor<B> for Expected {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.add(param.lazy_shape().to_vec(), false);
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.add(param.lazy_shape().to_vec(), false);
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.add(param.lazy_shape().to_vec(), true);
    }
}

/// A small MessagePack value: what the walker keeps of one.
enum Small {
    Int(u64),
    Str(String),
    /// Integers of an array (a shape), `None` when the array held anything else or was long.
    Ints(Option<Vec<u64>>),
    /// A map of one string key to a string (an enum variant with its data: `{"Bool": "U8"}`).
    Variant(String, Option<String>),
    /// Byte string of this length.
    Bin(u64),
    Other,
}

struct Walker<R> {
    rd: R,
    pos: u64,
    len: u64,
    path: Vec<String>,
    tensors: Tensors,
}

impl<R: Read> Walker<R> {
    /// The whole record: one map with `item` (and `metadata`), and nothing after it.
    fn record(&mut self) -> std::result::Result<(), Why> {
        let marker = self.byte()?;
        let Some(n) = map_len(marker, self)? else {
            return Err(format!(
                "not a burn record: it starts with MessagePack marker {marker:#04x}, not a map"
            ));
        };
        let mut item = false;
        for _ in 0..n {
            let key = self.value(0, false)?;
            if matches!(&key, Small::Str(k) if k == "item") {
                item = true;
                self.value(1, true)?;
            } else {
                self.value(1, false)?;
            }
        }
        if !item {
            return Err("not a burn record: it has no `item`".into());
        }
        if self.pos != self.len {
            return Err(format!(
                "corrupt: {} bytes follow the record's end at byte {}",
                self.len - self.pos,
                self.pos
            ));
        }
        Ok(())
    }

    fn eof(&self) -> Why {
        format!(
            "truncated: the data ends at byte {} of what it announces",
            self.pos
        )
    }

    fn byte(&mut self) -> std::result::Result<u8, Why> {
        let mut b = [0u8; 1];
        self.rd.read_exact(&mut b).map_err(|_| self.eof())?;
        self.pos += 1;
        Ok(b[0])
    }

    fn uint(&mut self, bytes: usize) -> std::result::Result<u64, Why> {
        let mut v = 0u64;
        for _ in 0..bytes {
            v = (v << 8) | u64::from(self.byte()?);
        }
        Ok(v)
    }

    /// Skips `n` bytes, refusing a length that runs past the end of the file.
    fn skip(&mut self, n: u64) -> std::result::Result<(), Why> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(format!(
                "truncated or corrupt: {n} bytes announced at byte {}, {} left in the file",
                self.pos,
                self.len.saturating_sub(self.pos)
            ));
        }
        let copied = std::io::copy(&mut (&mut self.rd).take(n), &mut std::io::sink())
            .map_err(|e| format!("reading byte {}: {e}", self.pos))?;
        self.pos += copied;
        if copied != n {
            return Err(self.eof());
        }
        Ok(())
    }

    /// A string of `n` bytes: kept when short, skipped otherwise.
    fn string(&mut self, n: u64) -> std::result::Result<Small, Why> {
        if n > MAX_KEY {
            self.skip(n)?;
            return Ok(Small::Other);
        }
        if n > self.len.saturating_sub(self.pos) {
            return Err(self.eof());
        }
        // At most MAX_KEY bytes, checked above.
        let mut buf = vec![0u8; n as usize];
        self.rd.read_exact(&mut buf).map_err(|_| self.eof())?;
        self.pos += n;
        Ok(Small::Str(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Reads one value at nesting `depth`; inside `item` (`tensors`), records the tensors of the
    /// maps it reads under the current path.
    fn value(&mut self, depth: usize, tensors: bool) -> std::result::Result<Small, Why> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "corrupt: values nested more than {MAX_DEPTH} deep at byte {}",
                self.pos
            ));
        }
        let at = self.pos;
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Small::Int(u64::from(marker)),
            0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Small::Other,
            0xa0..=0xbf => self.string(u64::from(marker & 0x1f))?,
            0xd9 => {
                let n = self.uint(1)?;
                self.string(n)?
            }
            0xda => {
                let n = self.uint(2)?;
                self.string(n)?
            }
            0xdb => {
                let n = self.uint(4)?;
                self.string(n)?
            }
            0xc4..=0xc6 => {
                let n = self.uint(1 << (marker - 0xc4))?;
                self.skip(n)?;
                Small::Bin(n)
            }
            0xcc..=0xcf => Small::Int(self.uint(1 << (marker - 0xcc))?),
            0xd0..=0xd3 => {
                self.skip(1 << (marker - 0xd0))?;
                Small::Other
            }
            0xca => {
                self.skip(4)?;
                Small::Other
            }
            0xcb => {
                self.skip(8)?;
                Small::Other
            }
            // fixext 1, 2, 4, 8, 16: a type byte and the data.
            0xd4..=0xd8 => {
                self.skip(1 + (1 << (marker - 0xd4)))?;
                Small::Other
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (marker - 0xc7))?;
                self.skip(1 + n)?;
                Small::Other
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = match marker {
                    0xdc => self.uint(2)?,
                    0xdd => self.uint(4)?,
                    m => u64::from(m & 0x0f),
                };
                self.array(n, depth, tensors)?
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let n = map_len(marker, self)?.unwrap_or(0);
                self.map(n, depth, tensors, at)?
            }
            0xc1 => {
                return Err(format!(
                    "corrupt: MessagePack marker 0xc1 (never used) at byte {at}"
                ));
            }
        })
    }

    fn array(&mut self, n: u64, depth: usize, tensors: bool) -> std::result::Result<Small, Why> {
        // Every element takes at least one byte.
        if n > self.len.saturating_sub(self.pos) {
            return Err(format!(
                "truncated or corrupt: an array of {n} values announced at byte {}, {} bytes \
                 left in the file",
                self.pos,
                self.len.saturating_sub(self.pos)
            ));
        }
        let mut ints = (n <= MAX_RANK).then(Vec::new);
        for i in 0..n {
            if tensors {
                self.path.push(i.to_string());
            }
            let v = self.value(depth + 1, tensors);
            if tensors {
                self.path.pop();
            }
            match (v?, ints.as_mut()) {
                (Small::Int(x), Some(list)) => list.push(x),
                _ => ints = None,
            }
        }
        Ok(Small::Ints(ints))
    }

    fn map(
        &mut self,
        n: u64,
        depth: usize,
        tensors: bool,
        at: u64,
    ) -> std::result::Result<Small, Why> {
        // Every entry takes at least two bytes.
        if n > self.len.saturating_sub(self.pos) / 2 {
            return Err(format!(
                "truncated or corrupt: a map of {n} entries announced at byte {at}, {} bytes \
                 left in the file",
                self.len.saturating_sub(self.pos)
            ));
        }
        let (mut bytes, mut shape, mut dtype) = (None, None, None);
        let (mut id, mut param) = (None, false);
        let mut single = None;
        for _ in 0..n {
            let key = match self.value(depth + 1, false)? {
                Small::Str(k) => k,
                _ => String::from("?"),
            };
            // A parameter's `param` is the tensor itself: no path component of its own.
            let push = tensors && key != "param";
            if push {
                self.path.push(key.clone());
            }
            let v = self.value(depth + 1, tensors);
            if push {
                self.path.pop();
            }
            let v = v?;
            if n == 1 {
                single = Some((
                    key.clone(),
                    match &v {
                        Small::Str(s) => Some(s.clone()),
                        _ => None,
                    },
                ));
            }
            match key.as_str() {
                "bytes" => bytes = Some(v),
                "shape" => shape = Some(v),
                "dtype" => dtype = Some(v),
                "id" => id = Some(v),
                "param" => param = true,
                _ => {}
            }
        }
        if param {
            // A parameter: burn panics on an id it cannot decode.
            match id {
                Some(Small::Str(id)) if valid_param_id(&id) => {}
                Some(Small::Str(id)) => {
                    return Err(format!(
                        "corrupt: parameter {} (at byte {at}) has an invalid id {id:?}",
                        self.path.join(".")
                    ));
                }
                _ => {
                    return Err(format!(
                        "corrupt: parameter {} (at byte {at}) has no id",
                        self.path.join(".")
                    ));
                }
            }
        }
        if let (Some(bytes), Some(shape), Some(dtype)) = (bytes, shape, dtype) {
            self.tensor(bytes, shape, dtype, at)?;
            return Ok(Small::Other);
        }
        Ok(match single {
            Some((k, v)) => Small::Variant(k, v),
            None => Small::Other,
        })
    }

    /// Checks one `TensorData` (`bytes`, `shape`, `dtype`) read at byte `at` and records it.
    fn tensor(
        &mut self,
        bytes: Small,
        shape: Small,
        dtype: Small,
        at: u64,
    ) -> std::result::Result<(), Why> {
        let name = self.path.join(".");
        let bad = |detail: String| format!("corrupt: tensor {name} (at byte {at}): {detail}");
        let Small::Bin(nbytes) = bytes else {
            return Err(bad("its bytes are not a byte string".into()));
        };
        let Small::Ints(Some(dims)) = shape else {
            return Err(bad("its shape is not a short list of integers".into()));
        };
        let (size, boolean) = match &dtype {
            Small::Str(d) => match d.as_str() {
                "F64" | "I64" | "U64" => (8, false),
                "F32" | "Flex32" | "I32" | "U32" => (4, false),
                "F16" | "BF16" | "I16" | "U16" => (2, false),
                "I8" | "U8" => (1, false),
                "Bool" => (1, true),
                other => return Err(bad(format!("unknown dtype {other:?}"))),
            },
            Small::Variant(v, store) if v == "Bool" => match store.as_deref() {
                Some("Native" | "U8") => (1, true),
                Some("U32") => (4, true),
                _ => return Err(bad("unknown boolean storage".into())),
            },
            Small::Variant(v, _) => return Err(bad(format!("unsupported dtype {v}"))),
            _ => return Err(bad("its dtype is not a dtype".into())),
        };
        let fits = dims
            .iter()
            .try_fold(size, |n: u64, &d| n.checked_mul(d))
            .is_some_and(|n| n == nbytes);
        let shape: Option<Vec<usize>> = dims.iter().map(|&d| usize::try_from(d).ok()).collect();
        let (true, Some(shape)) = (fits, shape) else {
            return Err(bad(format!(
                "shape {dims:?} does not fit its {nbytes} bytes of {size}-byte elements"
            )));
        };
        let kind = if boolean { Kind::Bool } else { Kind::Numeric };
        let name = name.strip_prefix("item.").unwrap_or(&name).to_string();
        self.tensors.insert(name, Found { shape, kind });
        Ok(())
    }
}

/// Whether burn decodes `id` as a parameter id without panicking: base32 (DNSSEC alphabet, no
/// padding, zero trailing bits) of at most 8 bytes, or a UUID (hyphenated or simple), as
/// `ParamId::deserialize` reads them.
fn valid_param_id(id: &str) -> bool {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = match id.len() {
        32 => hex(id),
        36 => {
            let parts: Vec<&str> = id.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| hex(p))
        }
        _ => false,
    };
    if uuid {
        return true;
    }
    let len = id.len();
    let Some(values) = id
        .bytes()
        .map(|b| ALPHABET.iter().position(|&a| a == b))
        .collect::<Option<Vec<usize>>>()
    else {
        return false;
    };
    let trailing = (5 * len) % 8;
    (1..=13).contains(&len)
        && [0, 2, 4, 5, 7].contains(&(len % 8))
        && values
            .last()
            .is_some_and(|&v| v & ((1 << trailing) - 1) == 0)
}

/// The entry count of a map marker, `None` for another marker.
fn map_len<R: Read>(marker: u8, w: &mut Walker<R>) -> std::result::Result<Option<u64>, Why> {
    Ok(match marker {
        0x80..=0x8f => Some(u64::from(marker & 0x0f)),
        0xde => Some(w.uint(2)?),
        0xdf => Some(w.uint(4)?),
        _ => None,
    })
}
