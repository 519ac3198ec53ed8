//! Integration tests of the facade, in one binary (one link, one set of monomorphised kernels):
//! the `foil` command line, the pipelines end to end, the shipped presets, the study page and
//! the vendored burn-flex patch.

mod common;

mod cli_output;
mod evaluate;
mod flex_patch;
mod home;
mod manifest;
mod pipeline;
mod published;
mod shard;
mod shipped;
mod teach;
mod threads;
