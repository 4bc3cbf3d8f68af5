//! How long the store's commits take, reported to whoever wants to know.
//!
//! The engine owns the event (it starts every commit and sees it end), so
//! the engine times it, for every backend alike; what becomes of the figure
//! (a metrics histogram, a test's counter) is the daemon's business. The
//! engine therefore knows no metrics registry: it calls a [`CommitHook`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Called with the duration of each store commit the engine makes: the
/// write and the sync of one batch, from the start of the store's commit
/// until its results are in, whether it succeeded or not. Batches with
/// nothing to write make no commit and no call. The hook runs on the
/// commit's task, right after the commit: keep it short and non-blocking.
///
/// The default is no hook.
#[derive(Clone, Default)]
pub struct CommitHook(Option<Arc<dyn Fn(Duration) + Send + Sync>>);

impl CommitHook {
    /// A hook that calls `f` once per commit.
    pub fn new(f: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// Reports one commit that took `took`.
    pub(super) fn committed(&self, took: Duration) {
        if let Some(f) = &self.0 {
            f(took);
        }
    }
}

impl fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = if self.0.is_some() { "set" } else { "none" };
        f.debug_tuple("CommitHook")
            .field(&format_args!("{hook}"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn a_hook_sees_each_report_and_the_default_does_nothing() {
        let total = Arc::new(AtomicU64::new(0));
        let hook = CommitHook::new({
            let total = total.clone();
            move |took| {
                total.fetch_add(took.as_millis() as u64, Ordering::SeqCst);
            }
        });
        hook.committed(Duration::from_millis(2));
        hook.clone().committed(Duration::from_millis(3));
        assert_eq!(total.load(Ordering::SeqCst), 5);
        assert_eq!(format!("{hook:?}"), "CommitHook(set)");

        let none = CommitHook::default();
        none.committed(Duration::from_millis(1));
        assert_eq!(format!("{none:?}"), "CommitHook(none)");
    }
}
