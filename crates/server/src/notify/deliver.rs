//! Delivery to one endpoint: a thread that takes the outbox's events in order and POSTs each
//! (one event per request, as Distribution sends them), retrying the same event until the
//! endpoint takes it: quickly up to `threshold` failures in a row, then every `backoff`. An
//! event is never skipped for a failure, so the order per endpoint holds across outages and
//! restarts; only the outbox's bound drops events, and it counts them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Endpoint;
use berth_registry::{Outbox, OutboxCursor as Cursor};

use super::event::{ENVELOPE_MEDIA_TYPE, Envelope, Event};

/// How long a worker waits for new events before looking again.
const IDLE: Duration = Duration::from_secs(1);
/// The pause between quick retries, below the threshold.
const QUICK_RETRY: Duration = Duration::from_millis(100);

/// Starts the delivery thread of `endpoint`.
pub fn start(outbox: Arc<Outbox>, endpoint: Endpoint) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("notify-{}", endpoint.key)).spawn(move || run(&outbox, &endpoint))?;
    Ok(())
}

fn run(outbox: &Outbox, endpoint: &Endpoint) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(endpoint.timeout))
        .max_redirects(0)
        .build()
        .new_agent();
    let counters = outbox.counters(&endpoint.key).expect("opened with this endpoint");
    let mut failures: u32 = 0;
    loop {
        let (cursor, events) = match outbox.next(&endpoint.key, IDLE) {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(endpoint = %endpoint.name, error = %e, "reading the notification outbox failed");
                std::thread::sleep(endpoint.backoff.max(QUICK_RETRY));
                continue;
            }
        };
        if events.is_empty() {
            // Its segment went past the bound; the cursor has moved on.
            continue;
        }
        for (i, raw) in events.iter().enumerate() {
            let event = match serde_json::from_slice::<Event>(raw) {
                Ok(e) => Some(e),
                Err(err) => {
                    // Stored by this code: a line it cannot read is damage, reported, not a stall.
                    tracing::error!(endpoint = %endpoint.name, segment = cursor.segment, error = %err, "unreadable event in the notification outbox skipped");
                    None
                }
            };
            if let Some(e) = event.as_ref().filter(|e| endpoint.wants(&e.action, e.target.media_type.as_deref())) {
                loop {
                    match send(&agent, endpoint, e) {
                        Ok(()) => {
                            failures = 0;
                            counters.delivered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(why) => {
                            failures += 1;
                            counters.failures.fetch_add(1, Ordering::Relaxed);
                            let wait = if failures >= endpoint.threshold { endpoint.backoff } else { QUICK_RETRY };
                            if failures == endpoint.threshold || failures.is_multiple_of(100) {
                                tracing::warn!(endpoint = %endpoint.name, url = %super::redacted(&endpoint.url), failures, error = %why, "notification endpoint failing; retrying every {wait:?}, events wait in the outbox");
                            }
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
            let next = Cursor { segment: cursor.segment, index: cursor.index + i as u32 + 1 };
            if let Err(err) = outbox.advance(&endpoint.key, next) {
                tracing::error!(endpoint = %endpoint.name, error = %err, "removing delivered notifications failed");
            }
            // Stored once per batch (and every STORE_EVERY events of a long one): until then a
            // crash sends these events again, which listeners dedupe by id.
            if (i + 1) % STORE_EVERY == 0 || i + 1 == events.len() {
                store_cursor(outbox, endpoint);
            }
        }
    }
}

/// Within one batch, the cursor is stored at least every this many events.
const STORE_EVERY: usize = 64;

fn store_cursor(outbox: &Outbox, endpoint: &Endpoint) {
    while let Err(err) = outbox.store_cursor(&endpoint.key) {
        tracing::error!(endpoint = %endpoint.name, error = %err, "storing the notification cursor failed");
        std::thread::sleep(endpoint.backoff.max(QUICK_RETRY));
    }
}

fn send(agent: &ureq::Agent, endpoint: &Endpoint, e: &Event) -> Result<(), String> {
    let body = serde_json::to_vec_pretty(&Envelope { events: vec![e.clone()] }).expect("events serialise");
    let mut req = ureq::http::Request::builder().method("POST").uri(&endpoint.url);
    for (k, v) in &endpoint.headers {
        req = req.header(k, v);
    }
    let req = req.header("Content-Type", ENVELOPE_MEDIA_TYPE).body(body).map_err(|e| e.to_string())?;
    let resp = agent.run(req).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    // Distribution counts 2xx and 3xx as taken.
    if (200..400).contains(&status) { Ok(()) } else { Err(format!("the endpoint answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Target;

    #[test]
    fn ignored_media_types_and_actions_are_not_sent() {
        let endpoint = Endpoint {
            name: "e".into(),
            key: "e".into(),
            url: "http://127.0.0.1:9/".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            threshold: 10,
            backoff: Duration::from_secs(1),
            ignored_media_types: vec!["application/octet-stream".into()],
            ignored_actions: vec!["pull".into()],
        };
        let event = |action: &str, media: Option<&str>| Event {
            id: "i".into(),
            timestamp: "t".into(),
            action: action.into(),
            target: Target { media_type: media.map(str::to_owned), ..Default::default() },
            request: Default::default(),
            actor: Default::default(),
            source: Default::default(),
            berth: None,
        };
        let wants = |e: &Event| endpoint.wants(&e.action, e.target.media_type.as_deref());
        assert!(wants(&event("push", Some("application/vnd.oci.image.manifest.v1+json"))));
        assert!(!wants(&event("push", Some("application/octet-stream"))));
        assert!(!wants(&event("pull", Some("application/vnd.oci.image.manifest.v1+json"))));
        assert!(wants(&event("delete", None)), "a delete has no media type and is sent");
    }

    #[test]
    fn logged_urls_lose_what_may_be_a_credential() {
        assert_eq!(
            super::super::redacted("https://u:p@hook.example.com:8443/x/y?token=s#f"),
            "https://hook.example.com:8443/x/y"
        );
        assert_eq!(super::super::redacted("http://h"), "http://h");
    }
}
