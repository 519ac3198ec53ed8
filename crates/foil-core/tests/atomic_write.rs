//! `write_atomic` under concurrency: several threads writing the same file never leave a
//! partial file where a reader looks, nor a temporary file behind, and the final content is
//! one of the written ones; a failed write removes its temporary file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use foil_core::image_io::{temp_sibling, write_atomic};

const WRITERS: usize = 6;
const ROUNDS: usize = 20;
/// Large enough that a non-atomic write would be observed half done.
const LEN: usize = 256 * 1024;

/// A fresh, empty folder `foil-atomic-{tag}-<random>` under the system's temporary folder,
/// removed when the returned guard drops (after the test, pass or fail).
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("foil-atomic-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Writer `w`'s content: `LEN` bytes of value `w + 1`.
fn content(w: usize) -> Vec<u8> {
    vec![(w + 1) as u8; LEN]
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "target.bin")
        .collect()
}

#[test]
fn concurrent_writers_of_one_file_leave_one_whole_version_and_no_temp_files() {
    let tmp = temp_dir("concurrent");
    let dir = tmp.path();
    let target = dir.join("target.bin");
    let done = AtomicBool::new(false);
    let mut seen = 0usize;
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let target = &target;
                s.spawn(move || {
                    let bytes = content(w);
                    for _ in 0..ROUNDS {
                        write_atomic(target, &bytes).unwrap();
                    }
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                if let Ok(bytes) = std::fs::read(&target) {
                    assert_eq!(bytes.len(), LEN, "a partial file was visible");
                    assert!(
                        bytes.iter().all(|&b| b == bytes[0])
                            && (1..=WRITERS as u8).contains(&bytes[0]),
                        "a mixed file was visible"
                    );
                    reads += 1;
                }
            }
            reads
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        seen = reader.join().unwrap();
    });
    assert!(seen > 0, "the reader saw the file at least once");
    let last = std::fs::read(&target).unwrap();
    assert!((0..WRITERS).any(|w| last == content(w)));
    assert_eq!(leftovers(dir), Vec::<String>::new(), "temporary files left");
}

#[test]
fn temp_names_are_unique_and_hidden_beside_the_target() {
    let target = Path::new("some/folder/result.json");
    let a = temp_sibling(target);
    let b = temp_sibling(target);
    assert_ne!(a, b);
    assert_eq!(a.parent(), target.parent());
    let name = a.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(".result.json.tmp-"), "{name}");
}

#[test]
fn a_failed_write_removes_its_temporary_file() {
    let tmp = temp_dir("failed");
    let dir = tmp.path();
    // The target is a non-empty folder: the rename over it fails.
    let target = dir.join("target.bin");
    std::fs::create_dir_all(target.join("inside")).unwrap();
    let err = write_atomic(&target, b"data").unwrap_err();
    assert!(err.to_string().contains("target.bin"), "{err}");
    assert_eq!(leftovers(dir), Vec::<String>::new());
    // A plain write beside it still works.
    let file = dir.join("plain.bin");
    write_atomic(&file, b"abc").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"abc");
}
