//! The chained record: the exact bytes of a line, its canonical form and its hash.
//!
//! A record is one JSON object on one line with its members in a fixed order
//! (`v`, `seq`, `time`, `event`, the event's optional fields, `prev`, `hash`). Its
//! *canonical bytes* are the line without the trailing newline and without the final
//! `,"hash":"…"` member, i.e. ending in `"prev":"<hex>"}`. `hash` is the lowercase hex
//! SHA-256 of the canonical bytes; `prev` is the previous record's `hash`, or
//! [`GENESIS_PREV`] for the first record of a chain. See `docs/audit.md`.

use super::{
    format_time, Actor, AuditEvent, ErrorInfo, Outcome, ReadinessChange, Trigger, SCHEMA_VERSION,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `prev` of the first record of a chain (the genesis record): 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The suffix every record ends with, before the hash's 64 hex digits.
const HASH_MEMBER: &str = ",\"hash\":\"";
/// Length of `,"hash":"<64 hex>"}`.
const SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;

/// The record's members in their canonical order (everything but `hash`).
#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    seq: u64,
    time: String,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_id: Option<&'a Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vault: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<&'a Trigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readiness: Option<&'a ReadinessChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    prev: &'a str,
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// True for 64 lowercase hex digits (a SHA-256 in hex).
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A record ready to append: the line (with its newline) and its hash.
pub struct Encoded {
    /// The bytes to append, ending in `\n`.
    pub line: Vec<u8>,
    /// The record's `hash`, which the next record's `prev` must carry.
    pub hash: String,
}

/// Encodes `event` as record number `seq` following the record whose hash is `prev`.
pub fn encode(seq: u64, prev: &str, event: &AuditEvent) -> Result<Encoded, serde_json::Error> {
    let canonical = Canonical {
        v: SCHEMA_VERSION,
        seq,
        time: format_time(event.time),
        event: event.event.as_str(),
        account: event.account.as_deref(),
        rotation_id: event.rotation_id.as_ref(),
        user: event.user.as_deref(),
        vault: event.vault.as_deref(),
        secret: event.secret.as_deref(),
        version: event.version.as_deref(),
        trigger: event.trigger.as_ref(),
        actor: event.actor.as_ref(),
        reason: event.reason.as_deref(),
        ticket: event.ticket.as_deref(),
        outcome: event.outcome.as_ref(),
        request_id: event.request_id.as_deref(),
        error: event.error.as_ref(),
        duration_ms: event.duration_ms,
        readiness: event.readiness.as_ref(),
        detail: event.detail.as_deref(),
        prev,
    };
    let mut line = serde_json::to_vec(&canonical)?;
    let hash = sha256_hex(&line);
    // Replace the closing brace by the hash member and close again.
    line.pop();
    line.extend_from_slice(HASH_MEMBER.as_bytes());
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok(Encoded { line, hash })
}

/// One record read back from a log.
#[derive(Debug, Clone)]
pub struct Record {
    /// Sequence number: 0 for the genesis record, then +1 per record across files.
    pub seq: u64,
    /// The previous record's hash.
    pub prev: String,
    /// This record's hash (verified against its canonical bytes).
    pub hash: String,
    /// Every member, for display and filters.
    pub value: serde_json::Value,
}

impl Record {
    /// A string member, when present.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(|v| v.as_str())
    }

    /// The event type (`rotation.started`, …).
    pub fn event(&self) -> &str {
        self.str("event").unwrap_or("")
    }

    /// The account, when the event concerns one.
    pub fn account(&self) -> Option<&str> {
        self.str("account")
    }

    /// The outcome (`success`, `warning`, `failure`, `pending`), when recorded.
    pub fn outcome(&self) -> Option<&str> {
        self.str("outcome")
    }

    /// The record's time.
    pub fn time(&self) -> Option<time::OffsetDateTime> {
        self.str("time").and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    }
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a keyturn audit record: {0}")]
    Malformed(String),
    #[error("its hash does not match its content (stated {stated}, computed {computed}): the record was edited")]
    HashMismatch { stated: String, computed: String },
}

/// Parses one line (without its newline) and checks its own hash.
pub fn parse_line(line: &str) -> Result<Record, LineError> {
    let malformed = |m: &str| LineError::Malformed(m.to_owned());
    if line.len() < SUFFIX_LEN + 2 || !line.is_char_boundary(line.len() - SUFFIX_LEN) {
        return Err(malformed("too short or not ending in a hash member"));
    }
    let (body, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let Some(stated) = suffix
        .strip_prefix(HASH_MEMBER)
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| is_hex64(h))
    else {
        return Err(malformed("does not end in ,\"hash\":\"<64 hex digits>\"}"));
    };
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| LineError::Malformed(format!("invalid JSON: {e}")))?;
    let seq = value
        .get("seq")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| malformed("no seq"))?;
    let prev = value
        .get("prev")
        .and_then(|v| v.as_str())
        .filter(|h| is_hex64(h))
        .ok_or_else(|| malformed("no prev hash"))?
        .to_owned();
    let mut canonical = Vec::with_capacity(body.len() + 1);
    canonical.extend_from_slice(body.as_bytes());
    canonical.push(b'}');
    let computed = sha256_hex(&canonical);
    if computed != stated {
        return Err(LineError::HashMismatch {
            stated: stated.to_owned(),
            computed,
        });
    }
    Ok(Record {
        seq,
        prev,
        hash: computed,
        value,
    })
}

/// The members of `line` (a valid record, without its newline) that do not depend on its
/// place in a chain: the line without its `seq` value and without its `prev` and `hash`
/// members. Two records with the same content key are copies of one another (`audit_blob`).
pub fn content_key(line: &str) -> Result<String, LineError> {
    let (head, _, mid) = split_for_rechain(line)?;
    Ok(format!("{head}{mid}"))
}

/// `line` (a valid record, without its newline) moved to another chain: the same bytes with
/// `seq` and `prev` replaced and the hash computed again. The append-blob copy
/// (`audit_blob`) continues one chain across replicas this way, each record byte for byte
/// the replica's own but for those three members.
pub fn rechain(line: &str, seq: u64, prev: &str) -> Result<Encoded, LineError> {
    let (head, _, mid) = split_for_rechain(line)?;
    let mut out = Vec::with_capacity(line.len() + 8);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(mid.as_bytes());
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev.as_bytes());
    out.extend_from_slice(b"\"}");
    let hash = sha256_hex(&out);
    out.pop();
    out.extend_from_slice(HASH_MEMBER.as_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    Ok(Encoded { line: out, hash })
}

/// `line` cut around its `seq` value and before its `prev` member: (everything up to and
/// including `"seq":`, the digits, everything after them up to `,"prev":`).
fn split_for_rechain(line: &str) -> Result<(&str, &str, &str), LineError> {
    parse_line(line)?;
    const SEQ: &str = ",\"seq\":";
    const PREV: &str = ",\"prev\":\"";
    let malformed = |m: &str| LineError::Malformed(m.to_owned());
    // `seq` is the second member, after `"v":<digits>`: its first occurrence is the member.
    let at = line.find(SEQ).ok_or_else(|| malformed("no seq member"))? + SEQ.len();
    let digits = line[at..].bytes().take_while(u8::is_ascii_digit).count();
    // The line ends in `,"prev":"<64 hex>"` and the hash member (checked by `parse_line`).
    let tail = PREV.len() + 64 + 1 + SUFFIX_LEN;
    let end = line
        .len()
        .checked_sub(tail)
        .filter(|e| *e >= at + digits && line[*e..].starts_with(PREV))
        .ok_or_else(|| malformed("prev is not the member before hash"))?;
    Ok((&line[..at], &line[at..at + digits], &line[at + digits..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;
    use time::macros::datetime;

    #[test]
    fn encoded_lines_parse_back_with_their_hash() {
        let mut ev = AuditEvent::new(EventKind::RotationStarted, datetime!(2026-11-22 10:00 UTC));
        ev.account = Some("coreview".into());
        ev.detail = Some("line\nbreak \"quoted\" ünïcode".into());
        let e = encode(7, GENESIS_PREV, &ev).unwrap();
        let text = std::str::from_utf8(&e.line).unwrap();
        assert!(text.starts_with("{\"v\":1,\"seq\":7,\"time\":\"2026-11-22T10:00:00.000Z\",\"event\":\"rotation.started\",\"account\":\"coreview\""));
        assert!(text.ends_with(&format!(
            ",\"prev\":\"{GENESIS_PREV}\",\"hash\":\"{}\"}}\n",
            e.hash
        )));
        assert_eq!(text.matches('\n').count(), 1);
        let r = parse_line(text.trim_end_matches('\n')).unwrap();
        assert_eq!(
            (r.seq, r.prev.as_str(), r.hash.as_str()),
            (7, GENESIS_PREV, e.hash.as_str())
        );
        assert_eq!(r.event(), "rotation.started");
        assert_eq!(r.time(), Some(datetime!(2026-11-22 10:00 UTC)));
    }

    #[test]
    fn any_edit_is_a_hash_mismatch() {
        let ev = AuditEvent::new(EventKind::DaemonStarted, datetime!(2026-11-22 10:00 UTC));
        let e = encode(0, GENESIS_PREV, &ev).unwrap();
        let text = String::from_utf8(e.line).unwrap();
        let edited = text.trim_end().replace("daemon.started", "daemon.stopping");
        assert!(matches!(
            parse_line(&edited),
            Err(LineError::HashMismatch { .. })
        ));
        assert!(matches!(
            parse_line("{\"v\":1}"),
            Err(LineError::Malformed(_))
        ));
    }

    #[test]
    fn a_rechained_record_keeps_its_content_and_verifies_in_the_new_chain() {
        let mut ev = AuditEvent::new(EventKind::RotationStarted, datetime!(2026-11-22 10:00 UTC));
        ev.account = Some("coreview".into());
        ev.detail = Some("\"seq\":1,\"prev\":\"x\" in a detail".into());
        let local = encode(41, GENESIS_PREV, &ev).unwrap();
        let text = std::str::from_utf8(&local.line).unwrap().trim_end();
        let prev = "a".repeat(64);
        let moved = rechain(text, 7, &prev).unwrap();
        let moved_text = std::str::from_utf8(&moved.line).unwrap().trim_end();
        let r = parse_line(moved_text).unwrap();
        assert_eq!(
            (r.seq, r.prev.as_str(), r.hash.as_str()),
            (7, prev.as_str(), moved.hash.as_str())
        );
        assert_eq!(r.value["detail"], ev.detail.clone().unwrap().as_str());
        assert_eq!(content_key(text).unwrap(), content_key(moved_text).unwrap());
        // What the event itself would encode to at that place in the chain.
        assert_eq!(moved.line, encode(7, &prev, &ev).unwrap().line);
        let edited = text.replace("coreview", "coreviex");
        assert!(rechain(&edited, 7, &prev).is_err());
    }
}
