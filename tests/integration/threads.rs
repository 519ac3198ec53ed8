//! `foil::backend::init_cpu_threads`: rayon's global pool with the calling thread in it. The
//! pool is process-wide, so each case runs in a child process of this test binary (the same
//! test, filtered exactly, with `FOIL_THREADS_CASE` set) and the parent checks its exit.

use std::process::Command;

use foil::backend::init_cpu_threads;
use foil::core::ErrorKind;

/// Runs this test binary's test `name` alone in a child with `FOIL_THREADS_CASE=1` and `env`,
/// and fails with the child's output unless it passed.
fn in_child(name: &str, env: &[(&str, &str)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("FOIL_THREADS_CASE", "1")
        .env_remove("RAYON_NUM_THREADS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} in a child process:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}

/// Whether this process is the child that runs the case.
fn child() -> bool {
    std::env::var_os("FOIL_THREADS_CASE").is_some()
}

/// Three threads asked for: the caller is worker 0 of a 3-thread global pool, parallel work
/// runs on it and the other two, and a second call is a typed error.
#[test]
fn the_calling_thread_joins_a_pool_of_the_size_asked_for() {
    if !child() {
        return in_child(
            "threads::the_calling_thread_joins_a_pool_of_the_size_asked_for",
            &[],
        );
    }
    assert_eq!(rayon::current_thread_index(), None);
    assert_eq!(init_cpu_threads(Some(3)).unwrap(), 3);
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(rayon::current_num_threads(), 3);
    // Every worker takes part (each task waits until all three have started one).
    let started = std::sync::atomic::AtomicUsize::new(0);
    let workers: std::collections::BTreeSet<usize> = rayon::broadcast(|ctx| {
        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while started.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        ctx.index()
    })
    .into_iter()
    .collect();
    assert_eq!(workers, [0, 1, 2].into());
    let again = init_cpu_threads(Some(2)).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Backend, "{again}");
    assert!(again.to_string().contains("CPU threads"), "{again}");
}

/// Without a size, RAYON_NUM_THREADS decides, as it does for rayon's own pool; one thread
/// leaves the caller outside the pool.
#[test]
fn rayon_num_threads_decides_the_default_and_one_thread_keeps_the_caller_outside() {
    if !child() {
        return in_child(
            "threads::rayon_num_threads_decides_the_default_and_one_thread_keeps_the_caller_outside",
            &[("RAYON_NUM_THREADS", "1")],
        );
    }
    assert_eq!(init_cpu_threads(None).unwrap(), 1);
    assert_eq!(rayon::current_thread_index(), None);
    assert_eq!(rayon::current_num_threads(), 1);
    assert_eq!(rayon::join(|| 1, || 2), (1, 2));
}

/// Zero threads is refused before any pool exists, so a later call still sets one up.
#[test]
fn zero_threads_is_refused_and_leaves_the_pool_unset() {
    if !child() {
        return in_child(
            "threads::zero_threads_is_refused_and_leaves_the_pool_unset",
            &[],
        );
    }
    let err = init_cpu_threads(Some(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
    assert_eq!(err.to_string(), "threads must be at least 1, found 0");
    assert_eq!(init_cpu_threads(Some(2)).unwrap(), 2);
    assert_eq!(rayon::current_thread_index(), Some(0));
}
