//! The vault's other client: a consumer reading one management account's password through
//! the official SDK (`azure_security_keyvault_secrets`, signed in with `azure_identity`) at a
//! fixed rate, as a CoreView-style tool fetches it on demand. Its reads, failures, the 429s
//! its requests meet (the SDK's retries included: counted at the transport, through
//! keyturn's instrumented client) and each read's latency are kept per phase of the run
//! (start-up, rotate-all, drift check), which the run switches with [`Consumer::phase`].

use anyhow::Result;
use azure_core::credentials::Secret;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the consumer saw in one phase.
#[derive(Default, Debug, Clone)]
pub(crate) struct Seen {
    /// Reads that returned the secret.
    pub(crate) reads: u64,
    /// Reads that failed (after the SDK's retries).
    pub(crate) failures: u64,
    /// 429 answers to any of its requests (retries included).
    pub(crate) throttled: u64,
    /// Key Vault requests it sent (retries and authentication challenges included).
    pub(crate) kv_requests: u64,
    /// Each read's time, from the call to the SDK's answer (retries included).
    pub(crate) latencies: Vec<Duration>,
}

/// The phases by name; reads outside a named phase go to `""` and are not reported.
#[derive(Default)]
struct Phases {
    current: String,
    seen: BTreeMap<String, Seen>,
}

impl Phases {
    fn now(&mut self) -> &mut Seen {
        let name = self.current.clone();
        self.seen.entry(name).or_default()
    }
}

/// Counts the consumer's requests and 429s into the current phase.
struct Counter(Arc<Mutex<Phases>>);

impl keyturn::observe::Observer for Counter {
    fn request(&self, service: &'static str, status: Option<u16>, _: Duration) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let seen = p.now();
        if service == "keyvault" {
            seen.kv_requests += 1;
        }
        if status == Some(429) {
            seen.throttled += 1;
        }
    }
    fn paced(&self, _: &'static str, _: Duration) {}
}

/// A running consumer.
pub(crate) struct Consumer {
    phases: Arc<Mutex<Phases>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Where and as whom the consumer reads.
pub(crate) struct Target<'a> {
    /// keyturn's loaded configuration (its TLS roots and name resolution reach the emulator).
    pub(crate) loaded: &'a keyturn::config::Loaded,
    pub(crate) authority_host: String,
    pub(crate) tenant: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
    pub(crate) vault_url: String,
    pub(crate) secret: String,
}

impl Consumer {
    /// Starts reading `target.secret` `rate` times a second (a late read is not made up for
    /// by a burst).
    pub(crate) fn start(target: Target<'_>, rate: f64) -> Result<Consumer> {
        let phases = Arc::new(Mutex::new(Phases::default()));
        let http = keyturn::azure::http_client(
            &target.loaded.config.tls,
            &target.loaded.config.network,
            Arc::new(Counter(phases.clone())),
        )?;
        let credential = ClientSecretCredential::new(
            target.tenant,
            target.client_id.into(),
            Secret::new(target.client_secret.to_string()),
            Some(ClientSecretCredentialOptions {
                client_options: keyturn::azure::client_options(&http, Some(&target.authority_host)),
            }),
        )?;
        let client = SecretClient::new(
            &target.vault_url,
            credential,
            Some(SecretClientOptions {
                client_options: keyturn::azure::client_options(&http, None),
                ..Default::default()
            }),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let task = {
            let (stop, phases, secret) = (stop.clone(), phases.clone(), target.secret);
            let client = Arc::new(client);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    // Each read on its own task: a slow answer does not lower the rate.
                    let (client, phases, secret) = (client.clone(), phases.clone(), secret.clone());
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let ok = client.get_secret(&secret, None).await.is_ok();
                        let took = started.elapsed();
                        let mut p = phases.lock().unwrap_or_else(|e| e.into_inner());
                        let seen = p.now();
                        if ok {
                            seen.reads += 1;
                        } else {
                            seen.failures += 1;
                        }
                        seen.latencies.push(took);
                    });
                }
            })
        };
        Ok(Consumer { phases, stop, task })
    }

    /// From now on, what the consumer sees counts for `name` (`""`: for no phase).
    pub(crate) fn phase(&self, name: &str) {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current = name.to_owned();
    }

    /// Stops reading; what each named phase saw.
    pub(crate) async fn stop(self) -> BTreeMap<String, Seen> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        // Reads in flight end within the client's timeout; give them a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut p = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::mem::take(&mut p.seen);
        seen.remove("");
        for s in seen.values_mut() {
            s.latencies.sort();
        }
        seen
    }

    /// The current phase's figures so far (its Key Vault requests, to tell them from keyturn's).
    pub(crate) fn snapshot(&self, name: &str) -> Seen {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}
