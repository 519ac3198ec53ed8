//! DIFFusion in one crate: counterfactuals by regenerating an input with its image embedding
//! moved along the difference of two class means (Lasri et al., cvlab-columbia/diff-usion).
//!
//! - [`search`]: the edit search: invert once (edit-friendly DDPM inversion, `foil-invert`),
//!   then regenerate with `T_skip` from gentle to strong, keeping each input's first output the
//!   oracle labels as the target (the [`Regenerator`] trait abstracts pixel or latent space);
//! - [`Editor`]: the engine over one decoder (an embedding-conditioned denoiser that is also
//!   the image encoder), its inverter and its class statistics, with lambda sweeps for study
//!   transitions;
//! - [`DiffusionMethod`]: DIFFusion as a `foil_core::Method`, with a ladder of edit strengths;
//!   its baselines [`TargetMean`] (the target class's mean embedding instead of the arithmetic)
//!   and [`Nearest`] (the nearest training image of the other class);
//! - [`decoder`]: the small decoder and encoder foil trains on a dataset (a CLIP-style ViT and
//!   a Kandinsky-style UNet), their model folder, LoRA tuning and class statistics.
//!
//! The embedding arithmetic itself (class statistics, directions, bias removal) is
//! `foil-embed`'s, which knows nothing of the decoder.

pub mod decoder;
mod kandinsky;
mod method;
mod search;
mod space;
mod target_mean;

pub use decoder::{
    DecoderSpec, EmbeddingDecoder, EncoderWithHead, LORA_FILE, LoraSpec, STATS_FILE, load_decoder,
    train_decoder_on, tune_decoder_lora, write_class_stats,
};
pub use kandinsky::KandinskyDecoder;
pub use method::{DiffusionConfig, DiffusionMethod, Editor, Nearest, PUBLISHED_STEPS};
pub use search::{
    EditOutcome, EfRegenerator, Regenerator, SearchConfig, SearchReport, oracle_labels, search,
    skip_steps,
};
pub use space::{Codec, Decoder, Pixels};
pub use target_mean::TargetMean;
