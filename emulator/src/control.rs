//! The control surface: [`Control`] (Rust) and the `/_emulator/...` HTTP API, which does the
//! same things. Nothing here ever returns a password.

use crate::faults::{Counters, FaultRule};
use crate::http::{json, Req, Resp};
use crate::scenario::{Scenario, UserFlags};
use crate::shared::{lock, Shared};
use crate::Error;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// A cheap, cloneable handle on a running emulator's state.
#[derive(Clone, Debug)]
pub struct Control {
    pub(crate) shared: Arc<Shared>,
}

/// Question for [`Control::invariant`]: does the rotation invariant hold for this account?
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvariantQuery {
    /// Tenant id or domain.
    pub tenant: String,
    /// User object id or UPN.
    pub user: String,
    /// Vault name.
    pub vault: String,
    /// The account's secret (`<secret>`).
    pub secret: String,
    /// The staging secret (`<secret>-pending`); absent = `<secret>-pending`.
    #[serde(default)]
    pub staging_secret: Option<String>,
}

/// Answer of [`Control::invariant`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvariantReport {
    /// The latest version of `<secret>` exists, is enabled and equals Entra's password.
    pub latest_matches: bool,
    /// The latest version of the staging secret equals Entra's password.
    pub pending_matches: bool,
    /// The `keyturn-state` tag of the latest staging version, if any.
    pub pending_tag: Option<String>,
    /// The invariant: `latest_matches || (pending_matches && pending_tag == "pending")`.
    pub holds: bool,
}

/// What the control API tells about a user (never the password).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    /// Object id.
    pub id: String,
    /// userPrincipalName.
    pub upn: String,
    /// Tenant id.
    pub tenant: String,
    /// Unix seconds of the last password change.
    pub last_password_change: i64,
    /// Directory roles.
    pub directory_roles: Vec<String>,
    /// Current flags (all present).
    pub flags: UserFlags,
    /// Consecutive failed password-grant attempts.
    pub failed_attempts: u32,
    /// Whether the account is locked out now.
    pub locked: bool,
}

impl Control {
    /// Merges a scenario into the running state (same keys replace, others add; faults are
    /// added). Nothing changes if any reference is wrong.
    pub fn seed(&self, sc: &Scenario) -> Result<(), Error> {
        sc.validate()?;
        let now = self.shared.clock.unix();
        {
            let mut st = lock(&self.shared.state);
            let mut next = st.clone();
            sc.apply_to(&mut next, now)?;
            *st = next;
            self.shared.persist(&st);
        }
        for f in &sc.faults {
            self.add_fault(f.clone())?;
        }
        Ok(())
    }

    /// Adds a fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> Result<String, Error> {
        rule.validate().map_err(Error::Invalid)?;
        Ok(lock(&self.shared.faults).add(rule))
    }

    /// The active fault rules, with how often each fired.
    pub fn faults(&self) -> Vec<FaultRule> {
        lock(&self.shared.faults).list()
    }

    /// Removes one rule; false if there was none with that id.
    pub fn remove_fault(&self, id: &str) -> bool {
        lock(&self.shared.faults).remove(id)
    }

    /// Removes every rule (counters stay).
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        lock(&self.shared.faults).counters.clone()
    }

    /// Is `password` the current password of the user? (Does not count as a sign-in.)
    pub fn check_password(&self, tenant: &str, user: &str, password: &str) -> Result<bool, Error> {
        let st = lock(&self.shared.state);
        let idx = st
            .user_idx(tenant, user)
            .ok_or_else(|| no_user(tenant, user))?;
        Ok(st.users[idx].password == password)
    }

    /// Out-of-band password change (as if an admin used the portal): updates
    /// `lastPasswordChangeDateTime`, clears lock-out; Entra's password rules apply.
    pub fn set_password(&self, tenant: &str, user: &str, password: &str) -> Result<(), Error> {
        crate::rules::check_password_rules(password)
            .map_err(|e| Error::Invalid(format!("password: {e}")))?;
        let now = self.shared.clock.unix();
        let mut st = lock(&self.shared.state);
        let idx = st
            .user_idx(tenant, user)
            .ok_or_else(|| no_user(tenant, user))?;
        let u = &mut st.users[idx];
        u.password = password.to_string();
        u.last_password_change = now;
        u.failed_attempts = 0;
        u.locked_until_ms = None;
        self.shared.persist(&st);
        Ok(())
    }

    /// Changes sign-in flags; absent flags stay as they are.
    pub fn set_user_flags(
        &self,
        tenant: &str,
        user: &str,
        flags: &UserFlags,
    ) -> Result<UserInfo, Error> {
        let mut st = lock(&self.shared.state);
        let idx = st
            .user_idx(tenant, user)
            .ok_or_else(|| no_user(tenant, user))?;
        let u = &mut st.users[idx];
        let set = |dst: &mut bool, src: Option<bool>| {
            if let Some(v) = src {
                *dst = v;
            }
        };
        set(&mut u.disabled, flags.disabled);
        set(&mut u.mfa_required, flags.mfa_required);
        set(
            &mut u.mfa_registration_required,
            flags.mfa_registration_required,
        );
        set(&mut u.ca_blocked, flags.ca_blocked);
        set(
            &mut u.security_defaults_blocked,
            flags.security_defaults_blocked,
        );
        set(&mut u.password_expired, flags.password_expired);
        set(
            &mut u.force_change_password_next_sign_in,
            flags.force_change_password_next_sign_in,
        );
        self.shared.persist(&st);
        drop(st);
        self.user(tenant, user)
    }

    /// What is known about a user, without the password.
    pub fn user(&self, tenant: &str, user: &str) -> Result<UserInfo, Error> {
        let st = lock(&self.shared.state);
        let idx = st
            .user_idx(tenant, user)
            .ok_or_else(|| no_user(tenant, user))?;
        let u = &st.users[idx];
        let now_ms = self.shared.clock.unix_ms();
        Ok(UserInfo {
            id: u.id.clone(),
            upn: u.upn.clone(),
            tenant: u.tenant.clone(),
            last_password_change: u.last_password_change,
            directory_roles: u.directory_roles.clone(),
            flags: UserFlags {
                disabled: Some(u.disabled),
                mfa_required: Some(u.mfa_required),
                mfa_registration_required: Some(u.mfa_registration_required),
                ca_blocked: Some(u.ca_blocked),
                security_defaults_blocked: Some(u.security_defaults_blocked),
                password_expired: Some(u.password_expired),
                force_change_password_next_sign_in: Some(u.force_change_password_next_sign_in),
            },
            failed_attempts: u.failed_attempts,
            locked: u.locked_until_ms.is_some_and(|t| t > now_ms),
        })
    }

    /// Checks the rotation invariant for one account.
    pub fn invariant(&self, q: &InvariantQuery) -> Result<InvariantReport, Error> {
        let st = lock(&self.shared.state);
        let idx = st
            .user_idx(&q.tenant, &q.user)
            .ok_or_else(|| no_user(&q.tenant, &q.user))?;
        let password = &st.users[idx].password;
        let vault = st
            .vaults
            .get(&q.vault.to_ascii_lowercase())
            .ok_or_else(|| Error::NotFound(format!("vault {:?}", q.vault)))?;
        let latest_matches = vault
            .secrets
            .get(&q.secret)
            .and_then(|s| s.versions.last())
            .is_some_and(|v| v.enabled && &v.value == password);
        let staging = q
            .staging_secret
            .clone()
            .unwrap_or_else(|| format!("{}-pending", q.secret));
        let pending = vault.secrets.get(&staging).and_then(|s| s.versions.last());
        let pending_matches = pending.is_some_and(|v| &v.value == password);
        let pending_tag = pending.and_then(|v| v.tags.get("keyturn-state").cloned());
        let holds =
            latest_matches || (pending_matches && pending_tag.as_deref() == Some("pending"));
        Ok(InvariantReport {
            latest_matches,
            pending_matches,
            pending_tag,
            holds,
        })
    }

    /// Moves the emulator's clock forward (token expiry, lock-out, throttling windows).
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.shared.clock.advance(by)
    }

    /// The events the Event Grid topic `topic` took, in order.
    pub fn event_grid_events(&self, topic: &str) -> Vec<crate::eventgrid::PublishedEvent> {
        lock(&self.shared.events)
            .get(&topic.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Names of the vaults that exist now.
    pub fn vault_names(&self) -> Vec<String> {
        lock(&self.shared.state).vaults.keys().cloned().collect()
    }
}

fn no_user(tenant: &str, user: &str) -> Error {
    Error::NotFound(format!("user {user:?} in tenant {tenant:?}"))
}

fn err(e: &Error) -> Resp {
    let status = match e {
        Error::NotFound(_) => 404,
        Error::Scenario(_) | Error::Invalid(_) => 400,
        Error::Io { .. } | Error::Tls(_) | Error::Bind { .. } | Error::State { .. } => 500,
    };
    json(status, &json!({"error": e.to_string()}))
}

fn body_json<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Error> {
    serde_json::from_slice(&req.body).map_err(|e| Error::Invalid(format!("request body: {e}")))
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

#[derive(Deserialize)]
struct AdvanceBody {
    #[serde(default)]
    seconds: Option<f64>,
    #[serde(default)]
    ms: Option<u64>,
}

/// Serves `/_emulator/...`.
pub(crate) fn handle(c: &Control, req: &Req) -> Resp {
    match route(c, req) {
        Ok(r) => r,
        Err(e) => err(&e),
    }
}

fn route(c: &Control, req: &Req) -> Result<Resp, Error> {
    let rest = req
        .path
        .trim_start_matches("/_emulator/")
        .trim_end_matches('/');
    let segs: Vec<String> = rest
        .split('/')
        .map(|s| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &req.method;
    match (m, segs.as_slice()) {
        (&Method::GET, ["health"]) => Ok(json(200, &json!({"ok": true}))),
        (&Method::POST, ["scenario"]) => {
            let text = std::str::from_utf8(&req.body)
                .map_err(|_| Error::Invalid("body is not UTF-8".into()))?;
            let is_json = req
                .header("content-type")
                .is_some_and(|t| t.contains("json"))
                || text.trim_start().starts_with('{');
            let sc = if is_json {
                Scenario::from_json_str(text)?
            } else {
                Scenario::from_toml_str(text)?
            };
            c.seed(&sc)?;
            Ok(json(
                200,
                &json!({"seeded": true, "vaults": c.vault_names()}),
            ))
        }
        (&Method::GET, ["faults"]) => Ok(json(200, &json!({"faults": c.faults()}))),
        (&Method::POST, ["faults"]) => {
            let v: serde_json::Value = body_json(req)?;
            let rules: Vec<FaultRule> = if v.is_array() {
                serde_json::from_value(v)
            } else {
                serde_json::from_value(v).map(|r| vec![r])
            }
            .map_err(|e| Error::Invalid(format!("fault rule: {e}")))?;
            let mut ids = Vec::new();
            for r in rules {
                ids.push(c.add_fault(r)?);
            }
            Ok(json(200, &json!({"ids": ids})))
        }
        (&Method::DELETE, ["faults"]) => {
            c.clear_faults();
            Ok(json(200, &json!({"cleared": true})))
        }
        (&Method::DELETE, ["faults", id]) => {
            if c.remove_fault(id) {
                Ok(json(200, &json!({"removed": id})))
            } else {
                Err(Error::NotFound(format!("fault rule {id:?}")))
            }
        }
        (&Method::GET, ["eventgrid", topic]) => {
            Ok(json(200, &json!({"events": c.event_grid_events(topic)})))
        }
        (&Method::GET, ["counters"]) => Ok(json(
            200,
            &serde_json::to_value(c.counters()).unwrap_or_default(),
        )),
        (&Method::GET, ["users", tenant, user]) => Ok(json(
            200,
            &serde_json::to_value(c.user(tenant, user)?).unwrap_or_default(),
        )),
        (&Method::PATCH, ["users", tenant, user]) => {
            let flags: UserFlags = body_json(req)?;
            Ok(json(
                200,
                &serde_json::to_value(c.set_user_flags(tenant, user, &flags)?).unwrap_or_default(),
            ))
        }
        (&Method::POST, ["users", tenant, user, "check-password"]) => {
            let b: PasswordBody = body_json(req)?;
            Ok(json(
                200,
                &json!({"current": c.check_password(tenant, user, &b.password)?}),
            ))
        }
        (&Method::POST, ["users", tenant, user, "password"]) => {
            let b: PasswordBody = body_json(req)?;
            c.set_password(tenant, user, &b.password)?;
            let info = c.user(tenant, user)?;
            Ok(json(
                200,
                &json!({"changed": true, "last_password_change": info.last_password_change}),
            ))
        }
        (&Method::POST, ["invariant"]) => {
            let q: InvariantQuery = body_json(req)?;
            Ok(json(
                200,
                &serde_json::to_value(c.invariant(&q)?).unwrap_or_default(),
            ))
        }
        (&Method::POST, ["clock", "advance"]) => {
            let b: AdvanceBody = body_json(req)?;
            let d = match (b.ms, b.seconds) {
                (Some(ms), _) => std::time::Duration::from_millis(ms),
                (None, Some(s)) if s >= 0.0 && s.is_finite() => {
                    std::time::Duration::from_secs_f64(s)
                }
                _ => return Err(Error::Invalid("give \"seconds\" (>= 0) or \"ms\"".into())),
            };
            c.advance_clock(d);
            Ok(json(200, &json!({"now": c.shared.clock.unix()})))
        }
        _ => Err(Error::NotFound(format!(
            "control route {} {}",
            req.method, req.path
        ))),
    }
}
