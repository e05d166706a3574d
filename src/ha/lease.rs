//! The lease blob through the official `azure_storage_blob` SDK: acquire (creating the blob
//! when it is missing), record the holder in the blob's metadata, renew, release, and read
//! who holds it. Azure's rules (REST "Lease Blob"): a lease lasts 15 to 60 s; acquiring with
//! the holder's own lease id renews it; renewing an expired lease works while no one else
//! has taken it; a 409 on renew means another holder (or none) now has it.

use crate::azure::blob::{error_code, exists_already, failure_detail};
use crate::azure::{client_options_for, Http, SetupError};
use crate::config::NetworkConfig;
use azure_core::credentials::TokenCredential;
use azure_core::http::{RequestContent, StatusCode};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientReleaseLeaseOptions, BlobClientRenewLeaseOptions, BlobClientSetMetadataOptions,
    BlockBlobClientUploadOptions, LeaseState,
};
use azure_storage_blob::{BlobClient, BlobClientOptions};
use std::collections::HashMap;
use std::sync::Arc;

/// The metadata key that names the lease's holder.
pub(crate) const HOLDER_KEY: &str = "keyturn_holder";

/// Why a lease operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LeaseError {
    /// Azure said this replica does not hold the lease (HTTP 409/412/404 on renew).
    #[error("the lease is no longer ours: {0}")]
    Lost(String),
    /// No answer, or one that decides nothing (5xx, 403, a timeout): try again.
    #[error("{0}")]
    Failed(String),
}

/// What a look at the blob showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Nobody holds the lease and nobody let it run out: the blob is missing, or its lease
    /// is `available` (never taken, or released at a graceful stop).
    pub free: bool,
    /// The holder recorded in the metadata, while the lease is held.
    pub holder: Option<String>,
}

/// One replica's handle on the lease blob.
pub(crate) struct BlobLease {
    client: BlobClient,
    /// This replica's lease id (a random UUID), proposed at each acquisition.
    id: String,
    /// The lease's duration in seconds.
    seconds: i32,
}

fn status_and_code(e: &azure_core::Error) -> (Option<StatusCode>, Option<String>) {
    (e.http_status(), error_code(e))
}

impl BlobLease {
    /// A handle on the blob at `url`, signed in with `credential`, sending through `http`.
    pub(crate) fn new(
        url: url::Url,
        credential: Arc<dyn TokenCredential>,
        http: &Http,
        net: &NetworkConfig,
        seconds: i32,
    ) -> Result<BlobLease, SetupError> {
        let options = BlobClientOptions {
            client_options: client_options_for(http, None, net),
            ..Default::default()
        };
        let client = BlobClient::new(url, Some(credential), Some(options)).map_err(|e| {
            SetupError::Identity {
                identity: "ha".into(),
                detail: format!("ha.lease_url cannot be used: {e}"),
                source: None,
            }
        })?;
        Ok(BlobLease {
            client,
            id: uuid::Uuid::new_v4().to_string(),
            seconds,
        })
    }

    /// Reads the blob's lease state and holder.
    pub(crate) async fn look(&self) -> Result<Seen, LeaseError> {
        match self.client.get_properties(None).await {
            Ok(r) => {
                let state = r.lease_state().ok().flatten();
                let leased = matches!(state, Some(LeaseState::Leased) | Some(LeaseState::Breaking));
                let holder = r
                    .metadata()
                    .ok()
                    .and_then(|m| m.get(HOLDER_KEY).cloned())
                    .filter(|_| leased);
                Ok(Seen {
                    free: matches!(state, Some(LeaseState::Available) | None),
                    holder,
                })
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                let (_, code) = status_and_code(&e);
                if code.as_deref() == Some("ContainerNotFound") {
                    return Err(LeaseError::Failed(format!(
                        "{}; create the container named in ha.lease_url",
                        failure_detail("reading the lease blob", &e)
                    )));
                }
                Ok(Seen {
                    free: true,
                    holder: None,
                })
            }
            Err(e) => Err(LeaseError::Failed(failure_detail(
                "reading the lease blob",
                &e,
            ))),
        }
    }

    /// Tries to take the lease: `Ok(true)` taken, `Ok(false)` another replica holds it.
    /// Creates the (empty) blob first when it is missing.
    pub(crate) async fn acquire(&self) -> Result<bool, LeaseError> {
        for attempt in 0..2 {
            let options = BlobClientAcquireLeaseOptions {
                proposed_lease_id: Some(self.id.clone()),
                ..Default::default()
            };
            match self.client.acquire_lease(self.seconds, Some(options)).await {
                Ok(_) => return Ok(true),
                Err(e) => {
                    let (status, code) = status_and_code(&e);
                    if status == Some(StatusCode::Conflict) {
                        return Ok(false);
                    }
                    if status == Some(StatusCode::NotFound)
                        && code.as_deref() == Some("BlobNotFound")
                        && attempt == 0
                    {
                        self.create().await?;
                        continue;
                    }
                    return Err(LeaseError::Failed(failure_detail(
                        "acquiring the lease",
                        &e,
                    )));
                }
            }
        }
        Ok(false)
    }

    /// Creates the blob, empty, unless it exists.
    async fn create(&self) -> Result<(), LeaseError> {
        let options = BlockBlobClientUploadOptions {
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        match self
            .client
            .upload(RequestContent::from(Vec::new()), Some(options))
            .await
        {
            Ok(_) => Ok(()),
            // Another replica created it first.
            Err(e) if exists_already(&e) => Ok(()),
            Err(e) => Err(LeaseError::Failed(failure_detail(
                "creating the lease blob",
                &e,
            ))),
        }
    }

    /// Records `holder` in the blob's metadata (while holding the lease).
    pub(crate) async fn record_holder(&self, holder: &str) -> Result<(), LeaseError> {
        let metadata = HashMap::from([(HOLDER_KEY.to_owned(), holder.to_owned())]);
        let options = BlobClientSetMetadataOptions {
            lease_id: Some(self.id.clone()),
            ..Default::default()
        };
        self.client
            .set_metadata(&metadata, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| LeaseError::Failed(failure_detail("recording the holder", &e)))
    }

    /// Renews the lease.
    pub(crate) async fn renew(&self) -> Result<(), LeaseError> {
        match self
            .client
            .renew_lease(
                self.id.clone(),
                Some(BlobClientRenewLeaseOptions::default()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.http_status(),
                    Some(StatusCode::Conflict)
                        | Some(StatusCode::PreconditionFailed)
                        | Some(StatusCode::NotFound)
                ) =>
            {
                Err(LeaseError::Lost(failure_detail("renewing the lease", &e)))
            }
            Err(e) => Err(LeaseError::Failed(failure_detail("renewing the lease", &e))),
        }
    }

    /// Releases the lease, so that another replica may take it at once.
    pub(crate) async fn release(&self) -> Result<(), LeaseError> {
        self.client
            .release_lease(
                self.id.clone(),
                Some(BlobClientReleaseLeaseOptions::default()),
            )
            .await
            .map(|_| ())
            .map_err(|e| LeaseError::Failed(failure_detail("releasing the lease", &e)))
    }
}
