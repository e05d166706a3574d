//! The share of each budget reserved for the vaults' other clients (`limits.reserve`) and the
//! urgent rotation that may use it.

use crate::common::*;
use keyturn::admin::client;
use keyturn::admin::proto::{Request, Target};

/// `rotate --all --urgent` is recorded as urgent, with its reason and ticket, and rotates
/// every account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_rotate_all_is_audited_as_urgent() {
    let w = World::new(Opts {
        verify: false,
        ..Default::default()
    })
    .await;
    let service = w.service().await;
    let answer = client::send(
        &service.socket,
        &Request::Rotate {
            target: Target::All,
            reason: Some("suspected compromise".into()),
            ticket: Some("INC-77".into()),
            wait: true,
            urgent: true,
        },
    )
    .await
    .unwrap();
    assert!(answer.ok, "{answer:?}");
    let accepted: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r["event"] == "admin.command_accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let record = &accepted[0];
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("rotate all urgently"),
        "{record}"
    );
    assert_eq!(record["reason"], "suspected compromise");
    assert_eq!(record["ticket"], "INC-77");
    for (account, ..) in USERS {
        assert_eq!(w.count("rotation.completed", Some(account)), 1, "{account}");
        assert!(invariant(&w.emu, account).holds, "{account}");
    }
    // Without a reason, or for one account, it is refused before anything is recorded.
    for request in [
        r#"{"v":1,"cmd":"rotate","all":true,"urgent":true}"#,
        r#"{"v":1,"cmd":"rotate","account":"svc-1","reason":"r","urgent":true}"#,
    ] {
        let answer = raw(&service.socket, request);
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    }
    assert_eq!(service.stop().await, 0);
}

/// One raw exchange on the admin socket: a request line, its answer.
fn raw(socket: &std::path::Path, request: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    tokio::task::block_in_place(|| {
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    })
}
