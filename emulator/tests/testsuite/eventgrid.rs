//! Event Grid: a CloudEvents topic takes events with an Entra token whose audience is Event
//! Grid's, and refuses no token, another service's token, an access key and a body that is
//! not CloudEvents 1.0; what it took is read back through the control API.

use crate::common::*;
use serde_json::json;

const EVENTGRID_SCOPE: &str = "https://eventgrid.azure.net/.default";

#[tokio::test]
async fn a_topic_takes_cloud_events_with_an_event_grid_token_only() {
    let emu = start().await;
    let endpoint = emu.event_grid_endpoint("alerts");
    let host = url::Url::parse(&endpoint)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap()])
        .resolve(&host, emu.addr())
        .resolve("localhost", emu.addr())
        .build()
        .unwrap();
    let url = format!("{endpoint}?api-version=2018-01-01");
    let event = json!({"specversion": "1.0", "id": "e-1", "source": "keyturn://t", "type": "io.keyturn.rotation.failed", "data": {"account": "a"}});
    let batch = "application/cloudevents-batch+json; charset=utf-8";
    let post = |auth: Option<(&'static str, String)>, ct: &'static str, body: String| {
        let mut r = http.post(&url).header("content-type", ct).body(body);
        if let Some((h, v)) = auth {
            r = r.header(h, v);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    let grid = app_token(&http, &emu, ROTATOR, ROTATOR_SECRET, EVENTGRID_SCOPE).await;
    let vault = app_token(&http, &emu, ROTATOR, ROTATOR_SECRET, VAULT_SCOPE).await;
    let bearer = |t: &str| Some(("authorization", format!("Bearer {t}")));
    let one = json!([event]).to_string();

    assert_eq!(status(post(None, batch, one.clone()).await.unwrap()), 401);
    assert_eq!(
        status(post(bearer(&vault), batch, one.clone()).await.unwrap()),
        401
    );
    assert_eq!(
        status(
            post(Some(("aeg-sas-key", "a-key".into())), batch, one.clone())
                .await
                .unwrap()
        ),
        401
    );
    // Not CloudEvents: a plain JSON content type, a missing id, another spec version.
    assert_eq!(
        status(
            post(bearer(&grid), "application/json", one.clone())
                .await
                .unwrap()
        ),
        400
    );
    let no_id = json!([{"specversion": "1.0", "source": "s", "type": "t"}]).to_string();
    assert_eq!(
        status(post(bearer(&grid), batch, no_id).await.unwrap()),
        400
    );
    let v03 = json!([{"specversion": "0.3", "id": "x", "source": "s", "type": "t"}]).to_string();
    assert_eq!(status(post(bearer(&grid), batch, v03).await.unwrap()), 400);
    assert!(emu.control().event_grid_events("alerts").is_empty());

    // A batch, and one event in structured mode.
    assert_eq!(status(post(bearer(&grid), batch, one).await.unwrap()), 200);
    let single = "application/cloudevents+json; charset=utf-8";
    assert_eq!(
        status(
            post(bearer(&grid), single, event.to_string())
                .await
                .unwrap()
        ),
        200
    );
    let got = emu.control().event_grid_events("alerts");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event, event);
    assert_eq!(got[0].app_id, ROTATOR);
    assert_eq!(got[1].content_type, single);
    // The same through the control API.
    let r: serde_json::Value = http
        .get(format!(
            "{}/_emulator/eventgrid/alerts",
            emu.authority_host()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["events"][0]["event"]["id"], "e-1");
    assert_eq!(r["events"].as_array().unwrap().len(), 2);
}
