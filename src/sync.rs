//! Lock helpers that take a poisoned lock over instead of panicking.
//!
//! Why: a lock is poisoned when a thread panicked while holding it. Every holder in this
//! crate leaves its data consistent at each await-free step (it adds to numbers, pushes a
//! record, or swaps a whole value), so the data behind a poisoned lock is still good; losing
//! it would turn one panicking run into every later scrape, page or request failing.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, poisoned or not.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, poisoned or not.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
