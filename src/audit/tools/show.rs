//! `keyturn audit show`: which records pass the filter, and how a record reads in a table
//! or on one line.

use super::prefix;
use crate::audit::chain::Record;
use std::io::{self, Write};
use time::OffsetDateTime;

/// Which records `show` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this account.
    pub account: Option<String>,
    /// Only records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only these event types; `rotation` matches every `rotation.*`.
    pub events: Vec<String>,
    /// Only this outcome (`success`, `warning`, `failure` or `failed`, `pending`).
    pub outcome: Option<String>,
}

impl Filter {
    /// True when `r` passes.
    pub fn matches(&self, r: &Record) -> bool {
        if let Some(a) = &self.account {
            if r.account() != Some(a.as_str()) {
                return false;
            }
        }
        if let Some(since) = self.since {
            if r.time().is_none_or(|t| t < since) {
                return false;
            }
        }
        if !self.events.is_empty() {
            let ev = r.event();
            let hit = self.events.iter().any(|e| {
                ev == e || (ev.starts_with(e.as_str()) && ev.as_bytes().get(e.len()) == Some(&b'.'))
            });
            if !hit {
                return false;
            }
        }
        if let Some(o) = &self.outcome {
            let want = if o == "failed" { "failure" } else { o.as_str() };
            if r.outcome() != Some(want) {
                return false;
            }
        }
        true
    }
}

/// Parses `--since`: a duration back from `now` (`7d`, `12h`), an RFC 3339 time or a date.
pub fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc());
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now - d),
        Err(e) => Err(format!("--since {s:?}: expected a duration like 7d or 12h, a date like 2026-11-01, or an RFC 3339 time ({e})")),
    }
}

fn actor_text(r: &Record) -> String {
    let trigger = r.str("trigger");
    let actor = r
        .value
        .get("actor")
        .map(|a| match a.get("kind").and_then(|k| k.as_str()) {
            Some("user") => {
                let uid = a.get("uid").and_then(|u| u.as_u64()).unwrap_or(0);
                let mut s = match a.get("name").and_then(|n| n.as_str()) {
                    Some(n) => format!("{n}({uid})"),
                    None => format!("uid {uid}"),
                };
                if let Some(pid) = a.get("pid").and_then(|p| p.as_i64()) {
                    s.push_str(&format!(" pid {pid}"));
                }
                s
            }
            Some(k) => k.to_owned(),
            None => "?".into(),
        });
    match (trigger, actor) {
        (Some(t), Some(a)) => format!("{t}/{a}"),
        (Some(t), None) => t.to_owned(),
        (None, Some(a)) => a,
        (None, None) => "-".into(),
    }
}

fn detail_text(r: &Record) -> String {
    let mut parts = Vec::new();
    if let Some(v) = r.str("version") {
        parts.push(format!("version {}", prefix(v, 8)));
    }
    if let Some(d) = r.value.get("duration_ms").and_then(|d| d.as_u64()) {
        parts.push(format!("took {d}ms"));
    }
    if let Some(e) = r.value.get("error") {
        let mut s = String::from("error ");
        if let Some(c) = e.get("code").and_then(|c| c.as_str()) {
            s.push_str(c);
        } else if let Some(k) = e.get("kind").and_then(|k| k.as_str()) {
            s.push_str(k);
        }
        if let Some(h) = e.get("http_status").and_then(|h| h.as_u64()) {
            s.push_str(&format!(" HTTP {h}"));
        }
        if let Some(m) = e.get("message").and_then(|m| m.as_str()) {
            s.push_str(&format!(": {m}"));
        }
        if let Some(id) = e.get("request_id").and_then(|m| m.as_str()) {
            s.push_str(&format!(" (request {id})"));
        }
        parts.push(s);
    }
    if let Some(t) = r.str("ticket") {
        parts.push(format!("ticket {t}"));
    }
    if let Some(t) = r.str("reason") {
        parts.push(format!("reason {t:?}"));
    }
    if let Some(d) = r.str("detail") {
        parts.push(d.replace('\n', " "));
    }
    parts.join("; ")
}

/// One readable row: time, account, event, trigger/actor, outcome, detail. Every cell is
/// [`printable`]: a record's text (a ticket, a Key Vault message, an account name in a
/// crafted file) cannot send escape sequences to the terminal that shows it.
fn row(r: &Record) -> [String; 6] {
    [
        r.str("time").unwrap_or("?").to_owned(),
        r.account().unwrap_or("-").to_owned(),
        r.event().to_owned(),
        actor_text(r),
        r.outcome().unwrap_or("-").to_owned(),
        detail_text(r),
    ]
    .map(|cell| printable(&cell))
}

/// `s` with every control character (ESC, CR, BEL, …) written as its Rust escape (`\u{1b}`).
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Writes the records that pass `filter` as a table (or JSON lines); returns how many.
pub fn show(
    records: &[Record],
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<usize> {
    let chosen: Vec<&Record> = records.iter().filter(|r| filter.matches(r)).collect();
    if json {
        for r in &chosen {
            serde_json::to_writer(&mut *out, &r.value)?;
            writeln!(out)?;
        }
        return Ok(chosen.len());
    }
    let header = [
        "TIME",
        "ACCOUNT",
        "EVENT",
        "TRIGGER/ACTOR",
        "OUTCOME",
        "DETAIL",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = chosen.iter().map(|r| row(r)).collect();
    let mut widths = [0usize; 5];
    for r in std::iter::once(&header).chain(rows.iter()) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (w, c) in widths.iter().zip(r.iter()) {
            line.push_str(&format!("{c:<w$}  "));
        }
        line.push_str(&r[5]);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(chosen.len())
}

/// A record as one readable line (for `tail`).
pub fn line_text(r: &Record) -> String {
    let [time, account, event, actor, outcome, detail] = row(r);
    let mut s = format!("{time} {event:<24} account={account} by={actor} outcome={outcome}");
    if !detail.is_empty() {
        s.push_str(&format!(" ({detail})"));
    }
    s
}
