//! The Graph operations provisioning needs, as a trait ([`Entra`]) with errors that say
//! whether the request took effect, and which permission or role a refusal points at.

use crate::password::Password;
use crate::store::opt;
use async_trait::async_trait;
use time::OffsetDateTime;

/// A user as provisioning reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraUser {
    /// The object id.
    pub id: String,
    /// The user principal name.
    pub user_principal_name: String,
    /// `createdDateTime`: tells a user this provisioning created from one that was there
    /// before its password was staged.
    pub created: Option<OffsetDateTime>,
}

/// A user to create (`POST /users`).
pub struct NewUser<'a> {
    /// `userPrincipalName`.
    pub user_principal_name: &'a str,
    /// `displayName`.
    pub display_name: &'a str,
    /// `mailNickname` (required by Graph): the UPN's local part.
    pub mail_nickname: &'a str,
    /// `passwordProfile.password` (with `forceChangePasswordNextSignIn` false).
    pub password: &'a Password,
}

/// One directory role assignment of a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The assignment's id (for `DELETE`).
    pub id: String,
    /// `roleDefinitionId`: the role's template id for a built-in role.
    pub role_id: String,
    /// `directoryScopeId` (`/` tenant-wide).
    pub scope: String,
}

/// What a request was for: a refusal's message names the right it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /users/{id|upn}`.
    ReadUser,
    /// `POST /users`.
    CreateUser,
    /// `GET /roleManagement/directory/roleAssignments`.
    ListRoles,
    /// `POST /roleManagement/directory/roleAssignments`.
    AssignRole,
    /// `DELETE /roleManagement/directory/roleAssignments/{id}`.
    RemoveRole,
}

impl Op {
    /// What the provisioning identity needs for this request (Graph's permission pages).
    pub fn needs(self) -> &'static str {
        match self {
            Op::ReadUser => "the Microsoft Graph permission User.Read.All (or User.ReadWrite.All)",
            Op::CreateUser => "the Microsoft Graph application permission User.ReadWrite.All (admin consent); signed in as a person (azure_cli), the User Administrator role",
            Op::ListRoles => "the Microsoft Graph permission RoleManagement.Read.Directory (or RoleManagement.ReadWrite.Directory)",
            Op::AssignRole | Op::RemoveRole => "the Microsoft Graph application permission RoleManagement.ReadWrite.Directory (admin consent); signed in as a person (azure_cli), the directory role Privileged Role Administrator",
        }
    }

    /// The operation, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Op::ReadUser => "read the user",
            Op::CreateUser => "create the user",
            Op::ListRoles => "list the user's directory roles",
            Op::AssignRole => "assign a directory role",
            Op::RemoveRole => "remove a directory role",
        }
    }
}

/// A failed Graph request. Messages never hold a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EntraError {
    /// A definite refusal (Graph's own 400, 403 or 404 answer): nothing changed.
    #[error("Graph refused to {} (HTTP {status} {code}: {message}; request id {}){}", .op.what(), opt(.request_id), refusal_hint(*.op, *.status))]
    Refused {
        op: Op,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The request may or may not have taken effect (429, 5xx, timeout, connection lost).
    #[error("Graph did not confirm the request to {} ({detail}; request id {}); the outcome is unknown", .op.what(), opt(.request_id))]
    Unknown {
        op: Op,
        status: Option<u16>,
        detail: String,
        request_id: Option<String>,
    },
    /// The request never reached Graph (no token, connection refused): nothing changed.
    #[error("no request to {} reached Graph: {detail}", .op.what())]
    NotSent { op: Op, detail: String },
}

fn refusal_hint(op: Op, status: u16) -> String {
    match status {
        403 => format!(": the provisioning identity lacks {}", op.needs()),
        _ => String::new(),
    }
}

impl EntraError {
    /// The HTTP status, if Graph answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EntraError::Refused { status, .. } => Some(*status),
            EntraError::Unknown { status, .. } => *status,
            EntraError::NotSent { .. } => None,
        }
    }

    /// Graph's error code, if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EntraError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Graph's request id.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            EntraError::Refused { request_id, .. } | EntraError::Unknown { request_id, .. } => {
                request_id.as_deref()
            }
            EntraError::NotSent { .. } => None,
        }
    }

    /// A short machine-readable kind for audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            EntraError::Refused { .. } => "rejected",
            EntraError::Unknown { .. } => "unknown_outcome",
            EntraError::NotSent { .. } => "not_sent",
        }
    }
}

/// Entra ID as provisioning sees it: users and directory role assignments, through the
/// provisioning identity.
#[async_trait]
pub trait Entra: Send + Sync {
    /// The user (object id or UPN); `None` when Graph says there is none (404).
    async fn find_user(&self, user: &str) -> Result<Option<EntraUser>, EntraError>;
    /// Creates the user, enabled, with the password and no forced change at next sign-in.
    async fn create_user(&self, new: &NewUser<'_>) -> Result<EntraUser, EntraError>;
    /// The principal's directory role assignments.
    async fn role_assignments(&self, principal: &str) -> Result<Vec<Assignment>, EntraError>;
    /// Assigns the role (template id) to the principal, tenant-wide (`directoryScopeId` `/`).
    async fn assign_role(&self, principal: &str, role_id: &str) -> Result<Assignment, EntraError>;
    /// Removes one assignment.
    async fn remove_assignment(&self, id: &str) -> Result<(), EntraError>;
}
