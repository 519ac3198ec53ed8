//! Fuzzing every loader of foil-models with byte mutations of valid files (issue 19, "Bad
//! input"): safetensors, PyTorch checkpoints (zip and legacy), numpy pickles, the JSON
//! configurations (diffusers, transformers, peft, guided-diffusion flags, foil's `model.json`,
//! weight indexes), burn records (`.mpk`) and LoRA adapters. No input may panic, and every
//! refusal is a typed error naming the file.
//!
//! `fuzz_<loader>` runs a few hundred cases; `fuzz_<loader>_10k` (ignored) runs 10 000:
//! `cargo test --release -p foil-models --test fuzz -- --ignored fuzz`. `FOIL_FUZZ_CASES`
//! overrides both counts.

#[path = "fuzz_support/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::NdArray;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use foil_core::{Error, ErrorKind};
use foil_models::adm::flags::GuidedDiffusionFlags;
use foil_models::adm::folder::DdpmSpec;
use foil_models::clip::{ClipImageProcessor, ClipVisionConfig};
use foil_models::folder::{load_record, save_record};
use foil_models::hub::{self, DecoderPipelineFolder, PeftLoraConfig, UNetLoraFile};
use foil_models::kandinsky::{KandinskyUNet, MoVqConfig, UNetConfig};
use foil_models::numpy_pickle::read_numpy_pickle;
use foil_models::oracle::OracleSpec;
use foil_models::weights::{TensorFile, find_weight_files};
use foil_schedule::DiffusersScheduler;
use mutate::{HangGuard, ci_cases, opt_in_cases, run, run_with, text_mutations};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type B = NdArray;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const PUBLISHED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/published"
);

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn published(rel: &str) -> PathBuf {
    Path::new(PUBLISHED).join(rel)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh, empty folder `foil-fuzz-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-fuzz-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Panics on threads named `foil-*` (the PyTorch reader's worker), which the loader turns into
/// an error: counted here so that a panic there fails the fuzz test all the same.
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("foil-"))
            {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// A refusal must be a typed error of one of `kinds` whose message names `name` (the file).
fn typed(err: &Error, kinds: &[ErrorKind], name: &str) -> Result<bool, TestCaseError> {
    let msg = err.to_string();
    prop_assert!(
        kinds.contains(&err.kind()),
        "unexpected error kind {:?}: {msg}",
        err.kind()
    );
    prop_assert!(msg.contains(name), "the error does not name {name}: {msg}");
    Ok(false)
}

/// Takes every tensor of 1 to 4 dimensions with the shape the file gives, ignores the others,
/// then finishes: every failure must be a typed error naming `name`.
fn take_everything(mut file: TensorFile, name: &str) -> Result<bool, TestCaseError> {
    let dev = Default::default();
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for n in names {
        let shape = file.shape(&n).map(<[usize]>::to_vec).unwrap_or_default();
        match shape[..] {
            [a] => drop(file.take::<B, 1>(&n, [a], &dev)),
            [a, b] => drop(file.take::<B, 2>(&n, [a, b], &dev)),
            [a, b, c] => drop(file.take::<B, 3>(&n, [a, b, c], &dev)),
            [a, b, c, d] => drop(file.take::<B, 4>(&n, [a, b, c, d], &dev)),
            _ => file.ignore([n]),
        }
    }
    match file.finish() {
        Ok(()) => Ok(true),
        Err(e) => typed(&e, &[ErrorKind::Format], name),
    }
}

/// Defines `$ci` (a few hundred cases) and `$opt_in` (ignored, 10 000 cases) running `$body`
/// with the case count.
macro_rules! fuzz_pair {
    ($ci:ident, $opt_in:ident, $default:expr, $body:expr) => {
        #[test]
        fn $ci() {
            $body(ci_cases($default));
        }

        #[test]
        #[ignore = "opt-in: cargo test --release -p foil-models --test fuzz -- --ignored fuzz"]
        fn $opt_in() {
            $body(opt_in_cases());
        }
    };
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// A small safetensors file of every dtype foil reads, a 0-d buffer and an empty tensor.
fn mixed_safetensors() -> Vec<u8> {
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    let f32s: Vec<u8> = (0..24)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let halfs: Vec<u8> = (0..6u16).flat_map(|i| (0x3c00 + i).to_le_bytes()).collect();
    let f64s: Vec<u8> = [1.5f64, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let i64s: Vec<u8> = 7i64.to_le_bytes().to_vec();
    let i32s: Vec<u8> = [1i32, -1, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = vec![
        ("a.weight", Dtype::F32, vec![2, 3, 2, 2], &f32s[..]),
        ("b.half", Dtype::F16, vec![2, 3], &halfs[..]),
        ("c.bf16", Dtype::BF16, vec![6], &halfs[..]),
        ("d.f64", Dtype::F64, vec![2], &f64s[..]),
        ("e.count", Dtype::I64, vec![], &i64s[..]),
        ("f.i32", Dtype::I32, vec![3, 1], &i32s[..]),
        ("g.empty", Dtype::F32, vec![0, 4], &[][..]),
    ];
    let views: Vec<(String, TensorView)> = tensors
        .into_iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(d, s, b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn safetensors_seeds() -> Vec<(String, Vec<u8>)> {
    vec![
        ("mixed".into(), mixed_safetensors()),
        (
            "torch_tiny".into(),
            read(&fixture("torch_tiny.safetensors")),
        ),
        (
            "lora-peft".into(),
            read(&published("lora-peft/adapter_model.safetensors")),
        ),
    ]
}

fn fuzz_safetensors_cases(cases: u32) {
    let tmp = temp_dir("safetensors");
    let dir = tmp.path();
    let path = dir.join("case.safetensors");
    let seeds = safetensors_seeds();
    run("safetensors", cases, &seeds, |_, bytes| {
        std::fs::write(&path, bytes).unwrap();
        // Lazily from the file.
        let lazy = match TensorFile::open(&path) {
            Ok(file) => take_everything(file, "case.safetensors")?,
            Err(e) => typed(&e, &[ErrorKind::Format], "case.safetensors")?,
        };
        // Eagerly from the bytes: the same verdict on the header.
        let eager = match TensorFile::from_bytes(bytes, "in-memory case") {
            Ok(file) => take_everything(file, "in-memory case")?,
            Err(e) => typed(&e, &[ErrorKind::Format], "in-memory case")?,
        };
        Ok(lazy && eager)
    });
}

fuzz_pair!(
    fuzz_safetensors,
    fuzz_safetensors_10k,
    400,
    fuzz_safetensors_cases
);

/// `VmHWM` (peak resident memory) of this process, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Headers claiming 2^40 bytes or elements are refused at once, without allocating them.
#[test]
fn huge_safetensors_lengths_are_refused_without_allocating() {
    let tmp = temp_dir("huge-safetensors");
    let dir = tmp.path();
    let before = peak_kib();
    let _watch = HangGuard::start("huge_safetensors_lengths_are_refused_without_allocating");
    let check = |name: &str, bytes: &[u8], needle: &str| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = TensorFile::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(needle), "{msg}");
        let err = TensorFile::from_bytes(bytes, name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format, "{err}");
    };
    // A header length of 2^40 bytes in a 16-byte file.
    let mut file = (1u64 << 40).to_le_bytes().to_vec();
    file.extend(b"{}      ");
    check("huge-header.safetensors", &file, "header length");
    // A tensor of 2^40 f32 elements in a tiny file.
    let header = format!(
        r#"{{"t":{{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,{}]}}}}"#,
        1u64 << 42
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    file.extend([0u8; 16]);
    check("huge-tensor.safetensors", &file, "truncated");
    // Offsets that fit the file but a shape of 2^40 elements.
    let header =
        r#"{"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,16]}}"#.to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    file.extend([0u8; 16]);
    check("huge-shape.safetensors", &file, "needs");
    let grew = peak_kib().saturating_sub(before);
    assert!(grew < 256 << 10, "peak memory grew by {grew} KiB");
}

// ---------------------------------------------------------------------------------------------
// PyTorch checkpoints

fn fuzz_pytorch_cases(cases: u32) {
    count_worker_panics();
    let tmp = temp_dir("pytorch");
    let dir = tmp.path();
    let seeds = vec![
        (
            "torch_tiny.pt (zip)".to_string(),
            read(&fixture("torch_tiny.pt")),
        ),
        (
            "densenet_tiny_legacy.pth (legacy)".to_string(),
            read(&fixture("densenet_tiny_legacy.pth")),
        ),
        (
            "dime_classifier_tiny.pth".to_string(),
            read(&fixture("dime_classifier_tiny.pth")),
        ),
    ];
    let path = dir.join("case.pt");
    run("pytorch", cases, &seeds, |_, bytes| {
        std::fs::write(&path, bytes).unwrap();
        let verdict = match TensorFile::open_pytorch(&path, None) {
            Ok(file) => take_everything(file, "case.pt")?,
            Err(e) => typed(&e, &[ErrorKind::Format], "case.pt")?,
        };
        prop_assert_eq!(
            WORKER_PANICS.load(Ordering::SeqCst),
            0,
            "the PyTorch reader panicked"
        );
        Ok(verdict)
    });
}

fuzz_pair!(fuzz_pytorch, fuzz_pytorch_10k, 300, fuzz_pytorch_cases);

// ---------------------------------------------------------------------------------------------
// numpy pickles

fn fuzz_numpy_pickle_cases(cases: u32) {
    let seeds = vec![
        (
            "numpy_tree.pkl".to_string(),
            read(&fixture("numpy_tree.pkl")),
        ),
        (
            "numpy_tree_f64.pkl".to_string(),
            read(&fixture("numpy_tree_f64.pkl")),
        ),
    ];
    run(
        "numpy pickle",
        cases,
        &seeds,
        |_, bytes| match read_numpy_pickle(bytes, "case.pkl") {
            Ok(arrays) => {
                for (name, a) in &arrays {
                    let n: usize = a.shape.iter().product();
                    prop_assert_eq!(n, a.data.len(), "{}", name);
                    let axes: Vec<usize> = (0..a.shape.len()).rev().collect();
                    let t = a.transpose(&axes);
                    prop_assert!(t.is_ok(), "{:?}", t.err());
                }
                Ok(true)
            }
            Err(e) => typed(&e, &[ErrorKind::Format, ErrorKind::Empty], "case.pkl"),
        },
    );
}

fuzz_pair!(
    fuzz_numpy_pickle,
    fuzz_numpy_pickle_10k,
    400,
    fuzz_numpy_pickle_cases
);

// ---------------------------------------------------------------------------------------------
// JSON configurations

/// The JSON files foil reads and how it reads each.
#[derive(Debug, Clone, Copy)]
enum Json {
    UNet,
    MoVq,
    Clip,
    Preprocessor,
    Peft,
    Scheduler,
    ModelIndex,
    Flags,
    Ddpm,
    Oracle,
    WeightIndex,
}

const GUIDED_FLAGS: &str = r#"{
  "attention_resolutions": "32,16,8", "class_cond": "False", "learn_sigma": "True",
  "num_channels": "128", "num_heads": "4", "num_res_blocks": "2",
  "resblock_updown": "True", "use_fp16": "False", "use_scale_shift_norm": "True",
  "image_size": "128", "diffusion_steps": "500", "noise_schedule": "linear",
  "timestep_respacing": "200", "num_head_channels": -1, "dropout": 0.0
}"#;

/// Builds the folder of one JSON kind around `bytes` (written under its file name) in `dir`,
/// and returns the file's path.
fn place_json(kind: Json, dir: &Path, bytes: &[u8]) -> PathBuf {
    let name = match kind {
        Json::UNet | Json::MoVq | Json::Clip => "config.json",
        Json::Preprocessor => "preprocessor_config.json",
        Json::Peft => "adapter_config.json",
        Json::Scheduler => "scheduler_config.json",
        Json::ModelIndex => "model_index.json",
        Json::Flags => "flags.json",
        Json::Ddpm | Json::Oracle => "model.json",
        Json::WeightIndex => "diffusion_pytorch_model.safetensors.index.json",
    };
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Reads `path` as `kind`; `Ok(true)` when accepted.
fn read_json_kind(kind: Json, path: &Path) -> foil_core::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match kind {
        Json::UNet => UNetConfig::from_diffusers_file(path).map(drop),
        Json::MoVq => MoVqConfig::from_diffusers_file(path).map(drop),
        Json::Clip => ClipVisionConfig::from_transformers_file(path).map(drop),
        Json::Preprocessor => ClipImageProcessor::from_preprocessor_file(path).map(drop),
        Json::Peft => PeftLoraConfig::from_file(path).map(drop),
        Json::Scheduler => {
            let s = DiffusersScheduler::from_file(path)?;
            s.inference_steps(25).map(drop)
        }
        Json::ModelIndex => DecoderPipelineFolder::open(dir).map(drop),
        Json::Flags => {
            // As a checkpoint is loaded: the flags, then their schedule.
            let flags = GuidedDiffusionFlags::from_file(path)?;
            let steps = flags.diffusion_steps.unwrap_or(1000);
            foil_schedule::NoiseSchedule::guided_linear(steps).map(drop)
        }
        Json::Ddpm => {
            let spec = DdpmSpec::load(dir)?;
            spec.schedule().map(drop)
        }
        Json::Oracle => OracleSpec::load(dir).map(drop),
        Json::WeightIndex => find_weight_files(dir, "diffusion_pytorch_model").map(drop),
    }
}

/// Seed files (name, bytes), where each kind's file is read from, and the folders holding them
/// (removed when dropped).
type JsonSeeds = (
    Vec<(String, Vec<u8>)>,
    Vec<(Json, PathBuf)>,
    Vec<tempfile::TempDir>,
);

fn json_seeds() -> JsonSeeds {
    let decoder = published("kandinsky-2-2-decoder");
    let prior = published("kandinsky-2-2-prior");
    let ddpm = serde_json::to_vec_pretty(&DdpmSpec::small(vec!["a".into(), "b".into()], 32));
    let oracle = OracleSpec::new(
        ["a".into(), "b".into()],
        32,
        vec![foil_models::oracle::Member::new(
            foil_models::oracle::Arch::Resnet18,
            0.125,
        )],
    )
    .unwrap();
    let list: Vec<(Json, Vec<u8>)> = vec![
        (Json::UNet, read(&decoder.join("unet/config.json"))),
        (Json::MoVq, read(&decoder.join("movq/config.json"))),
        (Json::Clip, read(&prior.join("image_encoder/config.json"))),
        (
            Json::Preprocessor,
            read(&prior.join("image_processor/preprocessor_config.json")),
        ),
        (
            Json::Peft,
            read(&published("lora-peft/adapter_config.json")),
        ),
        (
            Json::Scheduler,
            read(&decoder.join("scheduler/scheduler_config.json")),
        ),
        (Json::ModelIndex, read(&decoder.join("model_index.json"))),
        (Json::Flags, GUIDED_FLAGS.as_bytes().to_vec()),
        (Json::Ddpm, ddpm.unwrap()),
        (Json::Oracle, serde_json::to_vec_pretty(&oracle).unwrap()),
        (
            Json::WeightIndex,
            read(&published(
                "variants/unet-sharded/diffusion_pytorch_model.safetensors.index.json",
            )),
        ),
    ];
    // One folder per kind, with what else the reader needs.
    let mut places = Vec::new();
    let mut seeds = Vec::new();
    let mut folders = Vec::new();
    for (kind, bytes) in list {
        let tmp = temp_dir(&format!("json-{kind:?}"));
        let dir = tmp.path();
        match kind {
            Json::ModelIndex => {
                for part in ["unet", "movq", "scheduler"] {
                    std::os::unix::fs::symlink(decoder.join(part), dir.join(part)).unwrap();
                }
            }
            Json::WeightIndex => {
                for i in 1..=3 {
                    let name = format!("diffusion_pytorch_model-0000{i}-of-00003.safetensors");
                    std::fs::write(dir.join(name), b"").unwrap();
                }
            }
            _ => {}
        }
        let path = place_json(kind, dir, &bytes);
        // The seed itself reads.
        if let Err(e) = read_json_kind(kind, &path) {
            panic!("seed {kind:?} does not read: {e}");
        }
        places.push((kind, path));
        seeds.push((format!("{kind:?}"), bytes));
        folders.push(tmp);
    }
    (seeds, places, folders)
}

fn fuzz_json_cases(cases: u32) {
    let (seeds, places, _folders) = json_seeds();
    run_with(
        "json configurations",
        cases,
        &seeds,
        text_mutations(),
        |i, bytes| {
            let (kind, path) = &places[i];
            std::fs::write(path, bytes).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match read_json_kind(*kind, path) {
                Ok(()) => Ok(true),
                // Typed; a format error names the file.
                Err(e) if e.kind() == ErrorKind::Format => typed(&e, &[ErrorKind::Format], &name),
                Err(e) => typed(
                    &e,
                    &[
                        ErrorKind::OutOfRange,
                        ErrorKind::Shape,
                        ErrorKind::Empty,
                        ErrorKind::Io,
                        ErrorKind::NonFinite,
                    ],
                    "",
                ),
            }
        },
    );
}

fuzz_pair!(fuzz_json, fuzz_json_10k, 600, fuzz_json_cases);

// ---------------------------------------------------------------------------------------------
// burn records

/// A network shaped like foil's: convolutions, batch norm (running statistics), a list of
/// layers and an optional bias.
#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
    layers: Vec<Linear<B>>,
    head: Linear<B>,
}

fn tiny(device: &burn::tensor::Device<B>) -> Tiny<B> {
    Tiny {
        conv: Conv2dConfig::new([3, 4], [3, 3]).init(device),
        norm: BatchNormConfig::new(4).init(device),
        layers: vec![
            LinearConfig::new(4, 5).init(device),
            LinearConfig::new(5, 3).with_bias(false).init(device),
        ],
        head: LinearConfig::new(3, 2).init(device),
    }
}

fn small_resnet(device: &burn::tensor::Device<B>) -> foil_models::resnet::ResNet<B> {
    foil_models::oracle::resnet(0.0625)
        .init::<B>(device)
        .unwrap()
}

/// Records of the tiny network and of a small ResNet oracle member, as saved by foil.
fn record_seeds() -> Vec<(String, Vec<u8>)> {
    let dev = Default::default();
    let tmp = temp_dir("record-seeds");
    let dir = tmp.path();
    save_record(tiny(&dev), &dir.join("tiny")).unwrap();
    save_record(small_resnet(&dev), &dir.join("resnet")).unwrap();
    vec![
        ("tiny.mpk".into(), read(&dir.join("tiny.mpk"))),
        ("resnet.mpk".into(), read(&dir.join("resnet.mpk"))),
    ]
}

/// Loads `path` (without `.mpk`) into the network of seed `i`; the verdict.
fn load_seed_record(i: usize, path: &Path) -> Result<bool, TestCaseError> {
    let dev = Default::default();
    let loaded = if i == 0 {
        load_record(tiny(&dev), path, "make it again", &dev).map(drop)
    } else {
        load_record(small_resnet(&dev), path, "make it again", &dev).map(drop)
    };
    match loaded {
        Ok(()) => Ok(true),
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.contains("0.14.0"), "misleading message: {msg}");
            typed(&e, &[ErrorKind::Format], "case.mpk")
        }
    }
}

fn fuzz_burn_record_cases(cases: u32) {
    let tmp = temp_dir("record");
    let dir = tmp.path();
    let seeds = record_seeds();
    let path = dir.join("case");
    run("burn record", cases, &seeds, |i, bytes| {
        std::fs::write(path.with_extension("mpk"), bytes).unwrap();
        load_seed_record(i, &path)
    });
}

fuzz_pair!(
    fuzz_burn_record,
    fuzz_burn_record_10k,
    300,
    fuzz_burn_record_cases
);

/// A record cut anywhere is refused with an error that names the file and says it is truncated
/// or corrupt, never burn's "internal data format has changed since version 0.14.0".
#[test]
fn truncated_records_name_the_file() {
    let dev = Default::default();
    let tmp = temp_dir("record-truncated");
    let dir = tmp.path();
    save_record(tiny(&dev), &dir.join("tiny")).unwrap();
    let whole = read(&dir.join("tiny.mpk"));
    let path = dir.join("cut");
    for at in [0, 1, 7, whole.len() / 3, whole.len() / 2, whole.len() - 1] {
        std::fs::write(path.with_extension("mpk"), &whole[..at]).unwrap();
        let err = load_record(tiny(&dev), &path, "train it", &dev).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Format, "{msg}");
        assert!(msg.contains("cut.mpk"), "cut at {at}: {msg}");
        assert!(
            msg.contains("truncated or corrupt") && !msg.contains("0.14.0"),
            "cut at {at}: {msg}"
        );
    }
    // The whole file loads.
    std::fs::write(path.with_extension("mpk"), &whole).unwrap();
    load_record(tiny(&dev), &path, "train it", &dev).unwrap();
    // A record of another network is refused as such.
    let err = load_record(small_resnet(&dev), &path, "train it", &dev).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cut.mpk"), "{msg}");
    // A missing record names the file and the hint.
    let err = load_record(tiny(&dev), &dir.join("missing"), "train it", &dev).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("missing") && msg.contains("train it"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// LoRA adapters

fn fuzz_lora_cases(cases: u32) {
    let unet: KandinskyUNet<B> =
        hub::load_unet::<B>(published("kandinsky-2-2-decoder/unet"), &Default::default()).unwrap();
    let peft = published("lora-peft");
    let diffusers = published("lora-diffusers/pytorch_lora_weights.safetensors");
    // Seed 0 mutates the peft weights, 1 the peft config, 2 the diffusers file.
    let seeds = vec![
        (
            "adapter_model.safetensors".to_string(),
            read(&peft.join("adapter_model.safetensors")),
        ),
        (
            "adapter_config.json".to_string(),
            read(&peft.join("adapter_config.json")),
        ),
        (
            "pytorch_lora_weights.safetensors".to_string(),
            read(&diffusers),
        ),
    ];
    let peft_dir_tmp = temp_dir("lora-peft");
    let peft_dir = peft_dir_tmp.path();
    let diffusers_dir_tmp = temp_dir("lora-diffusers");
    let diffusers_dir = diffusers_dir_tmp.path();
    run("lora", cases, &seeds, |i, bytes| {
        let (target, name) = match i {
            0 | 1 => {
                for (j, (file, seed)) in seeds[..2].iter().enumerate() {
                    let data = if j == i { bytes } else { &seed[..] };
                    std::fs::write(peft_dir.join(file), data).unwrap();
                }
                (peft_dir, seeds[i].0.clone())
            }
            _ => {
                std::fs::write(diffusers_dir.join(&seeds[2].0), bytes).unwrap();
                (diffusers_dir, seeds[2].0.clone())
            }
        };
        let kinds = [ErrorKind::Format, ErrorKind::Shape, ErrorKind::Empty];
        let adapter = match UNetLoraFile::open(target) {
            Ok(a) => a,
            Err(e) if e.kind() == ErrorKind::Format => return typed(&e, &kinds, &name),
            Err(e) => return typed(&e, &kinds, ""),
        };
        match adapter.attach(unet.clone()) {
            Ok(_) => Ok(true),
            Err(e) => typed(&e, &kinds, ""),
        }
    });
}

fuzz_pair!(fuzz_lora, fuzz_lora_10k, 200, fuzz_lora_cases);

/// The records foil ships (a DDPM and an oracle of the quickstart) pass the check burn records
/// go through, and a DDPM record is refused as an oracle member, naming the file.
#[test]
fn shipped_records_pass_the_record_check() {
    let dev = Default::default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/quickstart/Pullover-Coat");
    let (_, adm) = foil_models::adm::folder::load_ddpm::<B>(&root.join("ddpm"), &dev).unwrap();
    assert!(adm.num_params() > 0);
    let (spec, _) = foil_models::oracle::load_oracle::<B>(&root.join("oracle"), &dev).unwrap();
    let width = spec.members[0].width;
    let err = load_record(
        foil_models::oracle::resnet(width).init::<B>(&dev).unwrap(),
        &root.join("ddpm/adm"),
        "train it",
        &dev,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("adm.mpk") && msg.contains("not a record of this network"),
        "{msg}"
    );
    foil_models::folder::check_record(
        &root.join("../Shirt-T-shirt_top/decoder/decoder"),
        "train it",
    )
    .unwrap();
}

/// Lengths of 2^32 - 1 (MessagePack byte strings, arrays, maps) in a small burn record, and a
/// numpy array of 2^80 elements in a small pickle, are refused at once without allocating.
#[test]
fn huge_record_and_pickle_lengths_are_refused_without_allocating() {
    let dev = Default::default();
    let tmp = temp_dir("huge-record");
    let dir = tmp.path();
    let before = peak_kib();
    let _watch = HangGuard::start("huge_record_and_pickle_lengths_are_refused_without_allocating");
    // {"metadata": nil, "item": {"w": <huge>}}
    let head: Vec<u8> = [
        &[0x82, 0xa8][..],
        b"metadata",
        &[0xc0, 0xa4],
        b"item",
        &[0x81, 0xa1, b'w'],
    ]
    .concat();
    for (label, huge) in [
        ("bin", &[0xc6, 0xff, 0xff, 0xff, 0xff][..]),
        ("array", &[0xdd, 0xff, 0xff, 0xff, 0xff][..]),
        ("map", &[0xdf, 0xff, 0xff, 0xff, 0xff][..]),
        ("str", &[0xdb, 0xff, 0xff, 0xff, 0xff][..]),
    ] {
        let path = dir.join(format!("huge-{label}"));
        let bytes = [&head[..], huge, &[0u8; 16]].concat();
        std::fs::write(path.with_extension("mpk"), bytes).unwrap();
        let err = load_record(tiny(&dev), &path, "train it", &dev).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Format, "{msg}");
        assert!(
            msg.contains(&format!("huge-{label}.mpk")) && msg.contains("truncated or corrupt"),
            "{msg}"
        );
    }
    // A numpy array whose shape claims 2^40 x 2^40 float32 values in a 16-byte buffer.
    use serde_pickle::{HashableValue, Value};
    for shape in [vec![1i64 << 40, 1 << 40], vec![1 << 40], vec![1 << 62, 4]] {
        let state = Value::Tuple(vec![
            Value::I64(1),
            Value::Tuple(shape.iter().map(|&d| Value::I64(d)).collect()),
            Value::None,
            Value::Bool(false),
            Value::Bytes(vec![0; 16]),
        ]);
        let tree =
            Value::Dict(std::iter::once((HashableValue::String("a".into()), state)).collect());
        let bytes = serde_pickle::value_to_vec(&tree, serde_pickle::SerOptions::new()).unwrap();
        let err = read_numpy_pickle(&bytes, "huge.pkl").unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Format, "{msg}");
        assert!(
            msg.contains("huge.pkl") && msg.contains("array `a`"),
            "{msg}"
        );
    }
    let grew = peak_kib().saturating_sub(before);
    assert!(grew < 256 << 10, "peak memory grew by {grew} KiB");
}

/// Step counts of 2^32 and 2^40 in a scheduler configuration, a DDPM `model.json` and
/// guided-diffusion flags are refused before a schedule is allocated for them.
#[test]
fn huge_step_counts_in_json_are_refused_without_allocating() {
    let (_, places, _folders) = json_seeds();
    let before = peak_kib();
    let _watch = HangGuard::start("huge_step_counts_in_json_are_refused_without_allocating");
    for (kind, path) in &places {
        let (key, seed) = match kind {
            Json::Scheduler => ("num_train_timesteps", read(path)),
            Json::Ddpm => ("diffusion_steps", read(path)),
            Json::Flags => ("diffusion_steps", read(path)),
            _ => continue,
        };
        for huge in ["4294967296", "1099511627776"] {
            let mut json: serde_json::Value = serde_json::from_slice(&seed).unwrap();
            json[key] = if matches!(kind, Json::Flags) {
                serde_json::Value::String(huge.into())
            } else {
                serde_json::from_str(huge).unwrap()
            };
            std::fs::write(path, serde_json::to_vec(&json).unwrap()).unwrap();
            let err = read_json_kind(*kind, path).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::Format | ErrorKind::OutOfRange),
                "{kind:?}: {err}"
            );
            assert!(err.to_string().contains(huge), "{kind:?}: {err}");
        }
        std::fs::write(path, &seed).unwrap();
    }
    let grew = peak_kib().saturating_sub(before);
    assert!(grew < 256 << 10, "peak memory grew by {grew} KiB");
}

/// A PyTorch zip whose pickle announces a 2^40-byte string, or whose central directory declares
/// an entry of 2^32 - 16 bytes, and a tensor whose shape needs 2^42 bytes, are refused at once
/// without allocating what they claim (burn-store would).
#[test]
fn huge_pytorch_lengths_are_refused_without_allocating() {
    let tmp = temp_dir("huge-pytorch");
    let dir = tmp.path();
    let seed = read(&fixture("torch_tiny.pt"));
    let find = |needle: &[u8], from: usize| {
        seed[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
            .unwrap()
    };
    let before = peak_kib();
    let _watch = HangGuard::start("huge_pytorch_lengths_are_refused_without_allocating");
    let refuse = |name: &str, bytes: &[u8], needle: &str| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = TensorFile::open_pytorch(&path, None).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Format, "{msg}");
        assert!(msg.contains(name) && msg.contains(needle), "{msg}");
    };
    // The pickle: its protocol opcode, then a BINUNICODE8 of 2^40 bytes.
    let pickle = find(b"\x80\x02", find(b"data.pkl", 0));
    let mut bytes = seed.clone();
    bytes[pickle + 2] = 0x8d;
    bytes[pickle + 3..pickle + 11].copy_from_slice(&(1u64 << 40).to_le_bytes());
    refuse("huge-string.pt", &bytes, "announces 1099511627776 bytes");
    // The central directory: the first entry's uncompressed size.
    let central = find(b"PK\x01\x02", 0);
    let mut bytes = seed.clone();
    bytes[central + 24..central + 28].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    refuse("huge-entry.pt", &bytes, "claims 4294967280 bytes");
    // A tensor's shape in the pickle: conv.weight's (2, 3, 3, 3) made (2, 255, 255, 3) (its
    // checksums fixed), 1.5 MB of values in a 2.6 kB file: refused when taken.
    let mut bytes = seed.clone();
    let dims = pickle + 124;
    assert_eq!(&bytes[dims..dims + 8], b"K\x02K\x03K\x03K\x03");
    bytes[dims + 3] = 255;
    bytes[dims + 5] = 255;
    let local = find(b"PK\x03\x04", 0);
    let size = u32::from_le_bytes(bytes[central + 20..central + 24].try_into().unwrap()) as usize;
    let crc = crc32(&bytes[pickle..pickle + size]).to_le_bytes();
    bytes[local + 14..local + 18].copy_from_slice(&crc);
    bytes[central + 16..central + 20].copy_from_slice(&crc);
    if bytes[local + 6] & 8 != 0 {
        // A data descriptor after the data holds the checksum too.
        let at = pickle + size;
        let at = if bytes[at..].starts_with(b"PK\x07\x08") {
            at + 4
        } else {
            at
        };
        bytes[at..at + 4].copy_from_slice(&crc);
    }
    let path = dir.join("huge-shape.pt");
    std::fs::write(&path, &bytes).unwrap();
    let mut file = TensorFile::open_pytorch(&path, None).unwrap();
    assert_eq!(file.shape("conv.weight"), Some(&[2, 255, 255, 3][..]));
    drop(file.take::<B, 4>("conv.weight", [2, 255, 255, 3], &Default::default()));
    file.ignore(["conv.bias", "fc.weight", "bn.num_batches_tracked"]);
    let msg = file.finish().unwrap_err().to_string();
    assert!(
        msg.contains("conv.weight") && msg.contains("needs more bytes than the"),
        "{msg}"
    );
    let grew = peak_kib().saturating_sub(before);
    assert!(grew < 256 << 10, "peak memory grew by {grew} KiB");
}

/// CRC-32 (IEEE) of `data`, as zip stores it.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, e) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}
