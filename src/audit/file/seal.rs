//! The seal file `<name>.seal`: the last record written, so that records cut off the end
//! of the log are seen.

use super::files::seal_path;
use crate::audit::chain;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Size of the seal file's single, fixed-length line.
pub(super) const SEAL_LEN: usize = 200;

/// What the seal file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct Seal {
    /// The last record written.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Why a seal could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    /// The seal file exists but cannot be read (permissions, a directory, an I/O error).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The seal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The seal file holds something that is not a seal.
    #[error("{} is not a valid seal ({detail}); a seal is one line {{\"seq\":N,\"hash\":\"<64 hex digits>\",\"time\":\"…\"}}", path.display())]
    Malformed {
        /// The seal file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Reads `<path>.seal`; `Ok(None)` when there is none (or it is empty: created, not yet
/// written). Anything else that is not one seal with a 64-hex-digit hash is
/// [`SealError::Malformed`]: a reader must not take a damaged seal for "no seal", or cutting
/// records off the end and garbling the seal would go unnoticed.
pub(crate) fn read_seal(path: &Path) -> Result<Option<Seal>, SealError> {
    use std::io::Read;
    let seal = seal_path(path);
    let malformed = |detail: String| SealError::Malformed {
        path: seal.clone(),
        detail,
    };
    let unreadable = |source| SealError::Unreadable {
        path: seal.clone(),
        source,
    };
    let file = match File::open(&seal) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    // A seal is SEAL_LEN bytes; read a little more to tell an oversized file.
    let mut bytes = Vec::with_capacity(SEAL_LEN);
    file.take(4 * SEAL_LEN as u64)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > 2 * SEAL_LEN {
        return Err(malformed(format!(
            "{} bytes or more, a seal has {SEAL_LEN}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed("not UTF-8".into()))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let seal: Seal =
        serde_json::from_str(text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if !chain::is_hex64(&seal.hash) {
        return Err(malformed("its hash is not 64 lowercase hex digits".into()));
    }
    Ok(Some(seal))
}
