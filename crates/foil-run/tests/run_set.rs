//! `run_set` with a toy method: what it writes per input, the cost and setting it records,
//! resuming, and refusing a method that answers for the wrong number of inputs.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::Tensor;
use foil_core::{Classifier, Cost, Error, Explained, Method, Outcome, Request, Result, Setting};
use foil_data::{Dataset, Source};
use foil_run::{ItemResult, SetRun, direction_dir, read_results, run_set};

type B = NdArray;

/// Negates each image; "flips" the inputs whose target is 1; masks the left half.
struct Negate {
    /// Answer for one input fewer than asked.
    short: bool,
}

impl Method<B> for Negate {
    fn name(&self) -> &str {
        "negate"
    }
    fn explain(&self, r: Request<'_, B>) -> Result<Explained<B>> {
        let [n, _, h, w] = r.images.dims();
        let outcomes = r
            .targets
            .iter()
            .map(|&t| Outcome {
                flipped: t == 1,
                setting: Some(Setting::Guidance { scale: 2.0 }),
                cost: Cost {
                    denoiser_calls: 5,
                    classifier_calls: 2,
                    encoder_calls: 1,
                },
            })
            .take(n - usize::from(self.short))
            .collect();
        let mask = Tensor::<B, 4>::ones([n, 1, h, w / 2], &r.images.device());
        let mask = Tensor::cat(vec![mask.clone(), mask.zeros_like()], 3);
        Ok(Explained {
            images: r.images.neg(),
            outcomes,
            outer_masks: Some(mask),
            inner_masks: None,
        })
    }
}

/// One logit: the mean pixel (bright means class 1).
struct Bright;
impl Classifier<B> for Bright {
    fn num_logits(&self) -> usize {
        1
    }
    fn logits(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(x.clone().reshape([x.dims()[0] as i32, -1]).mean_dim(1))
    }
}

fn data() -> Dataset {
    let source: Source = "kiki-bouba:6:16".parse().unwrap();
    source.load_pair("bouba", "kiki", 0.5, 1).unwrap().1
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foil-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn results(out: &Path) -> Vec<(PathBuf, ItemResult)> {
    read_results(out).unwrap()
}

#[test]
fn writes_one_record_per_input_and_resumes() {
    let (data, out, device) = (data(), temp("resume"), Default::default());
    let plan = SetRun {
        per_direction: Some(2),
        batch_size: 3,
        ..SetRun::new(&data, &out, 16, &device)
    };
    let first = run_set(&Negate { short: false }, &Bright, &plan).unwrap();
    assert_eq!((first.done, first.skipped), (4, 0));
    let found = results(&out);
    assert_eq!(found.len(), 4);
    for (path, r) in &found {
        // The target is the other class of the oracle's prediction, and the record says so.
        assert_eq!(r.to, 1 - r.predicted);
        assert_eq!(r.flipped, r.to == 1);
        assert_eq!(r.scale, r.flipped.then_some(2.0), "{r:?}");
        assert_eq!((r.t_skip, r.lambda), (None, None));
        // The method's cost, plus the oracle's pass on the original.
        assert_eq!(
            (r.denoiser_calls, r.classifier_calls, r.encoder_calls),
            (5, 3, 1)
        );
        let m1 = r.m1.as_ref().unwrap();
        assert_eq!(m1.share, 0.5);
        assert!(path.with_file_name(&m1.file).exists() && r.m2.is_none());
        for ext in ["orig.png", "cf.png", "grid.png"] {
            assert!(path.with_extension(ext).exists(), "{ext}");
        }
        // Negating every pixel changes most of them.
        assert!(r.changed_fraction > 0.5, "{r:?}");
    }
    let again = run_set(&Negate { short: false }, &Bright, &plan).unwrap();
    assert_eq!((again.done, again.skipped), (0, 4));
    std::fs::remove_file(&found[1].0).unwrap();
    let resumed = run_set(&Negate { short: false }, &Bright, &plan).unwrap();
    assert_eq!((resumed.done, resumed.skipped), (1, 3));
    assert_eq!(results(&out), found);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_method_answering_for_fewer_inputs_is_refused_before_anything_is_written() {
    let (data, out, device) = (data(), temp("short"), Default::default());
    let plan = SetRun {
        per_direction: Some(2),
        ..SetRun::new(&data, &out, 16, &device)
    };
    let err = run_set(&Negate { short: true }, &Bright, &plan).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let dir = direction_dir(&out, data.class_names(), 0, 1);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let zero = SetRun {
        batch_size: 0,
        ..plan
    };
    let err = run_set(&Negate { short: false }, &Bright, &zero).unwrap_err();
    assert!(err.to_string().contains("batch size"), "{err}");
    let _ = std::fs::remove_dir_all(&out);
}

proptest::proptest! {
    /// Keys are file-name safe, one character per character of the source.
    #[test]
    fn result_keys_are_file_name_safe(source in ".{0,40}") {
        let key = foil_run::result_key(&source);
        proptest::prop_assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        proptest::prop_assert_eq!(key.chars().count(), source.chars().count());
    }

    /// Several distinct seeds run into distinct folders under `out`; one runs into `out`; a
    /// repeated seed is refused.
    #[test]
    fn seed_runs_are_distinct(seeds in proptest::collection::btree_set(0u64..1000, 1..6)) {
        let seeds: Vec<u64> = seeds.into_iter().collect();
        let out = Path::new("runs/x");
        let runs = foil_run::seed_runs(out, &seeds).unwrap();
        proptest::prop_assert_eq!(runs.len(), seeds.len());
        if seeds.len() == 1 {
            proptest::prop_assert_eq!(&runs[0].1, out);
        } else {
            let dirs: std::collections::BTreeSet<_> = runs.iter().map(|r| r.1.clone()).collect();
            proptest::prop_assert_eq!(dirs.len(), seeds.len());
            let mut repeated = seeds.clone();
            repeated.push(seeds[0]);
            proptest::prop_assert!(foil_run::seed_runs(out, &repeated).is_err());
        }
    }
}

#[test]
fn progress_is_reported_once_per_written_input_with_the_run_total() {
    use std::cell::RefCell;
    let (data, out, device) = (data(), temp("progress"), Default::default());
    let seen = RefCell::new(Vec::new());
    let report = |p: &foil_run::Progress<'_>| {
        seen.borrow_mut()
            .push((p.done, p.total, p.flipped, p.item.source.clone()));
    };
    let plan = SetRun {
        per_direction: Some(2),
        batch_size: 3,
        progress: Some(&report),
        ..SetRun::new(&data, &out, 16, &device)
    };
    let summary = run_set(&Negate { short: false }, &Bright, &plan).unwrap();
    let seen = seen.borrow().clone();
    assert_eq!(seen.len(), summary.done);
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, s)| s.0 == i + 1 && s.1 == 4)
    );
    assert_eq!(seen.last().map(|s| s.2), Some(summary.flipped));
    // Every reported input has its result file.
    let written: Vec<String> = results(&out).into_iter().map(|(_, r)| r.source).collect();
    assert!(seen.iter().all(|s| written.contains(&s.3)));
    // A rerun writes nothing, so reports nothing.
    let count = std::cell::Cell::new(0);
    let again = |_: &foil_run::Progress<'_>| count.set(count.get() + 1);
    let rerun = SetRun {
        progress: Some(&again),
        ..plan
    };
    run_set(&Negate { short: false }, &Bright, &rerun).unwrap();
    assert_eq!(count.get(), 0);
    let _ = std::fs::remove_dir_all(&out);
}
