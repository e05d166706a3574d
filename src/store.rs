//! The secret store: where passwords live (Azure Key Vault in production).
//!
//! The rotation protocol only needs three operations: read the latest version of a
//! secret, write a new version, and change the tags of a version. Errors say what the
//! caller should do next ([`NextStep`]), so the protocol never inspects HTTP details.

use crate::password::Password;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// Tags on a secret version (Key Vault allows 15, names and values up to 512 characters).
pub type Tags = BTreeMap<String, String>;

/// Tag names keyturn writes (see `docs/protocol.md`).
pub mod tag {
    /// `pending` | `committed` | `abandoned`, on staging versions only.
    pub const STATE: &str = "keyturn-state";
    /// The UUID of the rotation that wrote the version.
    pub const ROTATION_ID: &str = "keyturn-rotation-id";
    /// The configured account name.
    pub const ACCOUNT: &str = "keyturn-account";
    /// RFC 3339 UTC time at which the password became Entra's (set after Graph accepted it).
    pub const ROTATED_AT: &str = "keyturn-rotated-at";
    /// What started the rotation: schedule, catch-up, signal, socket, recovery, drift, cli.
    pub const TRIGGER: &str = "keyturn-trigger";
    /// Set by `keyturn retire` on the secret's latest version (and the staging secret's)
    /// before it soft-deletes them: the time of the retirement (RFC 3339). A secret (or a
    /// deleted secret) whose latest version carries it belongs to a retired account, which
    /// the daemon never rotates or re-creates.
    pub const RETIRED: &str = "keyturn-retired";
    /// Who retired it, why, the ticket, and what was done to the user (`disabled`,
    /// `deleted`, `none`), next to [`RETIRED`].
    pub const RETIRED_BY: &str = "keyturn-retired-by";
    pub const RETIRED_REASON: &str = "keyturn-retired-reason";
    pub const RETIRED_TICKET: &str = "keyturn-retired-ticket";
    pub const RETIRED_USER: &str = "keyturn-retired-user";
    /// Set by the rotation of `keyturn adopt` (the one that took the account under
    /// management) on the versions it writes, staging and committed: the time of the write
    /// (RFC 3339). A record only: recovery and the schedule do not read it (a recovery that
    /// completes an adoption's rotation carries it over).
    pub const ADOPTED: &str = "keyturn-adopted";

    /// Staging state: written, not yet known to be in Entra and in `<secret>`.
    pub const PENDING: &str = "pending";
    /// Staging state: the password reached `<secret>`.
    pub const COMMITTED: &str = "committed";
    /// Staging state: Entra provably never took the password.
    pub const ABANDONED: &str = "abandoned";
}

/// The `contentType` of every version keyturn writes.
pub(crate) const CONTENT_TYPE: &str = "password";

/// What the staging secret's name adds to `<secret>`.
pub(crate) const STAGING_SUFFIX: &str = "-pending";

/// The prefix of the probe secrets `keyturn doctor --write-probe` sets and deletes (lowercase;
/// the configuration refuses account secrets that start with it, in any case, so a probe can
/// never be an account's secret or its staging secret).
pub(crate) const PROBE_PREFIX: &str = "keyturn-doctor-probe-";

/// The detail of an `account.retired` record, from the tags `keyturn retire` set on the
/// secrets ([`tag::RETIRED`] and its companions).
pub(crate) fn retired_detail(tags: &Tags) -> String {
    let get = |k: &str| tags.get(k).map(String::as_str).unwrap_or("unknown");
    let user = match get(tag::RETIRED_USER) {
        "deleted" => "user deleted (Entra keeps it 30 days in its deleted items)",
        "disabled" => "user disabled",
        "missing" => "user not found in Entra",
        _ => "user left as it was",
    };
    format!(
        "retired at {} by {}: {user}; its secrets tagged keyturn-retired and soft-deleted",
        get(tag::RETIRED),
        get(tag::RETIRED_BY)
    )
}

/// The staging (write-ahead) secret's name for `secret`: `<secret>-pending`.
pub(crate) fn staging_name(secret: &str) -> String {
    format!("{secret}{STAGING_SUFFIX}")
}

/// One version of a secret, with its value.
#[derive(Debug, Clone)]
pub struct SecretRecord {
    /// Version id (32 hex characters in Key Vault).
    pub version: String,
    /// The secret's value.
    pub value: Password,
    /// The version's tags.
    pub tags: Tags,
    /// When Key Vault created the version (stands in for `keyturn-rotated-at` on adopted secrets).
    pub created: Option<OffsetDateTime>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.exp`.
    pub expires: Option<OffsetDateTime>,
}

impl SecretRecord {
    /// The value of a tag, if present.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags.get(name).map(String::as_str)
    }
}

/// A secret's latest version as a vault listing shows it (`GET /secrets`, Key Vault's
/// `SecretItem`): its name, tags and attributes, never its value nor its version id (the
/// listing's `id` is the secret's, not the version's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSecret {
    /// The secret's name.
    pub name: String,
    /// The latest version's tags.
    pub tags: Tags,
    /// `attributes.created` of the latest version.
    pub created: Option<OffsetDateTime>,
    /// `attributes.enabled`.
    pub enabled: bool,
}

impl ListedSecret {
    /// The value of a tag, if present.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags.get(name).map(String::as_str)
    }
}

/// One page of a vault listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The secrets on this page (Key Vault sends up to 25).
    pub items: Vec<ListedSecret>,
    /// Where the next page is (Key Vault's `nextLink`); `None` on the last page.
    pub next: Option<String>,
}

/// A vault's secrets by name, as its listing showed them ([`list_all`]).
pub type Listing = std::collections::HashMap<String, ListedSecret>;

/// Lists each vault of `stores` once (stores with the same [`SecretStore::vault`] list the
/// same secrets), `concurrency` vaults at once, keyed by `vault()`. A vault that cannot be
/// listed is `None` (its accounts are read one by one instead), with a warning naming it.
pub async fn list_vaults(
    stores: impl IntoIterator<Item = std::sync::Arc<dyn SecretStore>>,
    concurrency: usize,
) -> std::collections::HashMap<String, Option<Listing>> {
    use futures::StreamExt;
    let mut unique = std::collections::HashMap::new();
    for store in stores {
        unique.entry(store.vault().to_owned()).or_insert(store);
    }
    futures::stream::iter(unique)
        .map(|(vault, store)| async move {
            let listed = list_all(store.as_ref()).await;
            if let Err(e) = &listed {
                tracing::warn!(vault = %vault, error = %e, "cannot list the vault's secrets; reading each account's secrets instead");
            }
            (vault, listed.ok())
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Every secret of a vault, by name, read page by page through [`SecretStore::list_page`]
/// (so a rate-limited store paces each page).
pub async fn list_all(
    store: &dyn SecretStore,
) -> Result<std::collections::HashMap<String, ListedSecret>, StoreError> {
    let mut all = std::collections::HashMap::new();
    let mut next: Option<String> = None;
    loop {
        let page = store.list_page(next.as_deref()).await?;
        all.extend(page.items.into_iter().map(|i| (i.name.clone(), i)));
        match page.next {
            // A link that repeats the one just read would loop forever: stop there.
            Some(link) if next.as_deref() != Some(link.as_str()) => next = Some(link),
            _ => return Ok(all),
        }
    }
}

/// A version to write.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    /// The password to store.
    pub value: &'a Password,
    /// Its tags.
    pub tags: Tags,
    /// `attributes.exp`, so Key Vault warns when rotations stall.
    pub expires: Option<OffsetDateTime>,
    /// Which step of a rotation writes it (a rate limit lets commits pass ahead of stages).
    pub step: Step,
}

/// Which step of a rotation a write is: the protocol says so with each [`NewVersion`],
/// rather than leaving a store to guess it from the secret's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A new password into the staging secret (`<secret>-pending`), before Entra has it.
    Stage,
    /// The password Entra took into `<secret>`, where consumers read it.
    Commit,
}

/// What Key Vault said to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The new version's id.
    pub version: String,
    /// `x-ms-request-id`, for the audit record.
    pub request_id: Option<String>,
}

/// What the caller should do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// A passing condition (throttling, 5xx, network): try again later.
    RetryLater,
    /// Credentials are missing, wrong or expired: fix them; retrying soon will not help.
    FixCredentials,
    /// Configuration or permissions are wrong: alert an operator.
    Alert,
}

/// A failed secret-store operation. Messages never contain a secret value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("Key Vault {vault} throttled the request (HTTP 429, request id {}); keyturn backs off and retries", opt(.request_id))]
    Throttled {
        vault: String,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    #[error("Key Vault {vault} is unavailable ({detail}, request id {}); keyturn retries later", opt(.request_id))]
    Unavailable {
        vault: String,
        detail: String,
        request_id: Option<String>,
    },
    #[error("Key Vault {vault} refused access (HTTP {status} {code}, request id {}): give keyturn's identity the 'Key Vault Secrets Officer' role on the vault", opt(.request_id))]
    Forbidden {
        vault: String,
        status: u16,
        code: String,
        request_id: Option<String>,
    },
    #[error("could not authenticate to Key Vault {vault}: {detail}; check the identity's tenant, client id and secret")]
    Auth { vault: String, detail: String },
    #[error("secret {name} in Key Vault {vault} is deleted but recoverable (request id {}): recover it (`az keyvault secret recover`) or purge it, then try again", opt(.request_id))]
    Deleted {
        vault: String,
        name: String,
        request_id: Option<String>,
    },
    #[error("Key Vault {vault} rejected the request (HTTP {status} {code}: {message}, request id {})", opt(.request_id))]
    Rejected {
        vault: String,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error(
        "Key Vault {vault} sent an answer keyturn cannot read ({detail}); keyturn retries later"
    )]
    BadAnswer { vault: String, detail: String },
}

pub(crate) fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("none")
}

impl StoreError {
    /// What to do next.
    pub fn next_step(&self) -> NextStep {
        match self {
            StoreError::Throttled { .. }
            | StoreError::Unavailable { .. }
            | StoreError::BadAnswer { .. } => NextStep::RetryLater,
            StoreError::Auth { .. } => NextStep::FixCredentials,
            StoreError::Forbidden { .. }
            | StoreError::Deleted { .. }
            | StoreError::Rejected { .. } => NextStep::Alert,
        }
    }

    /// The Azure request id, if the service answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StoreError::Throttled { request_id, .. }
            | StoreError::Unavailable { request_id, .. }
            | StoreError::Forbidden { request_id, .. }
            | StoreError::Deleted { request_id, .. }
            | StoreError::Rejected { request_id, .. } => request_id.as_deref(),
            StoreError::Auth { .. } | StoreError::BadAnswer { .. } => None,
        }
    }

    /// The HTTP status, if the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            StoreError::Throttled { .. } => Some(429),
            StoreError::Forbidden { status, .. } | StoreError::Rejected { status, .. } => {
                Some(*status)
            }
            StoreError::Deleted { .. } => Some(409),
            StoreError::Unavailable { .. }
            | StoreError::Auth { .. }
            | StoreError::BadAnswer { .. } => None,
        }
    }

    /// The Azure error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Forbidden { code, .. } | StoreError::Rejected { code, .. } => Some(code),
            StoreError::Throttled { .. } => Some("Throttled"),
            StoreError::Deleted { .. } => Some("ObjectIsDeletedButRecoverable"),
            StoreError::Unavailable { .. }
            | StoreError::Auth { .. }
            | StoreError::BadAnswer { .. } => None,
        }
    }

    /// A short machine-readable kind for audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Throttled { .. } => "throttled",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Forbidden { .. } => "forbidden",
            StoreError::Auth { .. } => "auth",
            StoreError::Deleted { .. } => "deleted",
            StoreError::Rejected { .. } => "rejected",
            StoreError::BadAnswer { .. } => "bad_answer",
        }
    }
}

/// A place that keeps versioned secrets.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The latest version of `name`, with its value; `None` when no such secret exists.
    async fn latest(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Writes a new version of `name` (creating the secret if needed).
    async fn set(&self, name: &str, new: NewVersion<'_>) -> Result<Written, StoreError>;
    /// Replaces the tags of one version (the value does not change; no new version).
    async fn update_tags(&self, name: &str, version: &str, tags: Tags) -> Result<(), StoreError>;
    /// One page of the vault's listing: every secret's latest version, properties only
    /// (`next`: `None` for the first page, else the previous page's [`ListPage::next`]).
    /// A store that cannot list says so with an error; the daemon then reads each
    /// account's secrets instead.
    async fn list_page(&self, next: Option<&str>) -> Result<ListPage, StoreError> {
        let _ = next;
        Err(StoreError::Rejected {
            vault: self.vault().to_owned(),
            status: 0,
            code: "ListingUnsupported".into(),
            message: "this secret store cannot list its secrets".into(),
            request_id: None,
        })
    }
    /// Soft-deletes `name` (every version; Key Vault keeps it recoverable for its retention
    /// period); `false` when no such secret exists. Only `keyturn retire` deletes.
    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let _ = name;
        Err(unsupported(self.vault(), "delete secrets"))
    }
    /// The tags of the deleted secret `name` (its latest version's, as Key Vault keeps them
    /// while it is recoverable); `None` when no deleted secret has that name. How the daemon
    /// learns that an account whose secret is gone was retired (`tag::RETIRED`).
    async fn deleted_tags(&self, name: &str) -> Result<Option<Tags>, StoreError> {
        let _ = name;
        Ok(None)
    }
    /// The vault's URL or name, for messages and audit records.
    fn vault(&self) -> &str;
}

/// The error of an operation a store does not offer.
fn unsupported(vault: &str, what: &str) -> StoreError {
    StoreError::Rejected {
        vault: vault.to_owned(),
        status: 0,
        code: "Unsupported".into(),
        message: format!("this secret store cannot {what}"),
        request_id: None,
    }
}
