//! Small tensor helpers used across the workspace: host copies, finiteness and shape checks.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::{Error, Result};

/// Copies a float tensor to the host as `f32`, whatever the backend's float type.
pub fn to_vec_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Result<Vec<f32>> {
    t.to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::format("tensor data", format!("{e:?}")))
}

/// Returns an error naming `what` if `t` holds NaN or an infinity.
pub fn ensure_finite<B: Backend, const D: usize>(
    t: &Tensor<B, D>,
    what: impl Into<std::borrow::Cow<'static, str>>,
    context: &str,
) -> Result<()> {
    // One reduction, one scalar read: sum(|x|) is finite only if every element is.
    let s = t.clone().abs().sum().into_scalar();
    let s: f64 = burn::tensor::ElementConversion::elem(s);
    if s.is_finite() {
        Ok(())
    } else {
        Err(Error::non_finite(what, context))
    }
}

/// Returns an error naming `what` unless `t` has exactly `expected` dims.
pub fn ensure_dims<B: Backend, const D: usize>(
    t: &Tensor<B, D>,
    what: impl Into<std::borrow::Cow<'static, str>>,
    expected: [usize; D],
) -> Result<()> {
    let found = t.dims();
    if found == expected {
        Ok(())
    } else {
        Err(Error::shape(what, fmt_dims(&expected), fmt_dims(&found)))
    }
}

/// Writes dims as `[a, b, c]`.
pub fn fmt_dims(dims: &[usize]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

/// A `[N, 1, 1, 1]` tensor of per-sample coefficients, for broadcasting over NCHW images.
pub fn per_sample<B: Backend>(values: &[f64], device: &B::Device) -> Tensor<B, 4> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n, 1, 1, 1]), device)
}

/// A float tensor from host `f32` values.
pub fn from_vec<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    let n: usize = shape.iter().product();
    if n != values.len() {
        return Err(Error::shape(
            "tensor values",
            format!("{n} values for {}", fmt_dims(&shape)),
            format!("{} values", values.len()),
        ));
    }
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// `indices` as an `Int` index tensor on `device` (for `select`).
pub fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// The Euclidean norm of each row of `[N, D]`, as `[N, 1]`.
pub fn row_norms<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.powi_scalar(2).sum_dim(1).sqrt()
}

/// Each row of `[N, D]` divided by its Euclidean norm, norms below `min_norm` raised to it (so
/// a zero row stays zero).
pub fn unit_rows<B: Backend>(x: Tensor<B, 2>, min_norm: f64) -> Tensor<B, 2> {
    let norms = row_norms(x.clone()).clamp_min(min_norm);
    x / norms
}
