//! What the two Blob Storage users (`ha::lease`, the lease blob; `audit_blob::remote`, the
//! append blob) read the same way from the official SDK's errors.

use super::{bounded, error_chain, MAX_DETAIL_CHARS};
use azure_core::http::StatusCode;

/// Storage's error code (`x-ms-error-code`, e.g. `ContainerNotFound`), when it answered.
pub(crate) fn error_code(e: &azure_core::Error) -> Option<String> {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

/// "`what` failed (HTTP status code): the error chain", bounded.
pub(crate) fn failure_detail(what: &str, e: &azure_core::Error) -> String {
    let mut s = format!("{what} failed");
    if let Some(st) = e.http_status() {
        s.push_str(&format!(" (HTTP {}", u16::from(st)));
        if let Some(c) = error_code(e) {
            s.push_str(&format!(" {c}"));
        }
        s.push(')');
    }
    s.push_str(": ");
    s.push_str(&bounded(&error_chain(e), None, MAX_DETAIL_CHARS));
    s
}

/// A create with `If-None-Match: *` was refused because the blob exists (another replica,
/// or an earlier run, created it first).
pub(crate) fn exists_already(e: &azure_core::Error) -> bool {
    matches!(
        e.http_status(),
        Some(StatusCode::Conflict) | Some(StatusCode::PreconditionFailed)
    )
}
