//! The append blob through the official `azure_storage_blob` SDK: find the current part
//! (`BLOB`, then `BLOB.1`, `BLOB.2`, … once one is full), read its tail, create a part, and
//! append a block at a stated position (`x-ms-blob-condition-appendpos`).
//!
//! Azure's rules (REST "Append Block"): a block is at most 4 MiB (100 MiB from API version
//! 2022-11-02; keyturn stays at 4 MiB, which every version accepts), an append blob holds at
//! most 50,000 blocks (then HTTP 409 `BlockCountExceedsLimit`), and a block whose
//! `appendpos` is not the blob's length is refused with HTTP 412
//! `AppendPositionConditionNotMet` and not written.

use crate::audit::chain::{self, LineError};
use crate::azure::blob::{error_code, exists_already, failure_detail};
use crate::azure::{client_options_for, Http, SetupError};
use crate::config::NetworkConfig;
use azure_core::credentials::TokenCredential;
use azure_core::http::{RequestContent, StatusCode};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders,
};
use azure_storage_blob::{BlobClient, BlobClientOptions};
use std::sync::Arc;

/// The most bytes keyturn appends in one block (Azure's limit before API 2022-11-02).
pub(crate) const MAX_BLOCK: usize = 4 * 1024 * 1024;
/// The most blocks an append blob holds; keyturn starts the next part at this count.
pub(crate) const MAX_BLOCKS: u32 = 50_000;
/// How much of a part's end is read first to find its last record (doubled until a whole
/// record is in it).
const TAIL_READ: u64 = 64 * 1024;

/// Why a request about the append blob failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RemoteError {
    /// The block was not written: the blob's length is not the position stated (HTTP 412).
    #[error("the append blob's length is not the position keyturn stated: {0}")]
    Position(String),
    /// The part holds 50,000 blocks (HTTP 409 `BlockCountExceedsLimit`): start the next.
    #[error("the append blob is full: {0}")]
    Full(String),
    /// The blob's content is not a chain keyturn can continue.
    #[error("{0}")]
    Content(String),
    /// No answer, or one that decides nothing: try again later.
    #[error("{0}")]
    Failed(String),
}

/// The end of the chain in the blob, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The current part: 0 for `BLOB`, k for `BLOB.k`.
    pub part: u32,
    /// Its length in bytes: the position of the next append.
    pub len: u64,
    /// Its committed blocks.
    pub blocks: u32,
    /// The chain's last record (`seq`, `hash`), if any (in this part or the one before).
    pub last: Option<(u64, String)>,
    /// The content keys (`chain::content_key`) of the records at the end of the current
    /// part, oldest first: what a lost append may have written.
    pub recent: Vec<String>,
}

/// One blob name's parts.
pub(crate) struct Remote {
    base: String,
    credential: Arc<dyn TokenCredential>,
    options: BlobClientOptions,
}

impl Remote {
    /// The blob at `url` (checked by `config::blob_url_problem`), signed in with `credential`.
    pub(crate) fn new(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        http: &Http,
        net: &NetworkConfig,
    ) -> Result<Remote, SetupError> {
        let r = Remote {
            base: url.trim_end_matches('/').to_owned(),
            credential,
            options: BlobClientOptions {
                client_options: client_options_for(http, None, net),
                ..Default::default()
            },
        };
        r.client(0)?;
        Ok(r)
    }

    /// The URL of part `k`.
    pub(crate) fn part_url(&self, k: u32) -> String {
        match k {
            0 => self.base.clone(),
            k => format!("{}.{k}", self.base),
        }
    }

    fn client(&self, k: u32) -> Result<BlobClient, SetupError> {
        let bad = |detail: String| SetupError::Identity {
            identity: "audit_blob".into(),
            detail: format!("daemon.audit_blob.url cannot be used: {detail}"),
            source: None,
        };
        let url = url::Url::parse(&self.part_url(k)).map_err(|e| bad(e.to_string()))?;
        BlobClient::new(
            url,
            Some(self.credential.clone()),
            Some(self.options.clone()),
        )
        .map_err(|e| bad(e.to_string()))
    }

    fn blob(&self, k: u32) -> Result<BlobClient, RemoteError> {
        self.client(k)
            .map_err(|e| RemoteError::Failed(e.to_string()))
    }

    /// Part `k`'s length and committed blocks, `None` when it does not exist.
    async fn properties(&self, k: u32) -> Result<Option<(u64, u32)>, RemoteError> {
        match self.blob(k)?.get_properties(None).await {
            Ok(r) => Ok(Some((
                r.content_length().ok().flatten().unwrap_or(0),
                r.blob_committed_block_count()
                    .ok()
                    .flatten()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
            ))),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                if error_code(&e).as_deref() == Some("ContainerNotFound") {
                    return Err(RemoteError::Failed(format!(
                        "{}; create the container named in daemon.audit_blob.url",
                        failure_detail("reading the audit blob", &e)
                    )));
                }
                Ok(None)
            }
            Err(e) => Err(RemoteError::Failed(failure_detail(
                "reading the audit blob",
                &e,
            ))),
        }
    }

    /// Bytes `from..to` of part `k`.
    async fn read(&self, k: u32, from: u64, to: u64) -> Result<Vec<u8>, RemoteError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let options = BlobClientDownloadOptions {
            range: Some((from..to).into()),
            ..Default::default()
        };
        let r = self
            .blob(k)?
            .download(Some(options))
            .await
            .map_err(|e| RemoteError::Failed(failure_detail("reading the audit blob", &e)))?;
        r.body
            .collect()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| RemoteError::Failed(failure_detail("reading the audit blob", &e)))
    }

    /// The whole of part `k`, `None` when it does not exist.
    pub(crate) async fn read_part(&self, k: u32) -> Result<Option<Vec<u8>>, RemoteError> {
        match self.properties(k).await? {
            None => Ok(None),
            Some((len, _)) => self.read(k, 0, len).await.map(Some),
        }
    }

    /// The records that end part `k` (`len` bytes long): at least the last one, oldest
    /// first, as (line, record).
    async fn last_records(
        &self,
        k: u32,
        len: u64,
    ) -> Result<Vec<(String, chain::Record)>, RemoteError> {
        let mut n = TAIL_READ.min(len);
        loop {
            let bytes = self.read(k, len - n, len).await?;
            if bytes.last() != Some(&b'\n') {
                return Err(RemoteError::Content(format!(
                    "{} does not end with a whole record (its last byte is not a newline): it was written by something else than keyturn; run `keyturn audit verify --blob`",
                    self.part_url(k)
                )));
            }
            let text = String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned();
            let mut lines: Vec<&str> = text.split('\n').collect();
            // The first piece is cut unless the read started at the part's beginning.
            if n < len {
                lines.remove(0);
            }
            if lines.is_empty() {
                n = (n * 2).min(len);
                continue;
            }
            let mut out = Vec::new();
            for l in lines {
                let r = chain::parse_line(l).map_err(|e: LineError| {
                    RemoteError::Content(format!(
                        "{} ends with a line that is not a keyturn audit record ({e}); run `keyturn audit verify --blob`",
                        self.part_url(k)
                    ))
                })?;
                out.push((l.to_owned(), r));
            }
            return Ok(out);
        }
    }

    /// Finds the current part and the chain's end.
    pub(crate) async fn tail(&self) -> Result<Tail, RemoteError> {
        let mut part = 0;
        let mut found: Option<(u64, u32)> = None;
        while let Some(p) = self.properties(part).await? {
            found = Some(p);
            part += 1;
        }
        let Some((len, blocks)) = found else {
            self.create(0).await?;
            return Ok(Tail {
                part: 0,
                len: 0,
                blocks: 0,
                last: None,
                recent: Vec::new(),
            });
        };
        let part = part - 1;
        if len > 0 {
            let records = self.last_records(part, len).await?;
            let last = records.last().map(|(_, r)| (r.seq, r.hash.clone()));
            let recent = records
                .iter()
                .filter_map(|(l, _)| chain::content_key(l).ok())
                .collect();
            return Ok(Tail {
                part,
                len,
                blocks,
                last,
                recent,
            });
        }
        // An empty part continues the chain of the one before.
        let mut last = None;
        if part > 0 {
            if let Some((plen, _)) = self.properties(part - 1).await? {
                if plen > 0 {
                    last = self
                        .last_records(part - 1, plen)
                        .await?
                        .last()
                        .map(|(_, r)| (r.seq, r.hash.clone()));
                }
            }
        }
        Ok(Tail {
            part,
            len: 0,
            blocks,
            last,
            recent: Vec::new(),
        })
    }

    /// Creates part `k`, empty, unless it exists.
    pub(crate) async fn create(&self, k: u32) -> Result<(), RemoteError> {
        let options = AppendBlobClientCreateOptions {
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        match self
            .blob(k)?
            .append_blob_client()
            .create(Some(options))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if exists_already(&e) => Ok(()),
            Err(e) if error_code(&e).as_deref() == Some("ContainerNotFound") => {
                Err(RemoteError::Failed(format!(
                    "{}; create the container named in daemon.audit_blob.url",
                    failure_detail("creating the audit blob", &e)
                )))
            }
            Err(e) => Err(RemoteError::Failed(failure_detail(
                "creating the audit blob",
                &e,
            ))),
        }
    }

    /// Appends `bytes` to part `k` if its length is `at`; returns its committed blocks
    /// after the append, when Azure says.
    pub(crate) async fn append(
        &self,
        k: u32,
        at: u64,
        bytes: Vec<u8>,
    ) -> Result<Option<u32>, RemoteError> {
        let len = bytes.len() as u64;
        let options = AppendBlobClientAppendBlockOptions {
            append_position: i64::try_from(at).ok(),
            ..Default::default()
        };
        match self
            .blob(k)?
            .append_blob_client()
            .append_block(RequestContent::from(bytes), len, Some(options))
            .await
        {
            Ok(r) => {
                use azure_storage_blob::models::AppendBlobClientAppendBlockResultHeaders;
                Ok(r.blob_committed_block_count()
                    .ok()
                    .flatten()
                    .and_then(|n| u32::try_from(n).ok()))
            }
            Err(e) if e.http_status() == Some(StatusCode::PreconditionFailed) => Err(
                RemoteError::Position(failure_detail("appending to the audit blob", &e)),
            ),
            Err(e) if error_code(&e).as_deref() == Some("BlockCountExceedsLimit") => Err(
                RemoteError::Full(failure_detail("appending to the audit blob", &e)),
            ),
            Err(e) => Err(RemoteError::Failed(failure_detail(
                "appending to the audit blob",
                &e,
            ))),
        }
    }
}
