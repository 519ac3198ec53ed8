//! foil's patch: copies derived from a weight (Winograd's transform, packed panels) kept
//! between calls, and the per-thread switches that measure such paths; shared by
//! `conv_winograd` and `matmul_packed`.
//!
//! A sampler calls the same network dozens of times, and re-deriving a weight's copy at every
//! call cost 7-9 % of a Kandinsky UNet step (Winograd's U) and a fifth of CLIP ViT-B/32's time
//! (packed panels). A [`Kept`] cache keys an entry by the weight's storage, held weakly: while
//! the entry exists the storage's allocation cannot be reused by another tensor, and its bytes
//! cannot change while any tensor still reads them (burn-flex writes in place only through
//! `Arc::get_mut`, which fails while a weak reference exists, or `Arc::make_mut`, which then
//! moves the bytes to a new allocation, so the entry no longer matches; `Arc::try_unwrap`
//! takes the bytes only from the last tensor, which leaves the entry without a strong
//! reference). A weight is noted when first met; a copy made for it is kept if the budget
//! allows (the packed products make theirs from a weight's second call on, as a tensor seen
//! once is usually a temporary; Winograd's U is made, and kept, at any call that takes the
//! path); entries of freed storages are dropped at the next insertion or budget check, live ones stay until their storage is freed (no eviction: a network called in a
//! loop keeps its first layers' copies when the whole does not fit the budget). Without `std`
//! (no lock) nothing is kept.

use alloc::sync::Arc;
use alloc::vec::Vec;
use burn_std::Bytes;

use crate::FlexTensor;

/// What a [`Kept`] cache knows of a weight (without `std`, always [`Met::First`]).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) enum Met {
    /// Not met before: noted now, so that its next call finds it.
    First,
    /// Met before, its copy not kept (yet).
    Again,
    /// Met before, with its kept copy.
    Kept(Arc<Vec<f32>>),
}

/// The storage of `tensor` when it identifies the tensor: the tensor starts at its storage's
/// first byte and covers all of its `elements` f32 values (a view inside a larger storage does
/// not). Callers add what else their key needs (Winograd: contiguity, as its key holds no
/// strides).
pub(crate) fn identifying_storage(tensor: &FlexTensor, elements: usize) -> Option<Arc<Bytes>> {
    let storage = tensor.data_arc();
    (tensor.layout().start_offset() == 0 && storage.len() == elements * size_of::<f32>())
        .then_some(storage)
}

#[cfg(feature = "std")]
pub(crate) use with_std::Kept;
#[cfg(not(feature = "std"))]
pub(crate) use without_std::Kept;

#[cfg(feature = "std")]
mod with_std {
    use alloc::sync::{Arc, Weak};
    use alloc::vec::Vec;
    use burn_std::Bytes;
    use std::sync::{Mutex, MutexGuard};

    use super::Met;

    /// Copies derived from weights, keyed by a weight's storage and `K` (how the copy reads
    /// it), under a budget in bytes for all copies together.
    pub(crate) struct Kept<K> {
        entries: Mutex<Vec<Entry<K>>>,
        budget: usize,
    }

    /// One weight met before, and its copy once made.
    struct Entry<K> {
        storage: Weak<Bytes>,
        key: K,
        copy: Option<Arc<Vec<f32>>>,
    }

    impl<K: PartialEq> Entry<K> {
        fn is(&self, storage: &Arc<Bytes>, key: &K) -> bool {
            // Same allocation: the weak reference keeps it from being reused by another tensor.
            core::ptr::eq(self.storage.as_ptr(), Arc::as_ptr(storage))
                && self.storage.strong_count() > 0
                && self.key == *key
        }

        fn bytes(&self) -> usize {
            self.copy.as_ref().map_or(0, |c| c.len() * size_of::<f32>())
        }
    }

    impl<K: PartialEq> Kept<K> {
        /// An empty cache keeping at most `budget` bytes of copies.
        pub(crate) const fn new(budget: usize) -> Self {
            Self {
                entries: Mutex::new(Vec::new()),
                budget,
            }
        }

        /// The entries, also after a panic elsewhere while they were locked (they stay whole).
        fn lock(&self) -> MutexGuard<'_, Vec<Entry<K>>> {
            self.entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// What is known of the weight of `storage` read as `key`; one not met before is noted.
        pub(crate) fn meet(&self, storage: &Arc<Bytes>, key: K) -> Met {
            let mut entries = self.lock();
            match entries.iter().find(|e| e.is(storage, &key)) {
                Some(Entry { copy: Some(c), .. }) => Met::Kept(Arc::clone(c)),
                Some(_) => Met::Again,
                None => {
                    entries.retain(|e| e.storage.strong_count() > 0);
                    entries.push(Entry {
                        storage: Arc::downgrade(storage),
                        key,
                        copy: None,
                    });
                    Met::First
                }
            }
        }

        /// The kept copy of the weight of `storage` read as `key`, if any (nothing is noted).
        pub(crate) fn get(&self, storage: &Arc<Bytes>, key: &K) -> Option<Arc<Vec<f32>>> {
            let entries = self.lock();
            let entry = entries.iter().find(|e| e.is(storage, key))?;
            entry.copy.clone()
        }

        /// Whether a copy of `bytes` more fits the budget (entries of freed storages dropped).
        pub(crate) fn fits(&self, bytes: usize) -> bool {
            Self::fits_in(&mut self.lock(), bytes, self.budget)
        }

        fn fits_in(entries: &mut Vec<Entry<K>>, bytes: usize, budget: usize) -> bool {
            entries.retain(|e| e.storage.strong_count() > 0);
            entries.iter().map(Entry::bytes).sum::<usize>() + bytes <= budget
        }

        /// Keeps `copy` for the weight of `storage` read as `key` when it fits the budget, and
        /// returns the kept copy (another thread's, if it kept one first); `None` when it does
        /// not fit.
        pub(crate) fn keep(
            &self,
            storage: &Arc<Bytes>,
            key: K,
            copy: Arc<Vec<f32>>,
        ) -> Option<Arc<Vec<f32>>> {
            let mut entries = self.lock();
            if let Some(Entry {
                copy: Some(theirs), ..
            }) = entries.iter().find(|e| e.is(storage, &key))
            {
                return Some(Arc::clone(theirs));
            }
            if !Self::fits_in(&mut entries, copy.len() * size_of::<f32>(), self.budget) {
                return None;
            }
            match entries.iter_mut().find(|e| e.is(storage, &key)) {
                Some(entry) => entry.copy = Some(Arc::clone(&copy)),
                None => entries.push(Entry {
                    storage: Arc::downgrade(storage),
                    key,
                    copy: Some(Arc::clone(&copy)),
                }),
            }
            Some(copy)
        }
    }
}

#[cfg(not(feature = "std"))]
mod without_std {
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use burn_std::Bytes;
    use core::marker::PhantomData;

    use super::Met;

    /// Without `std` (no lock): nothing is kept, every weight is met for the first time.
    pub(crate) struct Kept<K>(PhantomData<fn(K)>);

    impl<K> Kept<K> {
        /// An empty cache that keeps nothing.
        pub(crate) const fn new(_budget: usize) -> Self {
            Self(PhantomData)
        }

        /// Always [`Met::First`].
        pub(crate) fn meet(&self, _storage: &Arc<Bytes>, _key: K) -> Met {
            Met::First
        }

        /// Always `None`.
        pub(crate) fn get(&self, _storage: &Arc<Bytes>, _key: &K) -> Option<Arc<Vec<f32>>> {
            None
        }

        /// Never.
        pub(crate) fn fits(&self, _bytes: usize) -> bool {
            false
        }

        /// Always `None`: nothing is kept.
        pub(crate) fn keep(
            &self,
            _storage: &Arc<Bytes>,
            _key: K,
            _copy: Arc<Vec<f32>>,
        ) -> Option<Arc<Vec<f32>>> {
            None
        }
    }
}

/// Declares module `$name` holding a per-thread switch with values of `$ty` (a fieldless enum
/// with explicit discriminants, or `bool`: `Copy`, and cast to a `u8` code by `as`, which
/// `$from` turns back; only builds without `std` use the codes), starting at
/// `$default`: `set` changes the calling thread's value from its next call on, `get` reads it.
/// Without `std` (no thread-locals), one value for the process.
macro_rules! thread_switch {
    ($(#[$doc:meta])* $name:ident: $ty:ty = $default:expr, from_code $from:expr) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(feature = "std")]
            std::thread_local! {
                static VALUE: core::cell::Cell<$ty> = const { core::cell::Cell::new($default) };
            }
            #[cfg(not(feature = "std"))]
            static CODE: core::sync::atomic::AtomicU8 =
                core::sync::atomic::AtomicU8::new($default as u8);

            /// Sets the calling thread's value (without `std`, every thread's).
            pub(super) fn set(value: $ty) {
                #[cfg(feature = "std")]
                VALUE.with(|v| v.set(value));
                #[cfg(not(feature = "std"))]
                CODE.store(value as u8, core::sync::atomic::Ordering::Relaxed);
            }

            /// The calling thread's value.
            pub(super) fn get() -> $ty {
                #[cfg(feature = "std")]
                return VALUE.with(|v| v.get());
                #[cfg(not(feature = "std"))]
                ($from)(CODE.load(core::sync::atomic::Ordering::Relaxed))
            }
        }
    };
}
pub(crate) use thread_switch;
