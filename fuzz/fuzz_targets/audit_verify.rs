//! The audit tools never panic on any log, rotated file or seal, and give the same verdict
//! twice. Besides raw bytes, the fuzzer builds records with *valid* hashes around arbitrary
//! strings (multibyte `version`, `event`, `detail`, huge or broken `seq`), and seal files with
//! arbitrary fields or bytes, so that the chain checks, the seal checks, `show`, `tail`'s
//! line rendering and the daemon's `FileSink::open` see crafted content a random byte
//! string would never reach.
#![no_main]
use keyturn::audit::chain::{self, GENESIS_PREV};
use keyturn::audit::file::seal_path;
use keyturn::audit::tools;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};

#[derive(Debug, Arbitrary)]
struct Rec {
    /// `None`: the next sequence number; otherwise this one.
    seq: Option<u64>,
    /// Link to the previous record's hash (otherwise `bad_prev`, or genesis).
    linked: bool,
    bad_prev: Option<String>,
    event: String,
    version: Option<String>,
    account: Option<String>,
    detail: Option<String>,
    time: Option<String>,
    outcome: Option<String>,
    /// An extra member with any JSON value built from a string.
    extra: Option<(String, String)>,
    /// Break this record's hash after building it.
    corrupt: Option<u8>,
}

#[derive(Debug, Arbitrary)]
enum Seal {
    None,
    Raw(Vec<u8>),
    /// `seq`/`hash` of the last record when `None`.
    Fields {
        seq: Option<u64>,
        hash: Option<String>,
        padded: bool,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    before: Vec<u8>,
    records: Vec<Rec>,
    after: Vec<u8>,
    /// Records that go to a rotated file `<log>.000000000000` (chain continues into the log).
    rotated: Vec<Rec>,
    seal: Seal,
    partial: bool,
    /// Also open the log as the daemon does (slow: it writes and syncs).
    open_sink: bool,
}

fn hex(s: &str) -> String {
    chain::sha256_hex(s.as_bytes())
}

/// Encodes `recs` as lines with valid hashes (unless asked to corrupt one), continuing
/// from `(seq, prev)`.
fn build(recs: &[Rec], state: &mut (u64, String), out: &mut Vec<u8>) {
    for r in recs {
        let seq = r.seq.unwrap_or(state.0);
        let prev = if r.linked {
            state.1.clone()
        } else {
            r.bad_prev.clone().unwrap_or_else(|| GENESIS_PREV.into())
        };
        let mut m = serde_json::Map::new();
        m.insert("v".into(), 1.into());
        m.insert("seq".into(), seq.into());
        m.insert(
            "time".into(),
            r.time
                .clone()
                .unwrap_or_else(|| "2026-11-22T10:00:00.000Z".into())
                .into(),
        );
        m.insert("event".into(), r.event.clone().into());
        for (k, v) in [
            ("version", &r.version),
            ("account", &r.account),
            ("detail", &r.detail),
            ("outcome", &r.outcome),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Some((k, v)) = &r.extra {
            let value = serde_json::from_str(v).unwrap_or_else(|_| v.clone().into());
            if k != "prev" && k != "hash" {
                m.insert(k.clone(), value);
            }
        }
        m.insert("prev".into(), prev.into());
        let body = serde_json::to_string(&m).expect("a map serializes");
        let mut hash = chain::sha256_hex(body.as_bytes());
        if let Some(c) = r.corrupt {
            hash = hex(&format!("{hash}{c}"));
        }
        out.extend_from_slice(&body.as_bytes()[..body.len() - 1]);
        out.extend_from_slice(format!(",\"hash\":\"{hash}\"}}\n").as_bytes());
        *state = (seq.wrapping_add(1), hash);
    }
}

fn check(files: &[PathBuf], partial: bool, live: &Path) {
    let first = tools::verify(files, partial).map(|r| (r.problem.is_some(), r.records));
    let again = tools::verify(files, partial).map(|r| (r.problem.is_some(), r.records));
    assert_eq!(first.is_ok(), again.is_ok());
    if let (Ok(a), Ok(b)) = (&first, &again) {
        assert_eq!(a, b);
    }
    let mut sink = Vec::new();
    let code = tools::verify_command(files, partial, &mut sink);
    assert!((0..=2).contains(&code), "exit {code}");
    if let Ok(records) = tools::read_records(files, &mut sink) {
        let all = tools::Filter::default();
        let _ = tools::show(&records, &all, false, &mut sink);
        let _ = tools::show(&records, &all, true, &mut sink);
        for r in &records {
            let _ = tools::line_text(r);
        }
    }
    let _ = tools::tail(live, 5, false, &mut sink, &|| true);
}

fuzz_target!(|input: Input| {
    // Line parsing on its own.
    if let Ok(text) = std::str::from_utf8(&input.before) {
        for line in text.lines() {
            let _ = chain::parse_line(line);
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let live = dir.path().join("audit.jsonl");
    let mut state = (0u64, GENESIS_PREV.to_owned());
    let mut files = Vec::new();
    if !input.rotated.is_empty() {
        let mut bytes = Vec::new();
        build(&input.rotated, &mut state, &mut bytes);
        let rotated = dir.path().join("audit.jsonl.000000000000");
        std::fs::write(&rotated, &bytes).expect("write");
        files.push(rotated);
    }
    let mut bytes = input.before.clone();
    build(&input.records, &mut state, &mut bytes);
    bytes.extend_from_slice(&input.after);
    std::fs::write(&live, &bytes).expect("write");
    files.push(live.clone());
    match &input.seal {
        Seal::None => {}
        Seal::Raw(b) => std::fs::write(seal_path(&live), b).expect("write"),
        Seal::Fields { seq, hash, padded } => {
            let mut text = serde_json::json!({
                "seq": seq.unwrap_or(state.0.wrapping_sub(1)),
                "hash": hash.clone().unwrap_or_else(|| state.1.clone()),
                "time": "2026-11-22T10:00:00.000Z",
            })
            .to_string();
            if *padded {
                text.push_str(&" ".repeat(150));
                text.push('\n');
            }
            std::fs::write(seal_path(&live), text).expect("write");
        }
    }
    check(&files, input.partial, &live);
    check(&files, !input.partial, &live);
    if input.open_sink {
        // The daemon's open: continues the chain, or refuses with an error; never panics.
        let opts = keyturn::audit::FileOptions {
            max_bytes: 4096,
            ..Default::default()
        };
        if let Ok(sink) = keyturn::audit::FileSink::open_with(&live, opts) {
            drop(sink);
            check(&files, input.partial, &live);
        }
    }
});
