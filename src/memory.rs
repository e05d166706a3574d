//! In-memory [`SecretStore`] and [`Directory`] with scripted faults, for tests of the
//! protocol's logic without a network (the real adapters are tested against the emulator).

use crate::clock::Clock;
use crate::directory::{Applied, Directory, DirectoryError, UserInfo, Verified};
use crate::password::Password;
use crate::store::{
    ListPage, ListedSecret, NewVersion, SecretRecord, SecretStore, StoreError, Tags, Written,
};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A secret-store operation, for scripting faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Latest,
    Set,
    UpdateTags,
    /// A page of the vault's listing.
    List,
}

/// A scripted store fault.
#[derive(Debug, Clone)]
pub enum StoreFault {
    /// The operation fails and changes nothing.
    Fail(StoreError),
    /// The operation takes effect, then the caller sees the error (a lost response).
    CommitThenFail(StoreError),
    /// The call panics: a bug, which the daemon must survive.
    Panic,
}

#[derive(Default)]
struct VaultState {
    secrets: HashMap<String, Vec<SecretRecord>>,
    faults: VecDeque<(StoreOp, Option<String>, StoreFault)>,
    next_version: u64,
    calls: HashMap<&'static str, u64>,
}

/// A vault in memory.
pub struct MemoryVault {
    name: String,
    clock: Arc<dyn Clock>,
    state: Mutex<VaultState>,
}

impl MemoryVault {
    /// An empty vault called `name`.
    pub fn new(name: &str, clock: Arc<dyn Clock>) -> Self {
        MemoryVault {
            name: name.to_owned(),
            clock,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, VaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `op` (on `secret`, or on any secret) fail as scripted.
    pub fn inject(&self, op: StoreOp, secret: Option<&str>, fault: StoreFault) {
        self.state()
            .faults
            .push_back((op, secret.map(String::from), fault));
    }

    /// Writes a version directly (an adopted secret, or someone else's write).
    pub fn seed(&self, name: &str, value: &Password, tags: Tags) -> String {
        let mut st = self.state();
        self.write(&mut st, name, value, tags, None)
    }

    /// Every version of a secret, oldest first.
    pub fn versions(&self, name: &str) -> Vec<SecretRecord> {
        self.state().secrets.get(name).cloned().unwrap_or_default()
    }

    /// The latest version, without faults.
    pub fn peek(&self, name: &str) -> Option<SecretRecord> {
        self.state()
            .secrets
            .get(name)
            .and_then(|v| v.last().cloned())
    }

    /// How many times an operation was called (`latest`, `set`, `update_tags`, `list_page`).
    pub fn calls(&self, op: &str) -> u64 {
        self.state().calls.get(op).copied().unwrap_or(0)
    }

    fn write(
        &self,
        st: &mut VaultState,
        name: &str,
        value: &Password,
        tags: Tags,
        expires: Option<time::OffsetDateTime>,
    ) -> String {
        st.next_version += 1;
        let version = format!("{:032x}", st.next_version);
        st.secrets
            .entry(name.to_owned())
            .or_default()
            .push(SecretRecord {
                version: version.clone(),
                value: value.clone(),
                tags,
                created: Some(self.clock.now()),
                enabled: true,
                expires,
            });
        version
    }

    fn take_fault(st: &mut VaultState, op: StoreOp, name: &str) -> Option<StoreFault> {
        let idx = st
            .faults
            .iter()
            .position(|(o, n, _)| *o == op && n.as_deref().is_none_or(|n| n == name))?;
        let fault = st.faults.remove(idx).map(|(_, _, f)| f);
        if matches!(fault, Some(StoreFault::Panic)) {
            panic!("scripted panic in the secret store ({op:?} {name})");
        }
        fault
    }
}

#[async_trait]
impl SecretStore for MemoryVault {
    async fn latest(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let mut st = self.state();
        *st.calls.entry("latest").or_default() += 1;
        match Self::take_fault(&mut st, StoreOp::Latest, name) {
            Some(StoreFault::Fail(e) | StoreFault::CommitThenFail(e)) => return Err(e),
            Some(StoreFault::Panic) | None => {}
        }
        Ok(st.secrets.get(name).and_then(|v| v.last().cloned()))
    }

    async fn set(&self, name: &str, new: NewVersion<'_>) -> Result<Written, StoreError> {
        let mut st = self.state();
        *st.calls.entry("set").or_default() += 1;
        match Self::take_fault(&mut st, StoreOp::Set, name) {
            Some(StoreFault::Fail(e)) => Err(e),
            Some(StoreFault::CommitThenFail(e)) => {
                self.write(&mut st, name, new.value, new.tags, new.expires);
                Err(e)
            }
            Some(StoreFault::Panic) | None => {
                let version = self.write(&mut st, name, new.value, new.tags, new.expires);
                Ok(Written {
                    version,
                    request_id: Some(uuid::Uuid::new_v4().to_string()),
                })
            }
        }
    }

    async fn update_tags(&self, name: &str, version: &str, tags: Tags) -> Result<(), StoreError> {
        let mut st = self.state();
        *st.calls.entry("update_tags").or_default() += 1;
        let fault = Self::take_fault(&mut st, StoreOp::UpdateTags, name);
        if let Some(StoreFault::Fail(e)) = fault {
            return Err(e);
        }
        let found = st
            .secrets
            .get_mut(name)
            .and_then(|v| v.iter_mut().find(|r| r.version == version));
        match found {
            Some(record) => record.tags = tags,
            None => {
                return Err(StoreError::Rejected {
                    vault: self.name.clone(),
                    status: 404,
                    code: "SecretNotFound".into(),
                    message: format!("no version {version} of {name}"),
                    request_id: None,
                })
            }
        }
        match fault {
            Some(StoreFault::CommitThenFail(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Pages of 25, as Key Vault sends them, in name order; `next` is the offset.
    async fn list_page(&self, next: Option<&str>) -> Result<ListPage, StoreError> {
        let mut st = self.state();
        *st.calls.entry("list_page").or_default() += 1;
        if let Some(StoreFault::Fail(e) | StoreFault::CommitThenFail(e)) =
            Self::take_fault(&mut st, StoreOp::List, "")
        {
            return Err(e);
        }
        let skip: usize = next.and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut names: Vec<&String> = st.secrets.keys().collect();
        names.sort();
        let items = names
            .iter()
            .skip(skip)
            .take(25)
            .filter_map(|n| {
                st.secrets[*n].last().map(|r| ListedSecret {
                    name: (*n).clone(),
                    tags: r.tags.clone(),
                    created: r.created,
                    enabled: r.enabled,
                })
            })
            .collect();
        let next = (skip + 25 < names.len()).then(|| (skip + 25).to_string());
        Ok(ListPage { items, next })
    }

    fn vault(&self) -> &str {
        &self.name
    }
}

/// A directory operation, for scripting faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirOp {
    Reset,
    User,
    Verify,
}

/// A scripted directory fault.
#[derive(Debug, Clone)]
pub enum DirFault {
    /// The call fails with this error and changes nothing.
    Fail(DirectoryError),
    /// The reset takes effect, then the caller sees this error (a lost response).
    ApplyThenFail(DirectoryError),
}

struct MemUser {
    id: String,
    upn: String,
    password: Password,
    last_change: Option<time::OffsetDateTime>,
    blocked_by: Option<u32>,
}

#[derive(Default)]
struct DirState {
    users: Vec<MemUser>,
    faults: VecDeque<(DirOp, DirFault)>,
    resets: u64,
}

/// A tenant in memory.
pub struct MemoryDirectory {
    clock: Arc<dyn Clock>,
    state: Mutex<DirState>,
}

impl MemoryDirectory {
    /// An empty tenant.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryDirectory {
            clock,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DirState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a user whose password is `password`, last changed at `changed`.
    pub fn add_user(&self, upn: &str, password: &Password, changed: Option<time::OffsetDateTime>) {
        self.state().users.push(MemUser {
            id: uuid::Uuid::new_v4().to_string(),
            upn: upn.to_owned(),
            password: password.clone(),
            last_change: changed,
            blocked_by: None,
        });
    }

    /// Makes sign-ins of `upn` fail with this AADSTS code after the password check.
    pub fn block_sign_in(&self, upn: &str, aadsts: u32) {
        if let Some(u) = self.state().users.iter_mut().find(|u| u.upn == upn) {
            u.blocked_by = Some(aadsts);
        }
    }

    /// True when `password` is the user's current password.
    pub fn password_is(&self, upn: &str, password: &Password) -> bool {
        self.state()
            .users
            .iter()
            .any(|u| u.upn == upn && &u.password == password)
    }

    /// Someone resets the password outside keyturn.
    pub fn reset_out_of_band(&self, upn: &str, password: &Password) {
        let now = self.clock.now();
        if let Some(u) = self.state().users.iter_mut().find(|u| u.upn == upn) {
            u.password = password.clone();
            u.last_change = Some(now);
        }
    }

    /// Makes the next `op` fail as scripted.
    pub fn inject(&self, op: DirOp, fault: DirFault) {
        self.state().faults.push_back((op, fault));
    }

    /// How many resets took effect.
    pub fn resets(&self) -> u64 {
        self.state().resets
    }

    fn take_fault(st: &mut DirState, op: DirOp) -> Option<DirFault> {
        let idx = st.faults.iter().position(|(o, _)| *o == op)?;
        st.faults.remove(idx).map(|(_, f)| f)
    }

    fn not_found(user: &str) -> DirectoryError {
        DirectoryError::Rejected {
            user: user.to_owned(),
            status: 404,
            code: "Request_ResourceNotFound".into(),
            message: format!("Resource '{user}' does not exist"),
            request_id: None,
        }
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn reset_password(
        &self,
        user: &str,
        password: &Password,
    ) -> Result<Applied, DirectoryError> {
        let now = self.clock.now();
        let mut st = self.state();
        let fault = Self::take_fault(&mut st, DirOp::Reset);
        if let Some(DirFault::Fail(e)) = fault {
            return Err(e);
        }
        let Some(u) = st.users.iter_mut().find(|u| u.upn == user || u.id == user) else {
            return Err(Self::not_found(user));
        };
        u.password = password.clone();
        u.last_change = Some(now);
        st.resets += 1;
        match fault {
            Some(DirFault::ApplyThenFail(e)) => Err(e),
            _ => Ok(Applied {
                request_id: Some(uuid::Uuid::new_v4().to_string()),
            }),
        }
    }

    async fn user(&self, user: &str) -> Result<UserInfo, DirectoryError> {
        let mut st = self.state();
        if let Some(DirFault::Fail(e) | DirFault::ApplyThenFail(e)) =
            Self::take_fault(&mut st, DirOp::User)
        {
            return Err(e);
        }
        let u = st
            .users
            .iter()
            .find(|u| u.upn == user || u.id == user)
            .ok_or_else(|| Self::not_found(user))?;
        Ok(UserInfo {
            id: u.id.clone(),
            user_principal_name: u.upn.clone(),
            account_enabled: Some(true),
            on_premises_sync_enabled: Some(false),
            last_password_change: u.last_change,
        })
    }

    async fn verify(&self, user: &str, password: &Password) -> Result<Verified, DirectoryError> {
        let mut st = self.state();
        if let Some(DirFault::Fail(e) | DirFault::ApplyThenFail(e)) =
            Self::take_fault(&mut st, DirOp::Verify)
        {
            return Err(e);
        }
        let u = st.users.iter().find(|u| u.upn == user || u.id == user);
        match u {
            Some(u) if &u.password == password => Ok(match u.blocked_by {
                Some(aadsts) => Verified::BlockedByPolicy {
                    aadsts,
                    message: format!("AADSTS{aadsts}: blocked"),
                },
                None => Verified::SignedIn,
            }),
            Some(_) => Err(DirectoryError::SignIn {
                user: user.to_owned(),
                aadsts: 50126,
                message: "Error validating credentials due to invalid username or password.".into(),
            }),
            None => Err(DirectoryError::SignIn {
                user: user.to_owned(),
                aadsts: 50034,
                message: "The user account does not exist in the directory.".into(),
            }),
        }
    }
}
