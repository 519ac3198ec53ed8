//! MaskDiME from the authors' files: each image of a folder explained, saved under results/.
//! Without arguments, the tiny test files; else `DDPM CLASSIFIER IMAGE_FOLDER` (DiME's
//! CelebA-128 checkpoint and classifier, explaining attribute 31, Smiling). Runs on flex, the
//! default build's CPU backend (several times faster than ndarray on these networks).

use burn::backend::Autodiff;
use foil::backend::Flex;
use foil::models::adm::AdmConfig;
use foil::models::dime_classifier::DimeClassifierConfig;
use foil::pipeline::{DIME_DIFFUSION_STEPS, DdpmSource, ExplainConfig, MaskDime};
use foil::pipeline::{MaskDimeFiles, OracleSource, Preset};

const DEFAULTS: [&str; 3] = [
    "crates/foil-models/tests/fixtures/adm_tiny.safetensors",
    "crates/foil-models/tests/fixtures/dime_classifier_tiny.pth",
    "tests/fixtures/published",
];

fn main() -> foil::core::Result<()> {
    // The calling thread joins the CPU backends' pool (docs/performance.md).
    foil::backend::init_cpu_threads(None)?;
    let given: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| given.get(i).map_or(DEFAULTS[i], String::as_str).to_string();
    let tiny = arg(0) == DEFAULTS[0];
    let (adm, classifier) = match tiny {
        true => (AdmConfig::tiny(), DimeClassifierConfig::tiny(31)),
        false => (
            AdmConfig::dime_celeba128(),
            DimeClassifierConfig::celeba(31),
        ),
    };
    let (file, diffusion_steps) = (arg(0).into(), DIME_DIFFUSION_STEPS);
    let ddpm = DdpmSource::Checkpoint {
        file,
        config: adm,
        diffusion_steps,
    };
    let oracle = OracleSource::DimeClassifier {
        file: arg(1).into(),
        config: classifier,
    };
    let files = MaskDimeFiles {
        oracle,
        ddpm,
        perceptual: None,
    };
    let maskdime = MaskDime::<Autodiff<Flex>>::load(&files, &Default::default())?;
    // The authors' settings without the VGG-19 term (`perceptual: Some((vgg19_file, 18))`).
    let mut config = ExplainConfig::published(Preset::Maskdime);
    config.guide.lambda_perc = 0.0;
    if tiny {
        (config.respaced_steps, config.guide.tau) = (10, 3);
    }
    let data = foil::data::folder::load_flat(arg(2), "plain", "smiling")?;
    let out = std::path::Path::new("results/maskdime-published");
    let done = maskdime.run(&config, &data, out, &Default::default())?;
    println!("{} flipped; see {}", done.flipped, out.display());
    Ok(())
}
