//! Integration tests of foil-guide, in one binary (one link, one set of monomorphised kernels).

mod parity;
mod reference;
mod sampler;
