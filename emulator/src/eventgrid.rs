//! Event Grid: publishing to a basic topic whose input schema is CloudEvents 1.0, at
//! `POST https://{topic}.{region}-1.eventgrid.azure.net/api/events?api-version=2018-01-01`,
//! authenticated with an Entra bearer token for `https://eventgrid.azure.net`. Events are
//! kept per topic for tests (`Control::event_grid_events`, `GET /_emulator/eventgrid/{topic}`).
//!
//! What the emulator models, and what stays unsure (`docs/emulator.md`): any topic name is
//! accepted (no topic resource, no RBAC: the EventGrid Data Sender role is not checked); an
//! access key (`aeg-sas-key`) or SAS token is refused, as on a topic with local auth disabled;
//! the error bodies' exact wording is not Event Grid's (their `error.code` values follow the
//! documented ones: `Unauthorized`, `BadRequest`).

use crate::aad::EVENTGRID_AUD;
use crate::http::{json, Req, Resp};
use crate::jwt::{self, TokenError};
pub use crate::shared::PublishedEvent;
use crate::shared::{lock, Shared};
use serde_json::json;

/// The region in the emulator's topic host names (its certificate covers
/// `*.westeurope-1.eventgrid.azure.net`).
pub const REGION: &str = "westeurope-1";

fn error(status: u16, code: &str, message: &str) -> Resp {
    json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// The topic a request is for: `{topic}.{region}-1.eventgrid.azure.net` + `/api/events`.
pub(crate) fn topic_of(host: &str, path: &str) -> Option<String> {
    let rest = host.strip_suffix(".eventgrid.azure.net")?;
    let (topic, _region) = rest.split_once('.')?;
    (path == "/api/events" && !topic.is_empty()).then(|| topic.to_string())
}

/// `POST /api/events`.
pub(crate) fn publish(shared: &Shared, req: &Req, topic: &str) -> Resp {
    if req.method != hyper::Method::POST {
        return error(405, "MethodNotAllowed", "Use POST to publish events.");
    }
    if !req.query.iter().any(|(k, _)| k == "api-version") {
        return error(
            400,
            "BadRequest",
            "The api-version query parameter is missing.",
        );
    }
    if req.header("aeg-sas-key").is_some() || req.header("aeg-sas-token").is_some() {
        return error(401, "Unauthorized", "Local authentication (access keys, SAS) is disabled for this topic; use a Microsoft Entra token.");
    }
    let Some(token) = req.bearer() else {
        return error(
            401,
            "Unauthorized",
            "The request is missing a Microsoft Entra bearer token.",
        );
    };
    let key = lock(&shared.state).key_bytes();
    let claims = match jwt::verify(&key, token, EVENTGRID_AUD, shared.clock.unix()) {
        Ok(c) => c,
        Err(TokenError::WrongAudience(found)) => {
            return error(
                401,
                "Unauthorized",
                &format!("The token's audience {found} is not {EVENTGRID_AUD}."),
            )
        }
        Err(TokenError::Expired) => return error(401, "Unauthorized", "The token has expired."),
        Err(_) => {
            return error(
                401,
                "Unauthorized",
                "The token is malformed or its signature is invalid.",
            )
        }
    };
    let content_type = req.header("content-type").unwrap_or_default().to_string();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                400,
                "BadRequest",
                &format!("The request body is not JSON: {e}"),
            )
        }
    };
    let events = match (media.as_str(), body) {
        ("application/cloudevents-batch+json", serde_json::Value::Array(a)) => a,
        ("application/cloudevents+json", v @ serde_json::Value::Object(_)) => vec![v],
        (m, _) => {
            return error(400, "BadRequest", &format!("This topic takes CloudEvents 1.0: Content-Type application/cloudevents+json with one event, or application/cloudevents-batch+json with an array; got {m:?} and a body that does not match it."))
        }
    };
    for e in &events {
        let text = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if text("specversion") != "1.0" {
            return error(400, "BadRequest", "Every event needs specversion \"1.0\".");
        }
        for k in ["id", "source", "type"] {
            if text(k).is_empty() {
                return error(400, "BadRequest", &format!("An event has no {k}."));
            }
        }
    }
    let mut kept = lock(&shared.events);
    let list = kept.entry(topic.to_string()).or_default();
    for event in events {
        list.push(PublishedEvent {
            app_id: claims.appid.clone(),
            content_type: content_type.clone(),
            event,
        });
    }
    json(200, &json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_is_the_first_label_of_an_event_grid_host() {
        assert_eq!(
            topic_of("keyturn.westeurope-1.eventgrid.azure.net", "/api/events").as_deref(),
            Some("keyturn")
        );
        assert_eq!(
            topic_of("keyturn.westeurope-1.eventgrid.azure.net", "/api/other"),
            None
        );
        assert_eq!(topic_of("kv1.vault.azure.net", "/api/events"), None);
    }
}
