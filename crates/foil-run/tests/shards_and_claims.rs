//! Several processes on one results folder: shards partition the inputs and together write
//! exactly what one process writes; claim files keep two runs from explaining an input twice;
//! a claim left by a killed run does not block a rerun.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use foil_core::{Classifier, Cost, Explained, Method, Outcome, Request, Result, Setting};
use foil_data::{Dataset, Source};
use foil_run::claim::{Holder, claim_path};
use foil_run::{SetRun, Shard, direction_dir, read_results, result_key, run_set};
use proptest::prelude::*;

type B = NdArray;

/// Shifts image `j` of each batch by `0.01 * (j + 1 + seed)`, so a result depends on where
/// its input sat in its batch (as a sampler's noise does); sleeps `pause` per call.
struct Shift {
    pause: Duration,
}

impl Method<B> for Shift {
    fn name(&self) -> &str {
        "shift"
    }
    fn explain(&self, r: Request<'_, B>) -> Result<Explained<B>> {
        std::thread::sleep(self.pause);
        let [n, _, _, _] = r.images.dims();
        let device = r.images.device();
        let offsets: Vec<f32> = (0..n)
            .map(|j| 0.01 * (j as f32 + 1.0 + r.seed as f32))
            .collect();
        let offsets =
            Tensor::<B, 1>::from_floats(offsets.as_slice(), &device).reshape([n, 1, 1, 1]);
        let outcomes = r
            .targets
            .iter()
            .map(|&t| Outcome {
                flipped: t == 1,
                setting: Some(Setting::Guidance { scale: 1.0 }),
                cost: Cost {
                    denoiser_calls: 1,
                    classifier_calls: 1,
                    encoder_calls: 0,
                },
            })
            .collect();
        Ok(Explained {
            images: (r.images + offsets).clamp(-1.0, 1.0),
            outcomes,
            outer_masks: None,
            inner_masks: None,
        })
    }
}

/// One logit: the mean pixel.
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
    let source: Source = "kiki-bouba:16:16".parse().unwrap();
    source.load_pair("bouba", "kiki", 0.5, 1).unwrap().1
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foil-shards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                found.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    found
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The shards of N are disjoint and their union, in order, is the whole set, for any
    /// inputs and batch size; each shard gets whole batches.
    #[test]
    fn shards_partition_the_inputs(
        count in 1usize..7,
        sizes in (0usize..25, 0usize..25),
        batch in 1usize..6,
    ) {
        let directions = vec![(0..sizes.0).collect::<Vec<_>>(), (100..100 + sizes.1).collect()];
        let parts: Vec<Vec<Vec<usize>>> = (0..count)
            .map(|i| Shard::new(i, count).unwrap().select(&directions, batch))
            .collect();
        for (d, all) in directions.iter().enumerate() {
            let mut union: Vec<usize> = parts.iter().flat_map(|p| p[d].clone()).collect();
            let n = union.len();
            union.sort_unstable();
            union.dedup();
            prop_assert_eq!(n, all.len(), "inputs given to two shards or none");
            prop_assert_eq!(&union, all);
            for p in &parts {
                // In run order, and whole batches of the one-process run.
                prop_assert!(p[d].windows(2).all(|w| w[0] < w[1]));
                for run in p[d].chunks(batch) {
                    let start = all.iter().position(|&x| x == run[0]).unwrap();
                    prop_assert_eq!(start % batch, 0);
                }
            }
        }
        prop_assert_eq!(Shard::WHOLE.select(&directions, batch), directions);
    }
}

#[test]
fn two_shards_write_byte_for_byte_what_one_process_writes() {
    let (data, device) = (data(), Default::default());
    let method = Shift {
        pause: Duration::ZERO,
    };
    let (whole, split) = (temp("whole"), temp("split"));
    let plan = |out| SetRun {
        per_direction: Some(7),
        batch_size: 3,
        seed: 2,
        ..SetRun::new(&data, out, 16, &device)
    };
    let one = run_set(&method, &Bright, &plan(&whole)).unwrap();
    assert_eq!(one.done, 14);
    let mut done = 0;
    for i in 0..2 {
        let shard = Shard::new(i, 2).unwrap();
        let s = run_set(
            &method,
            &Bright,
            &SetRun {
                shard,
                ..plan(&split)
            },
        )
        .unwrap();
        assert!(s.done > 0 && s.done < 14, "shard {shard}: {s:?}");
        assert_eq!((s.skipped, s.busy), (0, 0));
        done += s.done;
    }
    assert_eq!(done, 14);
    let (a, b) = (files(&whole), files(&split));
    assert_eq!(a.len(), 14 * 4, "orig, cf, grid, json per input");
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, bytes) in &a {
        assert!(b[path] == *bytes, "{} differs", path.display());
    }
    // The union reads back as one run's results.
    assert_eq!(read_results(&split).unwrap().len(), 14);
    // A shard run again finds its inputs done; the other shard's are not its business.
    let again = SetRun {
        shard: Shard::new(1, 2).unwrap(),
        ..plan(&split)
    };
    let s = run_set(&method, &Bright, &again).unwrap();
    assert_eq!((s.done, s.busy), (0, 0));
    assert!(s.skipped > 0 && s.skipped < 14);
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn two_runs_on_one_folder_explain_each_input_once() {
    let (data, out) = (data(), temp("race"));
    let written = Mutex::new(Vec::new());
    let method = Shift {
        pause: Duration::from_millis(15),
    };
    let summaries: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let (data, out, written, method) = (&data, &out, &written, &method);
                s.spawn(move || {
                    let device = Default::default();
                    let report = |p: &foil_run::Progress<'_>| {
                        written.lock().unwrap().push(p.item.source.clone());
                    };
                    let plan = SetRun {
                        batch_size: 1,
                        progress: Some(&report),
                        ..SetRun::new(data, out, 16, &device)
                    };
                    run_set(method, &Bright, &plan).unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut written = written.into_inner().unwrap();
    let n = written.len();
    written.sort();
    written.dedup();
    assert_eq!(n, written.len(), "an input was written twice");
    assert_eq!(n, data.len());
    assert_eq!(summaries.iter().map(|s| s.done).sum::<usize>(), data.len());
    // Every input either written by a run or left by it (done by the other meanwhile, or
    // claimed by it).
    for s in &summaries {
        assert_eq!(s.done + s.skipped + s.busy, data.len(), "{s:?}");
    }
    assert_eq!(read_results(&out).unwrap().len(), data.len());
    let leftovers: Vec<_> = files(&out)
        .into_keys()
        .filter(|p| {
            !p.to_string_lossy().ends_with(".png") && !p.to_string_lossy().ends_with(".json")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_claim_left_by_a_killed_run_does_not_block_a_rerun() {
    let (data, out, device) = (data(), temp("stale"), Default::default());
    let method = Shift {
        pause: Duration::ZERO,
    };
    let plan = SetRun {
        per_direction: Some(2),
        ..SetRun::new(&data, &out, 16, &device)
    };
    let dir = direction_dir(&out, data.class_names(), 0, 1);
    std::fs::create_dir_all(&dir).unwrap();
    let first = data
        .items()
        .iter()
        .find(|i| i.label == 0)
        .map(|i| result_key(&i.source))
        .unwrap();
    let claim = claim_path(&dir, &first);
    let write_claim =
        |holder: &Holder| std::fs::write(&claim, serde_json::to_vec(holder).unwrap()).unwrap();

    // Held by a live process (this one): the input is left alone, the rest is done.
    write_claim(&Holder::this_process());
    let s = run_set(&method, &Bright, &plan).unwrap();
    assert_eq!((s.done, s.busy), (3, 1));
    assert!(!dir.join(format!("{first}.json")).exists() && claim.exists());

    // The process that held it is gone (a run killed with SIGKILL on this host): taken over.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    write_claim(&Holder {
        pid: dead,
        ..Holder::this_process()
    });
    let s = run_set(&method, &Bright, &plan).unwrap();
    assert_eq!((s.done, s.skipped, s.busy), (1, 3, 0));
    assert!(dir.join(format!("{first}.json")).exists() && !claim.exists());

    // From another host, a day and more old: taken over too.
    std::fs::remove_file(dir.join(format!("{first}.json"))).unwrap();
    write_claim(&Holder {
        pid: 1,
        host: "another-node".into(),
        since: 0,
    });
    let s = run_set(&method, &Bright, &plan).unwrap();
    assert_eq!((s.done, s.busy), (1, 0));
    assert!(!claim.exists());
    let _ = std::fs::remove_dir_all(&out);
}
