//! The per-tenant queues: jobs wait here for a concurrency slot, tenants take turns
//! (round-robin), and no tenant runs more than its limit at once. A plain data structure
//! (no tokio): the caller says when a job ends, and bounds the global concurrency by how
//! often it calls [`TenantQueues::next`]. O(1) per event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One tenant's waiting jobs and running count.
struct TenantQueue<T> {
    waiting: VecDeque<T>,
    running: usize,
    /// In `TenantQueues::ready` (it has waiting jobs and room to run one).
    listed: bool,
}

impl<T> Default for TenantQueue<T> {
    fn default() -> Self {
        TenantQueue {
            waiting: VecDeque::new(),
            running: 0,
            listed: false,
        }
    }
}

/// Waiting jobs of type `T` by tenant. A tenant is kept while it has jobs waiting or
/// running, and forgotten when it has neither.
pub(crate) struct TenantQueues<T> {
    /// Waiting jobs and running counts per tenant.
    tenants: HashMap<Arc<str>, TenantQueue<T>>,
    /// Tenants with waiting jobs and room, in the order they are served.
    ready: VecDeque<Arc<str>>,
    /// At most this many running jobs per tenant (at least 1).
    per_tenant: usize,
}

impl<T> TenantQueues<T> {
    /// Queues with at most `per_tenant` running jobs per tenant (0 counts as 1).
    pub(crate) fn new(per_tenant: usize) -> Self {
        TenantQueues {
            tenants: HashMap::new(),
            ready: VecDeque::new(),
            per_tenant: per_tenant.max(1),
        }
    }

    /// Changes the per-tenant limit (a reload). It applies from the next job queued or
    /// ended; jobs already running are not stopped.
    pub(crate) fn set_limit(&mut self, per_tenant: usize) {
        self.per_tenant = per_tenant.max(1);
    }

    /// Queues `job` at the end of `tenant`'s queue.
    pub(crate) fn push(&mut self, tenant: Arc<str>, job: T) {
        let q = self.tenants.entry(tenant.clone()).or_default();
        q.waiting.push_back(job);
        if !q.listed && q.running < self.per_tenant {
            q.listed = true;
            self.ready.push_back(tenant);
        }
    }

    /// The next job to start, from the next tenant in turn with room; it counts as running
    /// in its tenant until [`release`](Self::release). `None`: nothing may start now.
    pub(crate) fn next(&mut self) -> Option<(Arc<str>, T)> {
        loop {
            let tenant = self.ready.pop_front()?;
            let Some(q) = self.tenants.get_mut(&tenant) else {
                continue;
            };
            let Some(job) = q.waiting.pop_front() else {
                q.listed = false;
                continue;
            };
            q.running += 1;
            if !q.waiting.is_empty() && q.running < self.per_tenant {
                self.ready.push_back(tenant.clone());
            } else {
                q.listed = false;
            }
            return Some((tenant, job));
        }
    }

    /// A job of `tenant` ended: the tenant has room again.
    pub(crate) fn release(&mut self, tenant: &Arc<str>) {
        if let Some(q) = self.tenants.get_mut(tenant) {
            q.running = q.running.saturating_sub(1);
            if q.waiting.is_empty() && q.running == 0 {
                self.tenants.remove(tenant);
            } else if !q.listed && !q.waiting.is_empty() && q.running < self.per_tenant {
                q.listed = true;
                self.ready.push_back(tenant.clone());
            }
        }
    }

    /// Tenants with jobs waiting or running (for tests).
    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::TenantQueues;
    use std::sync::Arc;

    fn t(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// Takes every job that may start now.
    fn drain(q: &mut TenantQueues<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.next().map(|(_, job)| job)).collect()
    }

    #[test]
    fn tenants_take_turns() {
        let mut q = TenantQueues::new(10);
        for job in ["a1", "a2", "a3", "a4"] {
            q.push(t("a"), job);
        }
        q.push(t("b"), "b1");
        q.push(t("c"), "c1");
        q.push(t("c"), "c2");
        // A tenant with many waiting jobs does not keep the others waiting.
        assert_eq!(drain(&mut q), ["a1", "b1", "c1", "a2", "c2", "a3", "a4"]);
    }

    #[test]
    fn a_tenant_runs_at_most_its_limit() {
        let mut q = TenantQueues::new(2);
        for job in ["a1", "a2", "a3"] {
            q.push(t("a"), job);
        }
        q.push(t("b"), "b1");
        assert_eq!(drain(&mut q), ["a1", "b1", "a2"], "a3 waits: a runs 2");
        assert!(q.next().is_none());
        q.push(t("a"), "a4");
        assert!(q.next().is_none(), "a is still at its limit");
        q.release(&t("b"));
        assert!(q.next().is_none(), "b's room is not a's");
        q.release(&t("a"));
        assert_eq!(drain(&mut q), ["a3"], "one ended, one starts");
        q.release(&t("a"));
        assert_eq!(drain(&mut q), ["a4"]);
    }

    #[test]
    fn a_limit_of_zero_counts_as_one() {
        let mut q = TenantQueues::new(0);
        q.push(t("a"), "a1");
        q.push(t("a"), "a2");
        assert_eq!(drain(&mut q), ["a1"]);
        q.release(&t("a"));
        assert_eq!(drain(&mut q), ["a2"]);
    }

    #[test]
    fn a_release_lists_a_waiting_tenant_again_behind_the_others() {
        let mut q = TenantQueues::new(1);
        q.push(t("a"), "a1");
        q.push(t("a"), "a2");
        assert_eq!(drain(&mut q), ["a1"]);
        q.push(t("b"), "b1");
        q.push(t("b"), "b2");
        assert_eq!(drain(&mut q), ["b1"]);
        q.release(&t("a"));
        q.release(&t("b"));
        // a was released first, so it is served first; each once.
        assert_eq!(drain(&mut q), ["a2", "b2"]);
    }

    #[test]
    fn an_emptied_tenant_is_forgotten() {
        let mut q = TenantQueues::new(1);
        q.push(t("a"), "a1");
        q.push(t("b"), "b1");
        assert_eq!(q.tenants(), 2);
        assert_eq!(drain(&mut q), ["a1", "b1"]);
        assert_eq!(q.tenants(), 2, "running jobs keep their tenant");
        q.release(&t("a"));
        assert_eq!(q.tenants(), 1, "nothing waiting or running in a");
        q.release(&t("a")); // a stray release changes nothing
        q.release(&t("b"));
        assert_eq!(q.tenants(), 0);
        q.push(t("a"), "a2"); // a comes back with a fresh count
        assert_eq!(drain(&mut q), ["a2"]);
    }

    #[test]
    fn a_raised_limit_applies_to_the_next_job() {
        let mut q = TenantQueues::new(1);
        q.push(t("a"), "a1");
        q.push(t("a"), "a2");
        q.push(t("a"), "a3");
        assert_eq!(drain(&mut q), ["a1"]);
        q.set_limit(3);
        q.release(&t("a"));
        assert_eq!(drain(&mut q), ["a2", "a3"]);
    }
}
