//! Client-side rate limits, so that a rotation of every account is spread to fit Azure's
//! budgets instead of meeting 429s (`shared/design/azure-wire.md`):
//!
//! - Key Vault, per vault (shared by every identity and account that uses the vault URL):
//!   secret sets, and all other secret operations, each per 10 s;
//! - Key Vault, per subscription: every secret operation on any vault, per 10 s (keyturn
//!   cannot tell a vault's subscription, so all its vaults share this one bucket);
//! - Graph, per app and tenant: writes (password resets) per 150 s.
//!
//! They are decorators over [`SecretStore`] and [`Directory`], so the protocol stays pure:
//! a request waits for its budget, then goes out. The budgets are GCRA token buckets from the
//! `governor` crate (well kept, lock-free, exact arithmetic on a monotonic clock; a hand-rolled
//! bucket would have to get the same edge cases right). Azure counts in fixed windows, so a
//! bucket is shaped to never exceed the budget in *any* window: its burst plus what its rate
//! earns in one window equals the budget (see [`Budget`]).
//!
//! Waiters queue first-in first-out on a per-bucket async mutex, so only one of them polls
//! the bucket at a time (no thundering herd when many rotations wait on one vault), and
//! commits (sets of `<secret>`) pass ahead of stages (sets of `<secret>-pending`), as each
//! write's [`Step`] says: a staged password is in Entra soon after, and committing it first
//! keeps the window short during which consumers must fall back to the staging secret.
//!
//! Every budget keeps `limits.reserve` (default a quarter) for the vault's other clients
//! (consumers reading the password): ordinary requests never use more than
//! `budget × (1 − reserve) × (1 − headroom)` in any window; only the requests of an urgent
//! rotation ([`urgent`], `keyturn rotate --all --urgent`) may use the whole budget less the
//! headroom (see [`Bucket`]'s cells).
//!
//! Waits are told to the [`Observer`] the wiring hands in (the service's metrics).
//!
//! With `[ha]`, the same decorators put every operation behind the leader's
//! [`Fence`](crate::fence::Fence) (`with_fence`): checked after the budget wait, right before
//! the request goes out, and cut off before the lease could expire (`docs/ha.md`).
//!
//! A 429 that still happens (another client used the vault) is honoured by the SDK's retry
//! policy and the protocol (`Retry-After`) and counted by the metrics (`azure_throttled`).

use crate::directory::{Applied, Directory, DirectoryError, UserInfo, Verified};
use crate::fence::{Cut, Fence};
use crate::observe::Observer;
use crate::password::Password;
use crate::store::{
    ListPage, NewVersion, SecretRecord, SecretStore, Step, StoreError, Tags, Written,
};
use async_trait::async_trait;
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Key Vault's window for secret operations.
pub(crate) const VAULT_WINDOW: Duration = Duration::from_secs(10);
/// Graph's window for writes per app and tenant.
pub(crate) const GRAPH_WINDOW: Duration = Duration::from_secs(150);

pub use crate::config::LimitsConfig;

/// The budgets of the `[limits]` table (the table itself is configuration:
/// [`crate::config::LimitsConfig`]).
impl LimitsConfig {
    /// A bucket for `limit` per `window`: the whole budget less the headroom, of which an
    /// ordinary request may use `1 − reserve` and an urgent one all (see [`Bucket`]).
    fn bucket(
        &self,
        name: &'static str,
        limit: u32,
        window: Duration,
        observer: &Arc<dyn Observer>,
    ) -> Arc<Bucket> {
        Arc::new(Bucket::with_reserve(
            name,
            Budget::new(limit, window, self.headroom),
            self.reserve,
            observer.clone(),
        ))
    }
}

tokio::task_local! {
    /// Set for the requests of an urgent rotation (`keyturn rotate --all --urgent`).
    static URGENT: bool;
}

/// Runs `f` as urgent work: the requests it makes may use the reserve of each budget
/// (`limits.reserve`), the whole budget less the headroom. The daemon runs the jobs of an
/// urgent rotation so; a task-local, so that the protocol and the stores need not carry it.
pub async fn urgent<F: std::future::Future>(f: F) -> F::Output {
    URGENT.scope(true, f).await
}

fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

/// A budget as a token bucket: at most `burst + window / period` requests in any window,
/// which is the limit less the headroom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests that may go at once after a quiet spell (1 % of the budget, at least 1).
    pub burst: u32,
    /// One more request is allowed every `period` (the sustained rate).
    pub period: Duration,
    /// `burst` + what `period` earns in a window: the requests a window may hold.
    pub usable: u32,
    /// The window the budget is counted in.
    pub window: Duration,
}

impl Budget {
    /// The budget for `limit` requests per `window`, keeping `headroom` unused.
    pub fn new(limit: u32, window: Duration, headroom: f64) -> Budget {
        let usable = ((limit as f64) * (1.0 - headroom.clamp(0.0, 0.9))).floor() as u32;
        let usable = usable.max(1);
        let burst = (usable / 100).max(1);
        let earned = (usable - burst).max(1);
        // Rounded up, so that rounding never lets one request too many into a window.
        let period = window.as_nanos().div_ceil(earned as u128);
        Budget {
            burst,
            period: Duration::from_nanos(u64::try_from(period).unwrap_or(u64::MAX)),
            usable: burst + earned,
            window,
        }
    }
}

/// `governor`'s clock on tokio's time, so that paced waits are tokio timers (one per waiting
/// bucket, none while idle) and tests can run them in virtual time (`tokio::time::pause`).
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Cells per request at the whole budget's rate. A bucket counts cells, not requests: an
/// urgent request costs [`CELLS`], an ordinary one `CELLS / (1 − reserve)`, rounded up. So
/// in any window ordinary requests alone fit in `budget × (1 − reserve)`, and all requests
/// together in the whole budget, from one bucket whose check is atomic (two buckets, one for
/// the share and one for the whole, let requests that passed the first bunch up at the
/// second and exceed the share in a window).
const CELLS: u32 = 100;

/// Adaptive back-off (AIMD) after a 429 keyturn's pacing did not predict (another client is
/// using the budget): keyturn's rate for that budget is multiplied by [`AIMD_DECREASE`] (at
/// most once per [`AIMD_HOLD`], so one burst of 429s counts once), down to [`AIMD_FLOOR`],
/// and grows back by [`AIMD_RECOVERY`] of the full rate per [`AIMD_STEP`]: from the floor
/// to the full rate in 150 s without another 429.
pub const AIMD_DECREASE: f64 = 0.5;
/// The lowest rate factor.
pub const AIMD_FLOOR: f64 = 0.25;
/// The rate factor regained per [`AIMD_STEP`].
pub const AIMD_RECOVERY: f64 = 0.05;
/// See [`AIMD_RECOVERY`].
pub const AIMD_STEP: Duration = Duration::from_secs(10);
/// Decreases closer together than this count as one.
pub const AIMD_HOLD: Duration = Duration::from_secs(1);

/// A bucket's rate factor: `base` at `since`, growing back linearly to 1.
#[derive(Debug, Clone, Copy)]
struct Aimd {
    base: f64,
    since: tokio::time::Instant,
}

impl Aimd {
    fn factor(&self, now: tokio::time::Instant) -> f64 {
        let steps = (now - self.since).as_secs_f64() / AIMD_STEP.as_secs_f64();
        (self.base + AIMD_RECOVERY * steps).min(1.0)
    }
}

/// One budget and the queue of requests waiting for it.
pub(crate) struct Bucket {
    /// The budget's name in metrics: `keyvault_write`, `keyvault_other`,
    /// `keyvault_subscription`, `graph_write`.
    name: &'static str,
    /// Where a wait is reported ([`Observer::paced`]).
    observer: Arc<dyn Observer>,
    limiter: Gcra,
    clock: TokioClock,
    /// Cells an ordinary request costs at the full rate (an urgent one: [`CELLS`]).
    ordinary: NonZeroU32,
    /// The adaptive back-off's rate factor (`None`: the full rate).
    aimd: Mutex<Option<Aimd>>,
    /// Waiters take turns (tokio's mutex is fair), so one of them polls the limiter at a time.
    turn: tokio::sync::Mutex<()>,
    /// Low-priority waiters (stages) queue here first, so commits overtake them.
    low: tokio::sync::Mutex<()>,
}

impl Bucket {
    /// A bucket for `budget` with no reserve, called `name` in metrics; its waits are told
    /// to `observer`.
    #[cfg(test)]
    pub fn new(name: &'static str, budget: Budget, observer: Arc<dyn Observer>) -> Bucket {
        Bucket::with_reserve(name, budget, 0.0, observer)
    }

    /// A bucket for `budget` of which ordinary requests may use `1 − reserve`.
    pub fn with_reserve(
        name: &'static str,
        budget: Budget,
        reserve: f64,
        observer: Arc<dyn Observer>,
    ) -> Bucket {
        let ordinary = (f64::from(CELLS) / (1.0 - reserve.clamp(0.0, 0.99))).ceil() as u32;
        let ordinary = NonZeroU32::new(ordinary.max(CELLS)).unwrap_or(NonZeroU32::MIN);
        let total = u64::from(budget.usable) * u64::from(CELLS);
        // The burst holds at least one request of either kind at the full rate (a dearer
        // one, under the adaptive back-off, is taken in several draws); what the rate earns
        // in a window fills the rest of the window's cells.
        let burst = u64::from(budget.burst.max(1) * CELLS)
            .max(u64::from(ordinary.get()))
            .min(total);
        let earned = (total - burst).max(1);
        let period = budget.window.as_nanos().div_ceil(u128::from(earned));
        let period = Duration::from_nanos(u64::try_from(period).unwrap_or(u64::MAX));
        let burst =
            NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        Bucket {
            name,
            observer,
            limiter: RateLimiter::direct_with_clock(quota, clock),
            clock,
            ordinary,
            aimd: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
            low: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for one request's worth of budget (an urgent request's when the task runs
    /// [`urgent`] work).
    pub async fn acquire(&self, low_priority: bool) {
        let full = if is_urgent() {
            CELLS
        } else {
            self.ordinary.get()
        };
        let factor = self.factor();
        let mut cost = (f64::from(full) / factor).ceil() as u32;
        let _low = if low_priority {
            Some(self.low.lock().await)
        } else {
            None
        };
        let _turn = self.turn.lock().await;
        let mut waited = None;
        // In draws of at most `full` cells (the burst holds that much); the request goes
        // once its last draw is granted.
        while cost > 0 {
            let draw = cost.min(full);
            let n = NonZeroU32::new(draw).unwrap_or(NonZeroU32::MIN);
            match self.limiter.check_n(n) {
                Ok(Ok(())) => cost -= draw,
                Ok(Err(not_until)) => {
                    waited.get_or_insert_with(tokio::time::Instant::now);
                    tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                }
                // Not reached: the burst holds `full` cells.
                Err(_) => break,
            }
        }
        if let Some(since) = waited {
            self.observer.paced(self.name, since.elapsed());
        }
    }

    /// The rate factor now (1: the full rate; at least [`AIMD_FLOOR`]).
    pub fn factor(&self) -> f64 {
        let mut aimd = self.aimd.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        match *aimd {
            Some(a) if a.factor(now) < 1.0 => a.factor(now).max(AIMD_FLOOR),
            Some(_) => {
                // Recovered: back to the full rate; forget the back-off.
                *aimd = None;
                1.0
            }
            None => 1.0,
        }
    }

    /// A 429 keyturn did not predict: shrinks the rate (see [`AIMD_DECREASE`]); returns the
    /// new factor.
    pub fn back_off(&self) -> f64 {
        let mut aimd = self.aimd.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        match *aimd {
            Some(a) if now - a.since < AIMD_HOLD => a.factor(now).max(AIMD_FLOOR),
            current => {
                let factor = current.map_or(1.0, |a| a.factor(now));
                let base = (factor * AIMD_DECREASE).max(AIMD_FLOOR);
                *aimd = Some(Aimd { base, since: now });
                base
            }
        }
    }

    /// Runs `request`; a 429 among its answers (the SDK's retries included) shrinks this
    /// budget's rate and is told to the observer with the vault's name.
    async fn learn<T>(&self, vault: &str, request: impl std::future::Future<Output = T>) -> T {
        let (out, throttles) = crate::observe::count_throttles(request).await;
        if throttles > 0 {
            let factor = self.back_off();
            tracing::warn!(budget = self.name, vault, factor, "Azure answered 429 though keyturn paced itself: another client is using this budget; keyturn slows down");
            self.observer.unpredicted_throttle(self.name, vault, factor);
        } else if self
            .aimd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            let factor = self.factor();
            self.observer.rate_factor(self.name, vault, factor);
        }
        out
    }
}

/// The buckets of one vault.
#[derive(Clone)]
struct VaultBuckets {
    writes: Arc<Bucket>,
    other: Arc<Bucket>,
    /// Every vault's: the subscription-wide limit.
    subscription: Arc<Bucket>,
}

impl VaultBuckets {
    /// Waits for the vault's `bucket`, then for the subscription's.
    async fn acquire(&self, bucket: &Bucket, low_priority: bool) {
        bucket.acquire(low_priority).await;
        self.subscription.acquire(low_priority).await;
    }
}

/// Every bucket of one configuration: one pair per vault, one for all vaults (the
/// subscription), one per Graph app and tenant.
pub struct Limiter {
    config: LimitsConfig,
    /// Where the buckets report their waits.
    observer: Arc<dyn Observer>,
    vaults: Mutex<HashMap<String, VaultBuckets>>,
    /// Key Vault's subscription-wide budget, shared by every vault.
    subscription: Arc<Bucket>,
    graph: Mutex<HashMap<String, Arc<Bucket>>>,
    /// The leader's fence (`[ha]`): every operation asks it first.
    fence: Option<Arc<Fence>>,
}

impl Limiter {
    /// Buckets for `config`, made as stores and directories ask for them; their waits are
    /// told to `observer` (the service's metrics, handed in by the wiring).
    pub fn new(config: LimitsConfig, observer: Arc<dyn Observer>) -> Self {
        Limiter {
            subscription: config.bucket(
                "keyvault_subscription",
                config.vault_subscription_per_10s,
                VAULT_WINDOW,
                &observer,
            ),
            config,
            observer,
            vaults: Mutex::new(HashMap::new()),
            graph: Mutex::new(HashMap::new()),
            fence: None,
        }
    }

    /// The same buckets, with every operation put behind `fence` (`[ha]`; `docs/ha.md`).
    pub fn with_fence(mut self, fence: Option<Arc<Fence>>) -> Self {
        self.fence = fence;
        self
    }

    /// The fence the stores and directories made here are behind, if any.
    pub(crate) fn fence(&self) -> Option<Arc<Fence>> {
        self.fence.clone()
    }

    /// The `[limits]` these buckets were made for.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Where these buckets report their waits (for the buckets of a reloaded `[limits]`
    /// and the HTTP client a reload builds).
    pub(crate) fn observer(&self) -> Arc<dyn Observer> {
        self.observer.clone()
    }

    /// How many vaults have buckets here (tests).
    #[cfg(test)]
    pub(crate) fn vault_buckets(&self) -> usize {
        self.vaults.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// `inner` paced by its vault's budgets (or `inner` itself when pacing is off).
    pub fn store(&self, inner: Arc<dyn SecretStore>) -> Arc<dyn SecretStore> {
        let inner: Arc<dyn SecretStore> = match &self.fence {
            Some(fence) => Arc::new(FencedStore {
                inner,
                fence: fence.clone(),
            }),
            None => inner,
        };
        if !self.config.enabled {
            return inner;
        }
        let key = crate::config::normalize_vault(inner.vault());
        let buckets = self
            .vaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| VaultBuckets {
                writes: self.config.bucket(
                    "keyvault_write",
                    self.config.vault_writes_per_10s,
                    VAULT_WINDOW,
                    &self.observer,
                ),
                other: self.config.bucket(
                    "keyvault_other",
                    self.config.vault_other_per_10s,
                    VAULT_WINDOW,
                    &self.observer,
                ),
                subscription: self.subscription.clone(),
            })
            .clone();
        Arc::new(LimitedStore { inner, buckets })
    }

    /// `inner` paced by the write budget of `app_and_tenant` (or `inner` when pacing is off).
    pub fn directory(&self, app_and_tenant: &str, inner: Arc<dyn Directory>) -> Arc<dyn Directory> {
        let inner: Arc<dyn Directory> = match &self.fence {
            Some(fence) => Arc::new(FencedDirectory {
                inner,
                fence: fence.clone(),
            }),
            None => inner,
        };
        if !self.config.enabled {
            return inner;
        }
        let writes = self
            .graph
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app_and_tenant.to_ascii_lowercase())
            .or_insert_with(|| {
                self.config.bucket(
                    "graph_write",
                    self.config.graph_writes_per_150s,
                    GRAPH_WINDOW,
                    &self.observer,
                )
            })
            .clone();
        Arc::new(LimitedDirectory {
            inner,
            writes,
            key: app_and_tenant.to_ascii_lowercase(),
        })
    }
}

/// A [`SecretStore`] that waits for its vault's budget before each request.
pub(crate) struct LimitedStore {
    inner: Arc<dyn SecretStore>,
    buckets: VaultBuckets,
}

#[async_trait]
impl SecretStore for LimitedStore {
    async fn latest(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.buckets.acquire(&self.buckets.other, false).await;
        let vault = self.inner.vault();
        self.buckets
            .other
            .learn(vault, self.inner.latest(name))
            .await
    }

    async fn set(&self, name: &str, new: NewVersion<'_>) -> Result<Written, StoreError> {
        // The protocol says which write this is; a secret's name decides nothing.
        let stage = new.step == Step::Stage;
        self.buckets.acquire(&self.buckets.writes, stage).await;
        let vault = self.inner.vault();
        self.buckets
            .writes
            .learn(vault, self.inner.set(name, new))
            .await
    }

    async fn update_tags(&self, name: &str, version: &str, tags: Tags) -> Result<(), StoreError> {
        self.buckets.acquire(&self.buckets.other, false).await;
        let vault = self.inner.vault();
        self.buckets
            .other
            .learn(vault, self.inner.update_tags(name, version, tags))
            .await
    }

    /// Each page is one request of the vault's "other" budget.
    async fn list_page(&self, next: Option<&str>) -> Result<ListPage, StoreError> {
        self.buckets.acquire(&self.buckets.other, false).await;
        let vault = self.inner.vault();
        self.buckets
            .other
            .learn(vault, self.inner.list_page(next))
            .await
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        self.buckets.acquire(&self.buckets.other, false).await;
        let vault = self.inner.vault();
        self.buckets
            .other
            .learn(vault, self.inner.delete(name))
            .await
    }

    async fn deleted_tags(&self, name: &str) -> Result<Option<Tags>, StoreError> {
        self.buckets.acquire(&self.buckets.other, false).await;
        let vault = self.inner.vault();
        self.buckets
            .other
            .learn(vault, self.inner.deleted_tags(name))
            .await
    }

    fn vault(&self) -> &str {
        self.inner.vault()
    }
}

/// A [`Directory`] that waits for its app and tenant's write budget before each reset.
pub(crate) struct LimitedDirectory {
    inner: Arc<dyn Directory>,
    writes: Arc<Bucket>,
    /// The app and tenant whose budget it is (the metrics' `vault` label for Graph).
    key: String,
}

#[async_trait]
impl Directory for LimitedDirectory {
    async fn reset_password(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Applied, DirectoryError> {
        self.writes.acquire(false).await;
        self.writes
            .learn(&self.key, self.inner.reset_password(user, password))
            .await
    }

    async fn user(&self, user: &str) -> Result<UserInfo, DirectoryError> {
        self.inner.user(user).await
    }

    async fn verify(&self, user: &str, password: &Password) -> Result<Verified, DirectoryError> {
        self.inner.verify(user, password).await
    }

    fn tenant(&self) -> Option<&str> {
        self.inner.tenant()
    }
}

/// A [`SecretStore`] behind the leader's fence: an operation is not sent once the fence is
/// closed, and is cut off when the lease could expire.
pub(crate) struct FencedStore {
    inner: Arc<dyn SecretStore>,
    fence: Arc<Fence>,
}

impl FencedStore {
    fn error(&self, cut: Cut) -> StoreError {
        StoreError::Unavailable {
            vault: self.inner.vault().to_owned(),
            detail: cut.to_string(),
            request_id: None,
        }
    }
}

#[async_trait]
impl SecretStore for FencedStore {
    async fn latest(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let r = self.fence.run(self.inner.latest(name)).await;
        r.unwrap_or_else(|c| Err(self.error(c)))
    }

    async fn set(&self, name: &str, new: NewVersion<'_>) -> Result<Written, StoreError> {
        let r = self.fence.run(self.inner.set(name, new)).await;
        r.unwrap_or_else(|c| Err(self.error(c)))
    }

    async fn update_tags(&self, name: &str, version: &str, tags: Tags) -> Result<(), StoreError> {
        let r = self
            .fence
            .run(self.inner.update_tags(name, version, tags))
            .await;
        r.unwrap_or_else(|c| Err(self.error(c)))
    }

    async fn list_page(&self, next: Option<&str>) -> Result<ListPage, StoreError> {
        let r = self.fence.run(self.inner.list_page(next)).await;
        r.unwrap_or_else(|c| Err(self.error(c)))
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let r = self.fence.run(self.inner.delete(name)).await;
        r.unwrap_or_else(|c| Err(self.error(c)))
    }

    async fn deleted_tags(&self, name: &str) -> Result<Option<Tags>, StoreError> {
        let r = self.fence.run(self.inner.deleted_tags(name)).await;
        r.unwrap_or_else(|c| Err(self.error(c)))
    }

    fn vault(&self) -> &str {
        self.inner.vault()
    }
}

/// A [`Directory`] behind the leader's fence (see [`FencedStore`]).
pub(crate) struct FencedDirectory {
    inner: Arc<dyn Directory>,
    fence: Arc<Fence>,
}

fn directory_error(user: &str, cut: Cut) -> DirectoryError {
    match cut {
        Cut::Refused(_) => DirectoryError::NotSent {
            user: user.to_owned(),
            detail: cut.to_string(),
        },
        Cut::TimedOut(_) => DirectoryError::Unknown {
            user: user.to_owned(),
            status: None,
            detail: cut.to_string(),
            request_id: None,
            retry_after: None,
        },
    }
}

#[async_trait]
impl Directory for FencedDirectory {
    async fn reset_password(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Applied, DirectoryError> {
        let r = self
            .fence
            .run(self.inner.reset_password(user, password))
            .await;
        r.unwrap_or_else(|c| Err(directory_error(user, c)))
    }

    async fn user(&self, user: &str) -> Result<UserInfo, DirectoryError> {
        let r = self.fence.run(self.inner.user(user)).await;
        r.unwrap_or_else(|c| Err(directory_error(user, c)))
    }

    async fn verify(&self, user: &str, password: &Password) -> Result<Verified, DirectoryError> {
        let r = self.fence.run(self.inner.verify(user, password)).await;
        r.unwrap_or_else(|c| Err(directory_error(user, c)))
    }

    fn tenant(&self) -> Option<&str> {
        self.inner.tenant()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_never_exceeds_the_limit_in_a_window() {
        for (limit, window) in [
            (300, VAULT_WINDOW),
            (4_000, VAULT_WINDOW),
            (3_000, GRAPH_WINDOW),
        ] {
            for headroom in [0.0, 0.02, 0.1] {
                let b = Budget::new(limit, window, headroom);
                let in_window = b.burst as f64 + window.as_secs_f64() / b.period.as_secs_f64();
                assert!(
                    in_window <= limit as f64 * (1.0 - headroom) + 1e-6,
                    "{limit} {headroom}: {in_window}"
                );
                assert!(in_window >= limit as f64 * (1.0 - headroom) - 2.0);
            }
        }
        assert_eq!(Budget::new(300, VAULT_WINDOW, 0.0).burst, 3);
    }

    /// An observer that keeps every paced wait it is told of.
    #[derive(Default)]
    struct Waits(Mutex<Vec<(&'static str, Duration)>>);

    impl Observer for Waits {
        fn request(&self, _: &'static str, _: Option<u16>, _: Duration) {}

        fn paced(&self, budget: &'static str, waited: Duration) {
            self.0.lock().unwrap().push((budget, waited));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_burst_wait_and_are_counted() {
        let waits = Arc::new(Waits::default());
        // 100 per 10 s: a burst of 1, then one every 101 ms.
        let bucket = Bucket::new(
            "test_budget",
            Budget::new(100, VAULT_WINDOW, 0.0),
            waits.clone(),
        );
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            bucket.acquire(false).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1000), "{took:?}");
        assert!(took < Duration::from_millis(1100), "{took:?}");
        let waits = waits.0.lock().unwrap().clone();
        assert_eq!(waits.len(), 10, "the first went at once, ten waited");
        assert!(waits.iter().all(|(budget, _)| *budget == "test_budget"));
    }

    /// One set that reached the [`Vault`] double.
    struct Set {
        name: String,
        at: tokio::time::Instant,
        urgent: bool,
    }

    /// A vault that keeps every set that reaches it (the secret's name, when, whether it was
    /// urgent), in order; its first `throttled` sets met a 429 the SDK's retry got past.
    #[derive(Default)]
    struct Vault {
        sets: Mutex<Vec<Set>>,
        throttled: std::sync::atomic::AtomicU32,
    }

    impl Vault {
        /// The names of the secrets set, in the order the sets reached the vault.
        fn names(&self) -> Vec<String> {
            self.sets
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.name.clone())
                .collect()
        }
    }

    #[async_trait]
    impl SecretStore for Vault {
        async fn latest(&self, _: &str) -> Result<Option<SecretRecord>, StoreError> {
            Ok(None)
        }

        async fn set(&self, name: &str, _: NewVersion<'_>) -> Result<Written, StoreError> {
            use std::sync::atomic::Ordering;
            if self
                .throttled
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                crate::observe::note_throttled();
            }
            self.sets.lock().unwrap().push(Set {
                name: name.to_owned(),
                at: tokio::time::Instant::now(),
                urgent: is_urgent(),
            });
            Ok(Written {
                version: "v".into(),
                request_id: None,
            })
        }

        async fn update_tags(&self, _: &str, _: &str, _: Tags) -> Result<(), StoreError> {
            Ok(())
        }

        fn vault(&self) -> &str {
            "https://kv.vault.azure.net/"
        }
    }

    #[tokio::test(start_paused = true)]
    async fn commits_pass_ahead_of_stages_whatever_the_secret_is_called() {
        let limiter = Limiter::new(
            LimitsConfig {
                vault_writes_per_10s: 100,
                headroom: 0.0,
                ..Default::default()
            },
            crate::observe::unobserved(),
        );
        let inner = Arc::new(Vault::default());
        let store = limiter.store(inner.clone());
        let password = Password::new("Aa1!aaaaaaaaaaaa".into());
        let set = |name: &'static str, step: Step| {
            let (store, password) = (store.clone(), password.clone());
            tokio::spawn(async move {
                let new = NewVersion {
                    value: &password,
                    tags: Tags::new(),
                    expires: None,
                    step,
                };
                store.set(name, new).await.unwrap();
            })
        };
        // The burst of one goes at once; three more stages queue behind it. A commit that
        // comes last passes the stages still queued, though its secret's name ends in
        // `-pending` too (a configured secret may be called so).
        let mut tasks = Vec::new();
        for (name, step) in [
            ("s0-pending", Step::Stage),
            ("s1-pending", Step::Stage),
            ("s2-pending", Step::Stage),
            ("s3-pending", Step::Stage),
            ("db-pending", Step::Commit),
        ] {
            tasks.push(set(name, step));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            inner.names(),
            [
                "s0-pending",
                "s1-pending",
                "db-pending",
                "s2-pending",
                "s3-pending"
            ],
            "the commit waited behind the stages"
        );
    }

    /// With `[ha]`, nothing reaches the store unless the leader's fence is open, with pacing
    /// on or off; a write sent while it is open goes through.
    #[tokio::test(start_paused = true)]
    async fn a_closed_fence_sends_nothing_and_an_open_one_lets_writes_through() {
        for enabled in [true, false] {
            let fence = Arc::new(Fence::new());
            let limiter = Limiter::new(
                LimitsConfig {
                    enabled,
                    ..LimitsConfig::default()
                },
                crate::observe::unobserved(),
            )
            .with_fence(Some(fence.clone()));
            let inner = Arc::new(Vault::default());
            let store = limiter.store(inner.clone());
            let password = Password::new("Aa1!aaaaaaaaaaaa".into());
            let new = || NewVersion {
                value: &password,
                tags: Tags::new(),
                expires: None,
                step: Step::Stage,
            };
            let e = store.set("s-pending", new()).await.unwrap_err();
            assert!(
                matches!(&e, StoreError::Unavailable { detail, .. } if detail.contains("not sent")),
                "{e}"
            );
            // A listing (start-up, drift check) is behind the fence too.
            let e = store.list_page(None).await.unwrap_err();
            assert!(
                matches!(&e, StoreError::Unavailable { detail, .. } if detail.contains("not sent")),
                "{e}"
            );
            fence.renewed(
                tokio::time::Instant::now(),
                Duration::from_secs(10),
                Duration::from_secs(15),
            );
            store.set("s-pending", new()).await.unwrap();
            // Past the deadline without a renewal: refused again.
            tokio::time::advance(Duration::from_secs(11)).await;
            assert!(store.set("s-pending", new()).await.is_err());
            assert_eq!(inner.names(), ["s-pending"], "pacing {enabled}");
        }
    }

    /// The most requests among `times` in any window of `window` (each window starting at
    /// a request: the fullest window starts at one).
    fn fullest(times: &[tokio::time::Instant], window: Duration) -> usize {
        let mut times = times.to_vec();
        times.sort();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t - times[i] < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// `sets` sets at once through `store`, `urgent_ones` of them urgent.
    async fn burst(store: &Arc<dyn SecretStore>, sets: usize, urgent_ones: usize) {
        let password = Password::new("Aa1!aaaaaaaaaaaa".into());
        let mut tasks = Vec::new();
        for i in 0..sets {
            let (store, password) = (store.clone(), password.clone());
            let work = async move {
                let new = NewVersion {
                    value: &password,
                    tags: Tags::new(),
                    expires: None,
                    step: Step::Commit,
                };
                store.set("s", new).await.unwrap();
            };
            tasks.push(if i < urgent_ones {
                tokio::spawn(urgent(work))
            } else {
                tokio::spawn(work)
            });
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_never_exceeds_the_budget_less_the_reserve_in_any_window() {
        // 100 sets per 10 s, a quarter reserved: keyturn's share is 75.
        let limiter = Limiter::new(
            LimitsConfig {
                vault_writes_per_10s: 100,
                headroom: 0.0,
                reserve: 0.25,
                ..Default::default()
            },
            crate::observe::unobserved(),
        );
        let inner = Arc::new(Vault::default());
        let store = limiter.store(inner.clone());
        burst(&store, 300, 0).await;
        let ordinary: Vec<_> = inner.sets.lock().unwrap().iter().map(|s| s.at).collect();
        let most = fullest(&ordinary, VAULT_WINDOW);
        assert!(most <= 75, "{most} sets in one window, share 75");
        // Not trivially: it does use its share (300 sets over about four windows).
        assert!(most >= 70, "only {most} sets in the fullest window");
        let took = *ordinary.iter().max().unwrap() - *ordinary.iter().min().unwrap();
        assert!(took >= Duration::from_secs(39), "{took:?}");

        // Urgent sets may use the whole budget; mixed with ordinary ones, all of them
        // together stay within it and the ordinary ones within their share.
        tokio::time::advance(Duration::from_secs(60)).await;
        inner.sets.lock().unwrap().clear();
        burst(&store, 400, 200).await;
        let all = inner.sets.lock().unwrap();
        let times: Vec<_> = all.iter().map(|s| s.at).collect();
        let ordinary: Vec<_> = all.iter().filter(|s| !s.urgent).map(|s| s.at).collect();
        let urgent_only: Vec<_> = all.iter().filter(|s| s.urgent).map(|s| s.at).collect();
        assert_eq!((ordinary.len(), urgent_only.len()), (200, 200));
        let most = fullest(&times, VAULT_WINDOW);
        assert!(most <= 100, "{most} sets in one window, budget 100");
        assert!(
            most > 75,
            "urgent sets used the reserve: {most} in the fullest window"
        );
        let most = fullest(&ordinary, VAULT_WINDOW);
        assert!(most <= 75, "{most} ordinary sets in one window, share 75");
    }

    /// An observer that keeps the back-offs it is told of.
    #[derive(Default)]
    struct Backoffs(Mutex<Vec<(&'static str, String, f64)>>);

    impl Observer for Backoffs {
        fn request(&self, _: &'static str, _: Option<u16>, _: Duration) {}
        fn paced(&self, _: &'static str, _: Duration) {}
        fn unpredicted_throttle(&self, budget: &'static str, vault: &str, factor: f64) {
            self.0
                .lock()
                .unwrap()
                .push((budget, vault.to_owned(), factor));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unpredicted_429_halves_the_rate_which_then_recovers() {
        let observed = Arc::new(Backoffs::default());
        let limiter = Limiter::new(
            LimitsConfig {
                vault_writes_per_10s: 100,
                headroom: 0.0,
                reserve: 0.0,
                ..Default::default()
            },
            observed.clone(),
        );
        let inner = Arc::new(Vault {
            throttled: 1.into(),
            ..Default::default()
        });
        let store = limiter.store(inner);
        // One set met a 429: the vault's write rate halves, and the metrics are told.
        burst(&store, 1, 0).await;
        assert_eq!(
            *observed.0.lock().unwrap(),
            [(
                "keyvault_write",
                "https://kv.vault.azure.net/".to_owned(),
                AIMD_DECREASE
            )]
        );
        // 100 sets at about half the rate (regaining 5 % per 10 s): over 15 s, where the
        // full rate (99 after the burst at one per 101 ms) takes 10 s.
        let start = tokio::time::Instant::now();
        burst(&store, 100, 0).await;
        let slow = start.elapsed();
        assert!(slow >= Duration::from_secs(15), "{slow:?}");
        // 150 s later the rate is whole again.
        tokio::time::advance(Duration::from_secs(150)).await;
        let start = tokio::time::Instant::now();
        burst(&store, 100, 0).await;
        let fast = start.elapsed();
        assert!(fast <= Duration::from_millis(10_500), "{fast:?}");
        assert_eq!(observed.0.lock().unwrap().len(), 1, "one 429, one back-off");
    }

    #[tokio::test(start_paused = true)]
    async fn back_offs_count_once_per_burst_of_429s_and_stop_at_the_floor() {
        let bucket = Bucket::new(
            "b",
            Budget::new(100, VAULT_WINDOW, 0.0),
            crate::observe::unobserved(),
        );
        assert_eq!(bucket.factor(), 1.0);
        assert_eq!(bucket.back_off(), 0.5);
        // Concurrent 429s of one burst count once.
        assert_eq!(bucket.back_off(), 0.5);
        tokio::time::advance(AIMD_HOLD).await;
        let f = bucket.back_off();
        assert!((0.25..0.26).contains(&f), "{f}");
        tokio::time::advance(AIMD_HOLD).await;
        assert_eq!(bucket.back_off(), AIMD_FLOOR);
        // Additive recovery: 0.05 per 10 s.
        tokio::time::advance(Duration::from_secs(50)).await;
        let f = bucket.factor();
        assert!((0.49..0.51).contains(&f), "{f}");
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(bucket.factor(), 1.0);
    }

    #[test]
    fn bad_values_are_problems() {
        let c = LimitsConfig {
            vault_writes_per_10s: 0,
            headroom: 1.5,
            ..Default::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(keys, ["limits.vault_writes_per_10s", "limits.headroom"]);
        let c = LimitsConfig {
            vault_subscription_per_10s: 0,
            ..Default::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(keys, ["limits.vault_subscription_per_10s"]);
        assert!(LimitsConfig::default().problems().is_empty());
        for reserve in [1.0, -0.1, f64::NAN] {
            let c = LimitsConfig {
                reserve,
                ..Default::default()
            };
            let keys: Vec<_> = c.problems().into_iter().map(|p| p.0).collect();
            assert_eq!(keys, ["limits.reserve"], "reserve {reserve}");
        }
        // With the headroom, a reserve that leaves keyturn no request of a small budget.
        let c = LimitsConfig {
            graph_writes_per_150s: 2,
            reserve: 0.5,
            headroom: 0.1,
            ..Default::default()
        };
        let problems = c.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].1.contains("limits.graph_writes_per_150s"),
            "{problems:?}"
        );
        assert!(LimitsConfig {
            reserve: 0.0,
            ..Default::default()
        }
        .problems()
        .is_empty());
    }

    /// Key Vault's subscription-wide limit holds across vaults: two vaults, each far under
    /// its own budget, together wait for the subscription's.
    #[tokio::test(start_paused = true)]
    async fn every_vault_shares_the_subscription_budget() {
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::ManualClock::new(
            time::OffsetDateTime::UNIX_EPOCH,
        ));
        // 100 per 10 s for all vaults (a burst of 1, then one every 101 ms); each vault alone
        // could do 4,000.
        let limiter = Limiter::new(
            LimitsConfig {
                vault_subscription_per_10s: 100,
                headroom: 0.0,
                reserve: 0.0,
                ..LimitsConfig::default()
            },
            crate::observe::unobserved(),
        );
        let stores: Vec<_> = ["https://a.vault.azure.net/", "https://b.vault.azure.net/"]
            .into_iter()
            .map(|url| {
                limiter.store(Arc::new(crate::memory::MemoryVault::new(
                    url,
                    clock.clone(),
                )))
            })
            .collect();
        let start = tokio::time::Instant::now();
        for i in 0..11 {
            stores[i % 2].latest("s").await.unwrap();
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1000), "{took:?}");
        assert!(took < Duration::from_millis(1100), "{took:?}");
    }

    #[test]
    fn one_vault_spelt_two_ways_shares_its_buckets() {
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::ManualClock::new(
            time::OffsetDateTime::UNIX_EPOCH,
        ));
        let limiter = Limiter::new(LimitsConfig::default(), crate::observe::unobserved());
        for url in [
            "https://kv.vault.azure.net/",
            "https://KV.vault.azure.net:443",
            "https://kv.vault.azure.net./",
        ] {
            limiter.store(Arc::new(crate::memory::MemoryVault::new(
                url,
                clock.clone(),
            )));
        }
        assert_eq!(limiter.vault_buckets(), 1);
        limiter.store(Arc::new(crate::memory::MemoryVault::new(
            "https://kv.vault.azure.net:8443/",
            clock,
        )));
        assert_eq!(
            limiter.vault_buckets(),
            2,
            "another port is another endpoint"
        );
    }
}
