//! A value that one task drives and other threads borrow now and then,
//! where the task must never block: a task that finds the value held asks
//! the holder to wake it when it lets go, and returns `Pending`.
//!
//! The client's driver lives in one: its task runs it, and a handle takes
//! it to send inline. Blocking the task on a plain mutex there would park a
//! runtime worker behind an application thread, which may itself have been
//! preempted in the middle of its send (pinned to one core: a futex wait
//! and two extra context switches, while the response waits).

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

pub(crate) struct TaskCell<T> {
    value: Mutex<T>,
    /// The task found the value held and waits for the holder to wake it.
    missed: AtomicBool,
    task: AtomicWaker,
}

/// A borrower's hold on the value: letting go wakes the task if it found
/// the value held meanwhile.
pub(crate) struct Held<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    cell: &'a TaskCell<T>,
}

impl<T> TaskCell<T> {
    pub(crate) fn new(value: T) -> TaskCell<T> {
        TaskCell { value: Mutex::new(value), missed: AtomicBool::new(false), task: AtomicWaker::new() }
    }

    /// The value, unless the task or another borrower holds it now.
    pub(crate) fn try_lock(&self) -> Option<Held<'_, T>> {
        Some(Held { guard: Some(self.try_guard()?), cell: self })
    }

    /// The task's turn: the value, or `Pending` with `cx` woken once the
    /// borrower that holds it lets go.
    pub(crate) fn poll_lock(&self, cx: &mut Context<'_>) -> Poll<MutexGuard<'_, T>> {
        if let Some(g) = self.try_guard() {
            return Poll::Ready(g);
        }
        self.task.register(cx.waker());
        self.missed.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Held::drop`: either this second try sees
        // the value free, or the holder sees `missed` and wakes the task.
        fence(Ordering::SeqCst);
        match self.try_guard() {
            Some(g) => Poll::Ready(g),
            None => Poll::Pending,
        }
    }

    /// Waits for the value (for the task's last use, when it is dropped).
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_guard(&self) -> Option<MutexGuard<'_, T>> {
        match self.value.try_lock() {
            Ok(g) => Some(g),
            // A panic while the value was held: the client's driver is then
            // gone (its task's drop clears it); what is left is plain data.
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Only `drop` takes the guard out.
        self.guard.as_deref().expect("held until dropped")
    }
}

impl<T> std::ops::DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        fence(Ordering::SeqCst);
        if self.cell.missed.swap(false, Ordering::SeqCst) {
            self.cell.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_task_does_not_wait_for_a_borrower_and_is_woken_when_it_lets_go() {
        let cell = TaskCell::new(0u32);
        let wakes = Arc::new(Count::default());
        let waker = Waker::from(wakes.clone());
        let cx = &mut Context::from_waker(&waker);

        // Free: the task takes it at once, and nobody is woken.
        let Poll::Ready(mut g) = cell.poll_lock(cx) else { panic!("free") };
        *g += 1;
        drop(g);
        drop(cell.try_lock().expect("free again"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "a borrower the task did not miss wakes nothing");

        // Held by a borrower (on this very thread: a blocking lock would
        // deadlock here): the task returns at once.
        let mut held = cell.try_lock().expect("free");
        *held += 1;
        assert!(cell.poll_lock(cx).is_pending());
        assert!(cell.try_lock().is_none(), "one holder at a time");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "letting go wakes the task that missed it");
        let Poll::Ready(g) = cell.poll_lock(cx) else { panic!("free after the borrower let go") };
        assert_eq!(*g, 2);
        drop(g);

        // Woken once per miss.
        drop(cell.try_lock());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    /// Wakes counted, and waited for.
    #[derive(Default)]
    struct Bell(Mutex<u64>, std::sync::Condvar);

    impl Wake for Bell {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() += 1;
            self.1.notify_all();
        }
    }

    #[test]
    fn no_wake_is_lost_between_threads() {
        // A borrower thread takes the value and lets it go, over and over,
        // while the task polls: every `Pending` is followed by a wake.
        let cell = Arc::new(TaskCell::new(0u64));
        let done = Arc::new(AtomicBool::new(false));
        let borrower = {
            let (cell, done) = (cell.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if let Some(mut h) = cell.try_lock() {
                        // Held long enough for the task to miss it often.
                        for _ in 0..200 {
                            *h = std::hint::black_box(*h + 1);
                        }
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let bell = Arc::new(Bell::default());
        let waker = Waker::from(bell.clone());
        let cx = &mut Context::from_waker(&waker);
        while !done.load(Ordering::SeqCst) {
            let before = *bell.0.lock().unwrap();
            if cell.poll_lock(cx).is_pending() {
                let rung = bell.1.wait_timeout_while(bell.0.lock().unwrap(), Duration::from_secs(10), |n| *n == before);
                assert!(!rung.unwrap().1.timed_out(), "a Pending was never woken");
            }
        }
        borrower.join().unwrap();
    }
}
