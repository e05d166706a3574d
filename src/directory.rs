//! The directory: where the account's password is in force (Entra ID via Microsoft Graph).

use crate::password::Password;
use crate::store::opt;
use async_trait::async_trait;
use std::time::Duration;
use time::OffsetDateTime;

/// What Graph tells about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's object id.
    pub id: String,
    /// The user principal name.
    pub user_principal_name: String,
    /// `accountEnabled`, when Graph returned it.
    pub account_enabled: Option<bool>,
    /// `onPremisesSyncEnabled`, when Graph returned it (true: synced from on-premises AD,
    /// whose next sync overwrites a password keyturn sets; the readiness watch reports it).
    pub on_premises_sync_enabled: Option<bool>,
    /// `lastPasswordChangeDateTime`, used for drift detection and recovery proofs.
    pub last_password_change: Option<OffsetDateTime>,
}

/// Graph accepted the new password (HTTP 204).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Graph's `request-id` header.
    pub request_id: Option<String>,
}

/// Microsoft Graph's application id (the same in every tenant): the resource of the
/// delegated permissions the verify sign-in needs consent for (`az ad app permission grant
/// --api`).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// A sign-in with the new password worked, or was stopped by policy after the password was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Entra issued a token for the password.
    SignedIn,
    /// The password was right, but MFA or Conditional Access blocked the sign-in (AADSTS code).
    BlockedByPolicy { aadsts: u32, message: String },
    /// The password was right, but the app that signs in holds no consent for the delegated
    /// permissions the sign-in asks (AADSTS65001): grant `scope` to `client_id`.
    ConsentMissing {
        client_id: String,
        scope: String,
        message: String,
    },
}

/// A failed directory operation. Messages never contain a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// A definite refusal: Entra did not take the password (400, 403, 404 on PATCH).
    #[error("Entra ID refused the password reset for {user} (HTTP {status} {code}: {message}; request id {}){}", opt(.request_id), hint(.code, .status))]
    Rejected {
        user: String,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The request may or may not have taken effect (429, 5xx, timeout, connection lost).
    #[error("Graph did not confirm the request for {user} ({detail}, request id {}); the outcome is unknown and keyturn retries with the same password", opt(.request_id))]
    Unknown {
        user: String,
        status: Option<u16>,
        detail: String,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// The request never left keyturn (e.g. no token could be had): nothing changed in Entra.
    #[error("no request reached Graph for {user}: {detail}")]
    NotSent { user: String, detail: String },
    /// The password sign-in (verify) failed with an AADSTS code.
    #[error("sign-in check for {user} failed with AADSTS{aadsts}: {message}")]
    SignIn {
        user: String,
        aadsts: u32,
        message: String,
    },
}

fn hint(code: &str, status: &u16) -> &'static str {
    match (status, code) {
        (403, _) => ": give keyturn's app the Graph permission User-PasswordProfile.ReadWrite.All and the directory role Privileged Authentication Administrator (needed to reset accounts that hold admin roles)",
        (404, _) => ": check the account's `user` (object id or UPN) and the tenant",
        (400, _) => ": the password was refused by Entra's policy; check the account's password policy",
        _ => "",
    }
}

impl DirectoryError {
    /// The HTTP status, if Graph answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DirectoryError::Rejected { status, .. } => Some(*status),
            DirectoryError::Unknown { status, .. } => *status,
            DirectoryError::NotSent { .. } => None,
            DirectoryError::SignIn { .. } => Some(400),
        }
    }

    /// The Graph error code or `AADSTSnnnn`.
    pub fn code(&self) -> Option<String> {
        match self {
            DirectoryError::Rejected { code, .. } => Some(code.clone()),
            DirectoryError::SignIn { aadsts, .. } => Some(format!("AADSTS{aadsts}")),
            DirectoryError::Unknown { .. } | DirectoryError::NotSent { .. } => None,
        }
    }

    /// Graph's request id.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            DirectoryError::Rejected { request_id, .. }
            | DirectoryError::Unknown { request_id, .. } => request_id.as_deref(),
            DirectoryError::NotSent { .. } | DirectoryError::SignIn { .. } => None,
        }
    }

    /// A short machine-readable kind for audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            DirectoryError::Rejected { .. } => "rejected",
            DirectoryError::Unknown { .. } => "unknown_outcome",
            DirectoryError::NotSent { .. } => "not_sent",
            DirectoryError::SignIn { .. } => "sign_in",
        }
    }
}

/// Entra ID as the protocol sees it.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Sets the user's password (`forceChangePasswordNextSignIn: false`).
    async fn reset_password(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Applied, DirectoryError>;
    /// Reads the user (id, UPN, enabled, last password change).
    async fn user(&self, user: &str) -> Result<UserInfo, DirectoryError>;
    /// Signs in as the user with the password (OAuth2 password grant).
    async fn verify(&self, user: &str, password: &Password) -> Result<Verified, DirectoryError>;
    /// The tenant this directory works in, for per-tenant concurrency (`None`: not known;
    /// such accounts share one allowance).
    fn tenant(&self) -> Option<&str> {
        None
    }
}
