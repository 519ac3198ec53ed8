//! Integration tests of foil-metrics, in one binary (one link, one set of monomorphised kernels).

mod lpips;
mod metrics;
mod run;
