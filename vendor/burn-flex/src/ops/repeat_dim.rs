//! Repeat a tensor along a dimension.

use alloc::vec::Vec;
use burn_std::Shape;

use crate::{FlexTensor, Layout};

/// Repeat `tensor` along `dim` by `times`.
pub fn repeat_dim(tensor: FlexTensor, dim: usize, times: usize) -> FlexTensor {
    if times == 1 {
        return tensor;
    }

    let ndims = tensor.layout().num_dims();
    assert!(
        dim < ndims,
        "repeat_dim: dim {} out of bounds for tensor with {} dimensions",
        dim,
        ndims
    );

    let tensor = tensor.to_contiguous();
    let shape = tensor.layout().shape().clone();
    let dtype = tensor.dtype();
    let elem_size = crate::tensor::dtype_size(dtype);

    let mut new_dims: Vec<usize> = shape.iter().cloned().collect();
    new_dims[dim] *= times;
    let new_shape = Shape::from(new_dims);

    let src: &[u8] = tensor.bytes();
    let inner: usize = shape.iter().skip(dim + 1).product();
    let dim_size = shape[dim];
    let chunk_bytes = dim_size * inner * elem_size;

    // foil's patch: written straight into a buffer of the element's width (no re-alignment copy
    // of the whole result), one task per outer index above burn-flex's parallel threshold.
    let mut dst = crate::tensor::zeroed_bytes(new_shape.num_elements(), elem_size);
    if chunk_bytes > 0 {
        let fill = |(o, out): (usize, &mut [u8])| {
            let chunk = &src[o * chunk_bytes..][..chunk_bytes];
            for copy in out.chunks_exact_mut(chunk_bytes) {
                copy.copy_from_slice(chunk);
            }
        };
        let out: &mut [u8] = &mut dst;
        #[cfg(feature = "rayon")]
        if new_shape.num_elements() >= super::PARALLEL_THRESHOLD {
            use rayon::prelude::*;
            out.par_chunks_mut(chunk_bytes * times)
                .enumerate()
                .for_each(fill);
        } else {
            out.chunks_mut(chunk_bytes * times).enumerate().for_each(fill);
        }
        #[cfg(not(feature = "rayon"))]
        out.chunks_mut(chunk_bytes * times).enumerate().for_each(fill);
    }

    FlexTensor::new(
        dst,
        Layout::contiguous(new_shape),
        dtype,
    )
}
