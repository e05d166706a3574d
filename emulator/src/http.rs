//! Small helpers for building responses and reading requests.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

/// A response as the emulator builds it.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Marker extension: this 429 comes from the emulated throttling (for the counters).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Throttled;

/// A fully read request.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    /// Host without port, lower case.
    pub host: String,
    /// Host header as sent (with port), for building absolute URLs.
    pub authority: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address as the emulator's socket sees it (the address Conditional
    /// Access's location conditions are evaluated for).
    pub peer: Option<std::net::IpAddr>,
}

impl Req {
    /// First value of a query parameter.
    pub fn query(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// A header as a string.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }

    /// The bearer token, if the request has an `Authorization: Bearer` header.
    pub fn bearer(&self) -> Option<&str> {
        let h = self.header("authorization")?;
        let (scheme, token) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// Parses a form-encoded body.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// Value of a form field.
pub(crate) fn field<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A JSON response.
pub(crate) fn json(status: u16, v: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A response without a body.
pub(crate) fn empty(status: u16) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Adds a header (values that are not valid header text are skipped).
pub(crate) fn with_header(mut r: Resp, k: &'static str, v: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(v) {
        r.headers_mut().insert(k, v);
    }
    r
}

/// Formats Unix seconds as RFC 3339 without fractions (`2024-01-01T12:00:00Z`, Graph's format).
pub(crate) fn rfc3339(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}
