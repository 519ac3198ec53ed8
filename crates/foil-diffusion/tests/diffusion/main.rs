//! Integration tests of foil-diffusion, in one binary (one link, one set of monomorphised kernels).

mod published;
mod search;
mod target_mean;
