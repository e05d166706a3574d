//! Fault injection: rules that make a route fail, slow down or drop the connection, and the
//! counters of everything that happened.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every route name a fault rule can select (besides `*` and `prefix.*`).
pub const ROUTES: [&str; 21] = [
    "token",
    "msi",
    "kv.set",
    "kv.get",
    "kv.list",
    "kv.update",
    "kv.delete",
    "kv.recover",
    "kv.purge",
    "graph.get",
    "graph.patch",
    "graph.grants",
    "graph.ca",
    "eventgrid.publish",
    "graph.roles",
    "graph.service_principals",
    "kv.other",
    "graph.other",
    "graph.create",
    "graph.delete",
    "graph.deleted_items",
];

/// What a fault does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    #[default]
    /// Answer `status` (500, 503, 429, ...) without handling the request; `retry_after`
    /// seconds go in a `Retry-After` header.
    Status,
    /// Wait `latency_ms` before handling the request (then handle it normally).
    Latency,
    /// Close the connection before the request is handled (no response at all).
    Drop,
    /// Handle the request (the change takes effect), then answer `status` (default 500) or,
    /// with `then = "drop"`, close the connection without a response. Fires only on requests
    /// that succeeded.
    CommitThenFail,
    /// Answer `status` (any, default 200) with `content_type` and `body` (repeated until it
    /// is at least `body_bytes` long) without handling the request: malformed JSON, wrong
    /// content types, huge bodies, missing fields, a 200 with an error body.
    Answer,
}

impl FaultKind {
    /// The snake_case name used in rules and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Status => "status",
            FaultKind::Latency => "latency",
            FaultKind::Drop => "drop",
            FaultKind::CommitThenFail => "commit_then_fail",
            FaultKind::Answer => "answer",
        }
    }
}

/// One fault rule. Either `probability` or `count` (or neither: fires on every match).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Identifier (assigned when absent); used to delete the rule and in the counters.
    #[serde(default)]
    pub id: Option<String>,
    /// Route selector: a route name (`token`, `msi`, `kv.set`, `kv.get`, `kv.list`,
    /// `kv.update`, `kv.delete`, `kv.recover`, `kv.purge`, `graph.get`, `graph.patch`,
    /// `graph.grants`, `graph.ca`, `graph.roles`, `graph.service_principals`, `graph.create`
    /// (`POST /users`), `graph.delete` (`DELETE /users/{id}`), `graph.deleted_items`,
    /// `eventgrid.publish`), a
    /// prefix such as `kv.*`, or `*`.
    pub route: String,
    /// Only requests to this vault (Key Vault routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// Only requests for this tenant (token route: the tenant in the path; Key Vault: the
    /// vault's tenant; Graph: the token's tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// Status to answer (`status`: required; `commit_then_fail`: default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Added latency (`latency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// `commit_then_fail` only: `"status"` (default) or `"drop"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// Chance (0..=1) that a matching request is hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Number of matching requests to hit; the rule disappears afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `answer` only: the `Content-Type` (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `answer` only: the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `answer` only: repeat `body` until the answer is at least this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// `answer` only: replace every `{request}` in the body with the request's body (as
    /// text), as a proxy or WAF error page that echoes what it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_request: Option<bool>,
    /// How often the rule fired (output only).
    #[serde(default)]
    pub fired: u64,
}

impl FaultRule {
    /// Checks that the fields fit the kind.
    pub fn validate(&self) -> Result<(), String> {
        let r = self.route.as_str();
        let route_ok = r == "*"
            || ROUTES.contains(&r)
            || r.strip_suffix(".*")
                .is_some_and(|p| ROUTES.iter().any(|x| x.starts_with(&format!("{p}."))));
        if !route_ok {
            return Err(format!(
                "route {r:?}: one of {ROUTES:?}, a prefix like \"kv.*\", or \"*\""
            ));
        }
        if self.probability.is_some() && self.count.is_some() {
            return Err("give probability or count, not both".into());
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability {p}: between 0 and 1"));
            }
        }
        if self.echo_request.is_some() && self.kind != FaultKind::Answer {
            return Err("echo_request: only for kind \"answer\"".into());
        }
        match self.kind {
            FaultKind::Status => match self.status {
                Some(s) if (400..=599).contains(&s) => {}
                _ => return Err("kind \"status\" needs status between 400 and 599".into()),
            },
            FaultKind::Latency => {
                if self.latency_ms.is_none() {
                    return Err("kind \"latency\" needs latency_ms".into());
                }
            }
            FaultKind::Drop => {}
            FaultKind::Answer => {
                if let Some(s) = self.status {
                    if !(100..=599).contains(&s) {
                        return Err("status: between 100 and 599".into());
                    }
                }
                if self.body_bytes.is_some_and(|b| b > 64 * 1024 * 1024) {
                    return Err("body_bytes: at most 64 MiB".into());
                }
            }
            FaultKind::CommitThenFail => {
                match self.then.as_deref() {
                    None | Some("status") | Some("drop") => {}
                    Some(t) => return Err(format!("then {t:?}: \"status\" or \"drop\"")),
                }
                if let Some(s) = self.status {
                    if !(400..=599).contains(&s) {
                        return Err("status: between 400 and 599".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn matches(&self, route: &str, vault: Option<&str>, tenant: Option<&str>) -> bool {
        let r = self.route.as_str();
        let route_ok =
            r == "*" || r == route || r.strip_suffix('*').is_some_and(|p| route.starts_with(p));
        route_ok
            && self.vault.as_deref().is_none_or(|v| Some(v) == vault)
            && self.tenant.as_deref().is_none_or(|t| Some(t) == tenant)
    }
}

/// What the request handler must do because of the rules that fired.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Sleep this long first.
    pub latency_ms: u64,
    /// Close the connection before handling.
    pub drop: bool,
    /// Answer this status (and `Retry-After`) without handling.
    pub status: Option<(u16, Option<u64>)>,
    /// Answer exactly this (status, content type, body) without handling.
    pub answer: Option<(u16, Option<String>, Vec<u8>)>,
    /// Replace `{request}` in the `answer` body with the request's body.
    pub echo_request: bool,
    /// After a successful handling: `Some(None)` = drop, `Some(Some(code))` = answer code.
    /// Carries the rule index so the firing is counted only when it applies.
    pub commit_then_fail: Option<(String, Option<u16>)>,
}

/// Counters of requests, throttling and faults since start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Requests per route (every request that reached a route, faults included).
    pub requests: BTreeMap<String, u64>,
    /// 429 answers from the emulated throttling (not from fault rules) per route.
    pub throttled: BTreeMap<String, u64>,
    /// Faults fired per rule id.
    pub faults_by_rule: BTreeMap<String, u64>,
    /// Faults fired per kind (`status`, `latency`, `drop`, `commit_then_fail`).
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Responses per route and status, e.g. `"kv.set 200"`.
    pub responses: BTreeMap<String, u64>,
}

/// The active rules and the counters.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    rules: Vec<FaultRule>,
    next_id: u64,
    pub(crate) counters: Counters,
}

impl FaultEngine {
    /// Adds a rule (validated by the caller) and returns its id.
    pub(crate) fn add(&mut self, mut rule: FaultRule) -> String {
        self.next_id += 1;
        let id = rule
            .id
            .clone()
            .unwrap_or_else(|| format!("fault-{}", self.next_id));
        self.rules.retain(|r| r.id.as_deref() != Some(id.as_str()));
        rule.id = Some(id.clone());
        rule.fired = 0;
        self.rules.push(rule);
        id
    }

    pub(crate) fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id.as_deref() != Some(id));
        before != self.rules.len()
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    fn record(&mut self, idx: usize) {
        let rule = &mut self.rules[idx];
        rule.fired += 1;
        let id = rule.id.clone().unwrap_or_default();
        let kind = rule.kind.as_str().to_string();
        *self.counters.faults_by_rule.entry(id).or_default() += 1;
        *self.counters.faults_by_kind.entry(kind).or_default() += 1;
        if let Some(c) = &mut self.rules[idx].count {
            *c = c.saturating_sub(1);
        }
    }

    fn gc(&mut self) {
        self.rules.retain(|r| r.count != Some(0));
    }

    /// Counts a request and decides which faults hit it.
    pub(crate) fn plan(&mut self, route: &str, vault: Option<&str>, tenant: Option<&str>) -> Plan {
        *self.counters.requests.entry(route.to_string()).or_default() += 1;
        let mut plan = Plan::default();
        let mut rng = rand::rng();
        for idx in 0..self.rules.len() {
            let rule = &self.rules[idx];
            if rule.count == Some(0) || !rule.matches(route, vault, tenant) {
                continue;
            }
            if let Some(p) = rule.probability {
                if !rng.random_bool(p) {
                    continue;
                }
            }
            match rule.kind {
                FaultKind::Latency => {
                    plan.latency_ms += rule.latency_ms.unwrap_or(0);
                    self.record(idx);
                }
                FaultKind::Answer => {
                    if !plan.drop && plan.status.is_none() && plan.answer.is_none() {
                        let mut body = rule.body.clone().unwrap_or_default().into_bytes();
                        if let Some(min) = rule.body_bytes {
                            let unit = if body.is_empty() {
                                b"x".to_vec()
                            } else {
                                body.clone()
                            };
                            while (body.len() as u64) < min {
                                body.extend_from_slice(&unit);
                            }
                        }
                        plan.answer =
                            Some((rule.status.unwrap_or(200), rule.content_type.clone(), body));
                        plan.echo_request = rule.echo_request.unwrap_or(false);
                        self.record(idx);
                    }
                }
                FaultKind::Drop => {
                    if !plan.drop && plan.status.is_none() {
                        plan.drop = true;
                        self.record(idx);
                    }
                }
                FaultKind::Status => {
                    if !plan.drop && plan.status.is_none() {
                        plan.status = Some((rule.status.unwrap_or(500), rule.retry_after));
                        self.record(idx);
                    }
                }
                FaultKind::CommitThenFail => {
                    if plan.commit_then_fail.is_none() {
                        let code = if rule.then.as_deref() == Some("drop") {
                            None
                        } else {
                            Some(rule.status.unwrap_or(500))
                        };
                        plan.commit_then_fail = Some((rule.id.clone().unwrap_or_default(), code));
                    }
                }
            }
        }
        // A request failed before handling cannot commit.
        if plan.drop || plan.status.is_some() || plan.answer.is_some() {
            plan.commit_then_fail = None;
        }
        self.gc();
        plan
    }

    /// Records that a commit-then-fail rule applied (the request succeeded).
    pub(crate) fn fired_commit_then_fail(&mut self, id: &str) {
        if let Some(idx) = self.rules.iter().position(|r| r.id.as_deref() == Some(id)) {
            self.record(idx);
            self.gc();
        } else {
            // The rule was removed meanwhile; still count the firing.
            *self
                .counters
                .faults_by_rule
                .entry(id.to_string())
                .or_default() += 1;
            *self
                .counters
                .faults_by_kind
                .entry("commit_then_fail".into())
                .or_default() += 1;
        }
    }

    pub(crate) fn count_response(&mut self, route: &str, status: u16, throttled: bool) {
        *self
            .counters
            .responses
            .entry(format!("{route} {status}"))
            .or_default() += 1;
        if throttled {
            *self
                .counters
                .throttled
                .entry(route.to_string())
                .or_default() += 1;
        }
    }
}
