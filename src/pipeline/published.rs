//! The published DIFFusion networks from the folders users download: the Kandinsky 2.2
//! decoder pipeline (UNet, MoVQ, scheduler), the prior's CLIP image encoder, and a LoRA
//! adapter merged into the UNet.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use foil_core::Result;
use foil_diffusion::KandinskyDecoder;
use foil_models::hub::{self, DecoderPipelineFolder};
use foil_schedule::diffusers::read_json_file;
use foil_schedule::{DiffusersScheduler, SchedulerClass};

use super::diffusion::StepPlan;

/// The CLIP vision folder of `dir`: its `image_encoder/` sub-folder when it has one (the
/// Kandinsky 2.2 prior as downloaded), else `dir` itself (a transformers folder).
pub fn image_encoder_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("image_encoder");
    if nested.join(hub::CONFIG_FILE).is_file() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Loads the decoder pipeline folder `decoder` (its `model_index.json`, `unet/`, `movq/`,
/// `scheduler/`), the image encoder `encoder` (the prior folder or a CLIP vision folder), the
/// LoRA adapter `lora` merged into the UNet, and the step spacing.
///
/// The steps are those of `DDIMScheduler.from_config(<the folder's scheduler config>)`, as the
/// authors' `eval.py` builds them: the schedule and spacing of the config, and DDIM's
/// `set_alpha_to_one` read from the config when it holds the key, else DDIM's default (true).
pub fn load_kandinsky<B: Backend>(
    decoder: &Path,
    encoder: &Path,
    lora: Option<&Path>,
    device: &B::Device,
) -> Result<(KandinskyDecoder<B>, StepPlan)> {
    let folder = DecoderPipelineFolder::open(decoder)?;
    let mut unet = folder.load_unet::<B>(device)?;
    if let Some(lora) = lora {
        unet = hub::load_lora_into_unet(unet, lora)?;
    }
    let movq = folder.load_movq::<B>(device)?;
    let clip = hub::load_clip_vision::<B>(image_encoder_dir(encoder), device)?;
    // As eval.py's `DDIMScheduler.from_config(<the folder's config>)`: DDIM's semantics, so
    // `set_alpha_to_one` is the config's key, else DDIM's default (true).
    let path = folder.scheduler.join(hub::SCHEDULER_CONFIG);
    let config = read_json_file(&path)?;
    let scheduler = DiffusersScheduler::from_config_as(
        &config,
        &path.display().to_string(),
        SchedulerClass::Ddim,
    )?;
    let plan = StepPlan {
        schedule: scheduler.schedule,
        spacing: scheduler.spacing,
        steps_offset: scheduler.steps_offset,
        set_alpha_to_one: scheduler.set_alpha_to_one,
    };
    Ok((KandinskyDecoder::new(unet, movq, clip)?, plan))
}
