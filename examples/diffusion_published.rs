//! DIFFusion as published, from the hub folders: one image explained and saved under results/.
//! `cargo run --release --example diffusion_published` runs the tiny test folders; give
//! `DECODER PRIOR STATS CLASSIFIER IMAGE SIZE STEPS` for the real ones (`STATS` from `foil stats
//! --image-encoder PRIOR`, `CLASSIFIER` DiME's CelebA classifier, explaining Smiling).
use foil::backend::Flex;
use foil::core::Error;
use foil::data::{Dataset, Item};
use foil::models::dime_classifier::DimeClassifierConfig;
use foil::pipeline::{Diffusion, DiffusionConfig, OracleSource, PublishedDiffusionFiles};

const DEFAULTS: [&str; 7] = [
    "tests/fixtures/published/kandinsky-2-2-decoder",
    "tests/fixtures/published/kandinsky-2-2-prior",
    "tests/fixtures/published/stats.json",
    "crates/foil-models/tests/fixtures/dime_classifier_tiny.pth",
    "tests/fixtures/published/input.png",
    "32",
    "10",
];

fn main() -> foil::core::Result<()> {
    // The calling thread joins the CPU backends' pool (docs/performance.md).
    foil::backend::init_cpu_threads(None)?;
    let given: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| given.get(i).map_or(DEFAULTS[i], String::as_str).to_string();
    let num = |i: usize| arg(i).parse().map_err(|e| Error::format(arg(i), e));
    let tiny = arg(3) == DEFAULTS[3];
    let config = [
        DimeClassifierConfig::celeba(31),
        DimeClassifierConfig::tiny(31),
    ];
    let files = PublishedDiffusionFiles {
        decoder: arg(0).into(),
        encoder: arg(1).into(),
        lora: None,
        stats: arg(2).into(),
        oracle: OracleSource::DimeClassifier {
            file: arg(3).into(),
            config: config[tiny as usize].clone(),
        },
        image_size: num(5)?,
    };
    let diffusion = Diffusion::<Flex, _>::load_published(&files, &Default::default())?;
    let image = foil::core::image_io::load(arg(4))?;
    let item = Item {
        image: image.into(),
        label: 0,
        source: arg(4),
    };
    let data = Dataset::new(diffusion.stats().names().to_vec(), vec![item])?;
    let steps = num(6)? as usize;
    let config = DiffusionConfig {
        steps,
        ..DiffusionConfig::published()
    };
    let method = diffusion.arithmetic_for(config, &data)?;
    let out = std::path::Path::new("results/diffusion-published");
    let summary = diffusion.run(&method, &data, out, &Default::default())?;
    println!(
        "{} flipped in {:.1} s; see {}",
        summary.flipped,
        summary.seconds,
        out.display()
    );
    // Where the time went: the network calls (foil::core::profile) against everything else.
    let timings = foil::core::profile::take();
    for t in &timings {
        println!("  {}: {:.2} s in {} calls", t.name, t.seconds, t.calls);
    }
    let networks: f64 = timings.iter().map(|t| t.seconds).sum();
    println!("  everything else: {:.2} s", summary.seconds - networks);
    Ok(())
}
