//! Cooperative cancellation of a long operation (a backup). A [`CancelToken`] is shared between
//! whoever may stop the operation (the controller's job registry: an operator's cancel, the job
//! timeout) and the operation itself, which checks it at its stages and stops with
//! [`EngineError::Cancelled`].
//!
//! Invariants: cancelling is one-way and idempotent; hooks registered with
//! [`CancelToken::on_cancel`] run exactly once, at the first cancel (or at once when registered
//! after it). Hooks unblock work that cannot poll the token, e.g. a source reading a child
//! process's stdout: the hook kills the process, the read ends, the producer sees the token.

use crate::EngineError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
    hooks: Mutex<Vec<Hook>>,
}

/// A shared, one-way stop signal. Cloning shares it.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    fn hooks(&self) -> std::sync::MutexGuard<'_, Vec<Hook>> {
        self.0.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels: sets the flag, runs the registered hooks and wakes [`CancelToken::cancelled`]
    /// waiters. A second call does nothing.
    pub fn cancel(&self) {
        let hooks = {
            let mut h = self.hooks();
            if self.0.cancelled.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut *h)
        };
        for hook in hooks {
            hook();
        }
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// `Err(EngineError::Cancelled)` once cancelled.
    pub fn check(&self) -> Result<(), EngineError> {
        if self.is_cancelled() {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Resolves when the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `hook` at the first cancel, or now if the token is already cancelled.
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        let mut h = self.hooks();
        if self.is_cancelled() {
            drop(h);
            hook();
        } else {
            h.push(Box::new(hook));
        }
    }
}

/// `Err(Cancelled)` when `token` is set and cancelled.
pub fn check(token: Option<&CancelToken>) -> Result<(), EngineError> {
    token.map_or(Ok(()), CancelToken::check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn hooks_run_once_and_waiters_wake() {
        let t = CancelToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        t.on_cancel(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.cancelled().await }
        });
        assert!(t.check().is_ok());
        t.cancel();
        t.cancel();
        waiter.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(matches!(t.check(), Err(EngineError::Cancelled)));
        // Registered after the cancel: runs at once.
        let r = runs.clone();
        t.on_cancel(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
