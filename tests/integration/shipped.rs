//! The networks shipped for the quickstart (`assets/quickstart/`, one folder per class pair)
//! are what their records say: the oracle scores its recorded held-out accuracy on
//! Fashion-MNIST's test images, the class statistics belong to the shipped decoder's encoder
//! (for a LoRA decoder: its base with the adapters), and the DDPM loads. Needs Debian's
//! `dataset-fashion-mnist` (CI installs it and sets FOIL_REQUIRE_FASHION_MNIST=1; elsewhere the
//! test says it skipped).

use std::path::Path;

use burn::backend::Flex;
use foil::core::ImageEncoder;
use foil::data::Source;
use foil::embed::ClassStats;
use foil::pipeline::{STATS_FILE, image_mode, load_ddpm, load_decoder, load_oracle};
use foil::train::{ImageSet, evaluate_accuracy};

#[test]
fn shipped_networks_match_their_records() {
    check_pair("Shirt-T-shirt_top", ["Shirt", "T-shirt/top"], false);
    check_pair("Pullover-Coat", ["Pullover", "Coat"], true);
}

fn check_pair(folder: &str, classes: [&str; 2], lora: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/quickstart")
        .join(folder);
    if !Path::new("/usr/share/datasets/fashion-mnist").exists() {
        assert!(
            std::env::var_os("FOIL_REQUIRE_FASHION_MNIST").is_none(),
            "FOIL_REQUIRE_FASHION_MNIST is set but the dataset is missing"
        );
        eprintln!("skipped: apt install dataset-fashion-mnist");
        return;
    }
    let device = Default::default();
    let (spec, oracle) = load_oracle::<Flex>(&root.join("oracle"), &device).unwrap();
    assert_eq!(spec.classes, classes);
    let source: Source = "fashion-mnist".parse().unwrap();
    let (_, test) = source.load_pair(classes[0], classes[1], 0.2, 0).unwrap();
    assert_eq!(test.len(), 2000);
    let (mode, resize) = image_mode(spec.image_size);
    let all: Vec<usize> = (0..test.len()).collect();
    let set = ImageSet::<Flex>::from_dataset(&test, &all, mode, resize, &device).unwrap();
    let accuracy = evaluate_accuracy(&oracle, &set, 200).unwrap();
    let recorded = spec.test_accuracy.unwrap();
    // Threaded float reductions may move an image right at the boundary: one image is 5e-4.
    assert!(
        (accuracy - recorded).abs() <= 1.5e-3,
        "accuracy {accuracy}, recorded {recorded}"
    );

    let (decoder_spec, decoder) = load_decoder::<Flex>(&root.join("decoder"), &device).unwrap();
    assert_eq!(decoder_spec.image_size, spec.image_size);
    assert_eq!(decoder_spec.classes, classes);
    assert_eq!(decoder_spec.lora.is_some(), lora);
    let stats = ClassStats::load(root.join("decoder").join(STATS_FILE)).unwrap();
    stats.check_encoder(&decoder.identity()).unwrap();
    assert_eq!(stats.counts(), &[6000, 6000]);

    let (ddpm_spec, _) = load_ddpm::<Flex>(&root.join("ddpm"), &device).unwrap();
    assert_eq!(ddpm_spec.image_size, spec.image_size);
}
