//! An in-memory [`Entra`] with scripted faults, for tests of provisioning's logic without a
//! network (the Graph adapter is tested against the emulator).

use super::entra::{Assignment, Entra, EntraError, EntraUser, NewUser, Op};
use crate::clock::Clock;
use crate::password::Password;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A scripted fault.
#[derive(Debug, Clone)]
pub enum EntraFault {
    /// The request fails and changes nothing.
    Fail(EntraError),
    /// The request takes effect, then the caller sees the error (a lost answer).
    CommitThenFail(EntraError),
}

struct User {
    id: String,
    upn: String,
    password: Password,
    created: time::OffsetDateTime,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    /// (principal, role id).
    assignments: Vec<(String, String)>,
    faults: VecDeque<(Op, EntraFault)>,
    writes: u64,
    next_id: u64,
}

/// A tenant in memory.
pub struct MemoryEntra {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl MemoryEntra {
    /// An empty tenant.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryEntra {
            clock,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a user created at `created` (someone else's, or one created before).
    pub fn add_user(&self, upn: &str, password: &Password, created: time::OffsetDateTime) {
        let mut s = self.state();
        s.next_id += 1;
        let id = format!("00000000-0000-4000-8000-{:012}", s.next_id);
        s.users.push(User {
            id,
            upn: upn.to_owned(),
            password: password.clone(),
            created,
        });
    }

    /// Fails the next request of `op` with `fault`.
    pub fn inject(&self, op: Op, fault: EntraFault) {
        self.state().faults.push_back((op, fault));
    }

    /// Whether the user exists and `password` is its password.
    pub fn password_is(&self, upn: &str, password: &Password) -> bool {
        self.state()
            .users
            .iter()
            .any(|u| u.upn.eq_ignore_ascii_case(upn) && &u.password == password)
    }

    /// Whether the user exists.
    pub fn has_user(&self, upn: &str) -> bool {
        self.state()
            .users
            .iter()
            .any(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    /// The role ids the user holds, sorted.
    pub fn roles_of(&self, upn: &str) -> Vec<String> {
        let s = self.state();
        let Some(id) = s
            .users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
            .map(|u| u.id.clone())
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = s
            .assignments
            .iter()
            .filter(|(p, _)| *p == id)
            .map(|(_, r)| r.clone())
            .collect();
        out.sort();
        out
    }

    /// Gives the user a role directly (a role assigned outside keyturn).
    pub fn grant(&self, upn: &str, role_id: &str) {
        let mut s = self.state();
        if let Some(id) = s
            .users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
            .map(|u| u.id.clone())
        {
            s.assignments.push((id, role_id.to_owned()));
        }
    }

    /// Writes that took effect (creates, assignments, removals).
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// The next scripted fault for `op`, if it is first in line.
    fn fault(&self, op: Op) -> Option<EntraFault> {
        let mut s = self.state();
        let pos = s.faults.iter().position(|(o, _)| *o == op)?;
        s.faults.remove(pos).map(|(_, f)| f)
    }

    fn user_of(s: &State, user: &str) -> Option<EntraUser> {
        s.users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(user) || u.id.eq_ignore_ascii_case(user))
            .map(|u| EntraUser {
                id: u.id.clone(),
                user_principal_name: u.upn.clone(),
                created: Some(u.created),
            })
    }
}

fn assignment_id(principal: &str, role: &str) -> String {
    format!("{role}:{principal}")
}

/// Runs `f` under the scripted fault for `op`: a `Fail` stops before it, a
/// `CommitThenFail` after it.
macro_rules! faulted {
    ($self:ident, $op:expr, $t:ty, $body:expr) => {{
        match $self.fault($op) {
            Some(EntraFault::Fail(e)) => return Err(e),
            Some(EntraFault::CommitThenFail(e)) => {
                let _done: Result<$t, EntraError> = $body;
                return Err(e);
            }
            None => $body,
        }
    }};
}

#[async_trait]
impl Entra for MemoryEntra {
    async fn find_user(&self, user: &str) -> Result<Option<EntraUser>, EntraError> {
        faulted!(
            self,
            Op::ReadUser,
            Option<EntraUser>,
            Ok(Self::user_of(&self.state(), user))
        )
    }

    async fn create_user(&self, new: &NewUser<'_>) -> Result<EntraUser, EntraError> {
        let now = self.clock.now();
        faulted!(self, Op::CreateUser, EntraUser, {
            let mut s = self.state();
            if Self::user_of(&s, new.user_principal_name).is_some() {
                Err(EntraError::Refused {
                    op: Op::CreateUser,
                    status: 400,
                    code: "Request_BadRequest".into(),
                    message: "Another object with the same value for property userPrincipalName already exists.".into(),
                    request_id: None,
                })
            } else {
                s.next_id += 1;
                s.writes += 1;
                let id = format!("00000000-0000-4000-8000-{:012}", s.next_id);
                s.users.push(User {
                    id: id.clone(),
                    upn: new.user_principal_name.to_owned(),
                    password: new.password.clone(),
                    created: now,
                });
                Ok(EntraUser {
                    id,
                    user_principal_name: new.user_principal_name.to_owned(),
                    created: Some(now),
                })
            }
        })
    }

    async fn role_assignments(&self, principal: &str) -> Result<Vec<Assignment>, EntraError> {
        faulted!(self, Op::ListRoles, Vec<Assignment>, {
            Ok(self
                .state()
                .assignments
                .iter()
                .filter(|(p, _)| p == principal)
                .map(|(p, r)| Assignment {
                    id: assignment_id(p, r),
                    role_id: r.clone(),
                    scope: "/".into(),
                })
                .collect())
        })
    }

    async fn assign_role(&self, principal: &str, role_id: &str) -> Result<Assignment, EntraError> {
        faulted!(self, Op::AssignRole, Assignment, {
            let mut s = self.state();
            if s.assignments
                .iter()
                .any(|(p, r)| p == principal && r == role_id)
            {
                Err(EntraError::Refused {
                    op: Op::AssignRole,
                    status: 400,
                    code: "Request_BadRequest".into(),
                    message: "A conflicting object with one or more of the specified property values is present in the directory.".into(),
                    request_id: None,
                })
            } else {
                s.writes += 1;
                s.assignments
                    .push((principal.to_owned(), role_id.to_owned()));
                Ok(Assignment {
                    id: assignment_id(principal, role_id),
                    role_id: role_id.to_owned(),
                    scope: "/".into(),
                })
            }
        })
    }

    async fn remove_assignment(&self, id: &str) -> Result<(), EntraError> {
        faulted!(self, Op::RemoveRole, (), {
            let mut s = self.state();
            let before = s.assignments.len();
            s.assignments.retain(|(p, r)| assignment_id(p, r) != id);
            if s.assignments.len() == before {
                Err(EntraError::Refused {
                    op: Op::RemoveRole,
                    status: 404,
                    code: "Request_ResourceNotFound".into(),
                    message: format!("Resource '{id}' does not exist."),
                    request_id: None,
                })
            } else {
                s.writes += 1;
                Ok(())
            }
        })
    }
}
