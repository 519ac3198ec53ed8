//! Integration tests of foil-schedule, in one binary (one link, one set of monomorphised kernels).

mod diffusers;
mod properties;
mod reference;
mod suite;
