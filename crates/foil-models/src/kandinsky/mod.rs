//! The Kandinsky 2.2 decoder networks, mirroring diffusers 0.31.0 and loading by diffusers'
//! state-dict names: the image-conditioned [`unet`] (`UNet2DConditionModel`), the [`movq`]
//! autoencoder (`VQModel` with spatial norms) and the shared
//! [`blocks`] (resnets with time embeddings, attention with added keys and values).

pub mod blocks;
pub mod movq;
pub mod unet;

pub use movq::{MoVq, MoVqConfig};
pub use unet::{DownBlockType, KandinskyUNet, UNetConfig, UpBlockType};
