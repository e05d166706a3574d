//! The listener: TLS accept loop, HTTP/1.1 connections, routing, fault application.

use crate::control::Control;
use crate::http::{json, with_header, Req, Resp, Throttled};
use crate::keyvault::{self, KvOp};
use crate::shared::{lock, Shared};
use crate::{entra, graph};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a fault rule")
    }
}
impl std::error::Error for Dropped {}

/// Accepts connections until `shutdown` changes or its sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    control: Control,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let control = control.clone();
                conns.spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let svc = service_fn(move |req| dispatch(control.clone(), req, peer.ip()));
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
                // Reap finished connections.
                while conns.try_join_next().is_some() {}
            }
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}

/// Where a request goes.
enum Target {
    Control,
    Token(String),
    Discovery(crate::oidc::Doc),
    Msi,
    Kv(String, KvOp),
    Graph(String),
    /// `/v1.0/oauth2PermissionGrants`.
    Grants,
    /// An Event Grid topic's `/api/events`.
    EventGrid(String),
    /// `/{v1.0|beta}/identity/conditionalAccess/{policies|namedLocations|evaluate}`.
    Ca(String),
    /// `/v1.0/roleManagement/directory/…` and `/v1.0/servicePrincipals`.
    Roles(graph::RolesRoute),
    /// `/{v1.0|beta}/users` (create).
    Users,
    /// `/{v1.0|beta}/directory/deletedItems/…`: the segments after `deletedItems`.
    Deleted(Vec<String>),
    NotFound,
}

fn classify(req: &Req) -> Target {
    let host = req.host.as_str();
    if let Some(vault) = host.strip_suffix(".vault.azure.net") {
        if req.path.starts_with("/secrets") || req.path.starts_with("/deletedsecrets") {
            return Target::Kv(vault.to_string(), KvOp::parse(&req.method, &req.path));
        }
        return Target::NotFound;
    }
    if host.ends_with(".eventgrid.azure.net") {
        return match crate::eventgrid::topic_of(host, &req.path) {
            Some(topic) => Target::EventGrid(topic),
            None => Target::NotFound,
        };
    }
    if req.path.starts_with("/_emulator/") {
        return if host == "localhost" || host == "127.0.0.1" {
            Target::Control
        } else {
            Target::NotFound
        };
    }
    if req.path == "/msi/token" {
        return Target::Msi;
    }
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    if let [tenant, "oauth2", "v2.0", "token"] = segs.as_slice() {
        return Target::Token(tenant.to_string());
    }
    if req.method == hyper::Method::GET && !host.ends_with("graph.microsoft.com") {
        if let Some(doc) = crate::oidc::Doc::parse(&segs) {
            return Target::Discovery(doc);
        }
    }
    if let ["v1.0", "oauth2PermissionGrants"] = segs.as_slice() {
        return Target::Grants;
    }
    if let ["v1.0" | "beta", "identity", "conditionalAccess", what] = segs.as_slice() {
        return Target::Ca(what.to_string());
    }
    if let Some(route) = graph::RolesRoute::parse(&segs) {
        return Target::Roles(route);
    }
    if let ["v1.0" | "beta", "users"] = segs.as_slice() {
        return Target::Users;
    }
    if let ["v1.0" | "beta", "directory", "deletedItems", rest @ ..] = segs.as_slice() {
        return Target::Deleted(rest.iter().map(|s| s.to_string()).collect());
    }
    if let ["v1.0" | "beta", "users", user] = segs.as_slice() {
        if !user.is_empty() {
            return Target::Graph(user.to_string());
        }
    }
    Target::NotFound
}

/// Answers one request, with a `Date` header from the emulator's clock (so an advanced clock
/// shows in it, as a skewed one would at Azure; hyper's own would be the wall clock).
async fn dispatch(
    control: Control,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Resp, Dropped> {
    let clock = control.shared.clock.clone();
    let resp = answer(control, req, peer).await?;
    let now = clock.now();
    Ok(with_header(
        resp,
        "date",
        &httpdate::fmt_http_date(std::time::SystemTime::from(now)),
    ))
}

async fn answer(
    control: Control,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Resp, Dropped> {
    let (parts, body) = req.into_parts();
    let body: Bytes = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let authority = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(&authority)
        .to_ascii_lowercase();
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        host,
        authority,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body,
        peer: Some(peer),
    };
    let shared: &Arc<Shared> = &control.shared;
    let target = classify(&req);
    let rid = uuid::Uuid::new_v4().to_string();
    let (route, vault, tenant): (&str, Option<String>, Option<String>) = match &target {
        Target::Control => {
            let r = crate::control::handle(&control, &req);
            log(&req, "control", r.status().as_u16());
            return Ok(r);
        }
        Target::NotFound => {
            let r = json(
                404,
                &json!({"error": {"code": "NotFound", "message": format!("The emulator serves no {} {} on host {}", req.method, req.path, req.host)}}),
            );
            log(&req, "none", 404);
            return Ok(r);
        }
        Target::Token(t) => {
            let tid = lock(&shared.state)
                .tenant(t)
                .map(|x| x.id.clone())
                .unwrap_or_else(|| t.clone());
            ("token", None, Some(tid))
        }
        Target::Discovery(_) => ("discovery", None, None),
        Target::Msi => ("msi", None, None),
        Target::Kv(v, op) => {
            let tid = lock(&shared.state).vaults.get(v).map(|x| x.tenant.clone());
            (op.route(), Some(v.clone()), tid)
        }
        Target::Graph(_) => {
            let r = match req.method {
                hyper::Method::GET => "graph.get",
                hyper::Method::PATCH => "graph.patch",
                hyper::Method::DELETE => "graph.delete",
                _ => "graph.other",
            };
            (r, None, graph::peek_tenant(&req))
        }
        Target::Grants => ("graph.grants", None, graph::peek_tenant(&req)),
        Target::EventGrid(_) => ("eventgrid.publish", None, None),
        Target::Ca(_) => ("graph.ca", None, graph::peek_tenant(&req)),
        Target::Roles(r) => (r.name(), None, graph::peek_tenant(&req)),
        Target::Users => ("graph.create", None, graph::peek_tenant(&req)),
        Target::Deleted(_) => ("graph.deleted_items", None, graph::peek_tenant(&req)),
    };
    let plan = lock(&shared.faults).plan(route, vault.as_deref(), tenant.as_deref());
    if plan.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    if plan.drop {
        log(&req, route, 0);
        return Err(Dropped);
    }
    if let Some((status, content_type, mut body)) = plan.answer {
        if plan.echo_request {
            body = String::from_utf8_lossy(&body)
                .replace("{request}", &String::from_utf8_lossy(&req.body))
                .into_bytes();
        }
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        if let Some(ct) = content_type.and_then(|c| hyper::header::HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
        }
        lock(&shared.faults).count_response(route, status, false);
        log(&req, route, status);
        return Ok(r);
    }
    if let Some((status, retry_after)) = plan.status {
        let r = finish(
            fault_response(&req, &target, &rid, status, retry_after),
            &target,
            &req,
            &rid,
        );
        lock(&shared.faults).count_response(route, status, false);
        log(&req, route, status);
        return Ok(r);
    }
    let resp = match &target {
        Target::Token(t) => entra::token(shared, &req, t),
        Target::Discovery(d) => crate::oidc::handle(shared, &req, d),
        Target::Msi => entra::msi(shared, &req),
        Target::Kv(v, op) => keyvault::handle(shared, &req, v, op),
        Target::Graph(u) => graph::handle(shared, &req, u, &rid),
        Target::Grants => graph::handle_grants(shared, &req, &rid),
        Target::EventGrid(topic) => crate::eventgrid::publish(shared, &req, topic),
        Target::Ca(what) => graph::handle_ca(shared, &req, what, &rid),
        Target::Roles(r) => graph::handle_roles(shared, &req, r, &rid),
        Target::Users => graph::handle_create(shared, &req, &rid),
        Target::Deleted(rest) => graph::handle_deleted(shared, &req, rest, &rid),
        Target::Control | Target::NotFound => json(404, &json!({})),
    };
    let mut resp = finish(resp, &target, &req, &rid);
    if let Some((id, code)) = plan.commit_then_fail {
        if resp.status().is_success() {
            lock(&shared.faults).fired_commit_then_fail(&id);
            match code {
                None => {
                    log(&req, route, 0);
                    return Err(Dropped);
                }
                Some(status) => {
                    resp = finish(
                        fault_response(&req, &target, &rid, status, None),
                        &target,
                        &req,
                        &rid,
                    );
                }
            }
        }
    }
    let status = resp.status().as_u16();
    let throttled = resp.extensions().get::<Throttled>().is_some();
    lock(&shared.faults).count_response(route, status, throttled);
    log(&req, route, status);
    Ok(resp)
}

fn log(req: &Req, route: &str, status: u16) {
    tracing::info!(target: "keyturn_emulator::access", method = %req.method, host = %req.host, path = %req.path, route, status, "request");
}

/// Adds the request-id headers each service sends.
fn finish(r: Resp, target: &Target, req: &Req, rid: &str) -> Resp {
    match target {
        Target::Kv(..) => {
            let r = with_header(r, "x-ms-request-id", rid);
            with_header(
                r,
                "x-ms-keyvault-service-version",
                "1.9.0.0 (keyturn-emulator)",
            )
        }
        Target::Graph(_)
        | Target::Grants
        | Target::Ca(_)
        | Target::Roles(_)
        | Target::Users
        | Target::Deleted(_) => {
            let r = with_header(r, "request-id", rid);
            let crid = req.header("client-request-id").unwrap_or(rid).to_string();
            with_header(r, "client-request-id", &crid)
        }
        Target::EventGrid(_) => with_header(r, "x-ms-request-id", rid),
        Target::Token(_) | Target::Msi | Target::Discovery(_) => {
            if r.headers().contains_key("x-ms-request-id") {
                r
            } else {
                with_header(r, "x-ms-request-id", rid)
            }
        }
        Target::Control | Target::NotFound => r,
    }
}

/// The answer of a `status` or `commit_then_fail` fault, shaped like the service's errors.
fn fault_response(
    req: &Req,
    target: &Target,
    rid: &str,
    status: u16,
    retry_after: Option<u64>,
) -> Resp {
    let r = match target {
        Target::Kv(..) => {
            let code = match status {
                429 => "Throttled",
                503 => "ServiceUnavailable",
                _ => "InternalServerError",
            };
            keyvault::kv_error(status, code, "The service encountered an internal error (injected by a keyturn-emulator fault rule).", None)
        }
        Target::Graph(_)
        | Target::Grants
        | Target::Ca(_)
        | Target::Roles(_)
        | Target::Users
        | Target::Deleted(_) => {
            let code = match status {
                429 => "TooManyRequests",
                503 => "serviceNotAvailable",
                _ => "generalException",
            };
            graph::graph_error(
                req,
                rid,
                status,
                code,
                "Injected by a keyturn-emulator fault rule.",
            )
        }
        Target::EventGrid(_) => json(
            status,
            &json!({"error": {"code": if status == 429 { "TooManyRequests" } else { "InternalServerError" }, "message": "Injected by a keyturn-emulator fault rule."}}),
        ),
        _ => json(
            status,
            &json!({"error": "temporarily_unavailable", "error_description": "AADSTS90033: A transient error has occurred. Please try again. (injected by a keyturn-emulator fault rule)", "error_codes": [90033]}),
        ),
    };
    match retry_after {
        Some(s) => with_header(r, "retry-after", &s.to_string()),
        None => r,
    }
}
