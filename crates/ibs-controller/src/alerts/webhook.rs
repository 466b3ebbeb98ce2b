//! The alert webhook: each raise and close POSTed as JSON from one worker thread fed by a bounded
//! queue (best effort, never blocking the caller; a full queue drops the event, counted and logged).
//! The URL is never printed whole: logs and `Debug` show it through [`crate::redact::url`].

use super::{Alert, AlertSink};
use crate::{ControllerError, Result};

/// Events waiting for the webhook worker; more are dropped (and counted).
pub const WEBHOOK_QUEUE: usize = 256;
/// Connecting to the webhook receiver may take this long.
pub const WEBHOOK_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// One whole POST (connect, send, response) may take this long.
pub const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// POSTs `{"event": "raised"|"closed", "alert": {...}}` to a URL from one worker thread fed by a
/// bounded queue. `Debug` shows the URL redacted.
pub struct Webhook {
    queue: std::sync::mpsc::SyncSender<serde_json::Value>,
    shown: String,
    dropped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.shown).finish()
    }
}

impl Webhook {
    /// Starts the worker. The URL must be `http://` or `https://`.
    pub fn new(url: String) -> Result<Webhook> {
        let shown = crate::redact::url(&url);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ControllerError::invalid(
                "webhook_url",
                format!("{shown} is not an http:// or https:// URL"),
            ));
        }
        let (queue, rx) = std::sync::mpsc::sync_channel::<serde_json::Value>(WEBHOOK_QUEUE);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(WEBHOOK_CONNECT_TIMEOUT))
            .timeout_global(Some(WEBHOOK_TIMEOUT))
            .build()
            .into();
        let worker_shown = shown.clone();
        std::thread::Builder::new()
            .name("ibs-webhook".into())
            .spawn(move || {
                for body in rx {
                    if let Err(e) = agent.post(&url).send_json(&body) {
                        let e = crate::redact::in_text(&e.to_string(), &url);
                        tracing::warn!("alert webhook {worker_shown}: {e}");
                    }
                }
            })
            .map_err(|e| ControllerError::Internal(format!("starting the webhook worker: {e}")))?;
        Ok(Webhook {
            queue,
            shown,
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl AlertSink for Webhook {
    fn notify(&self, event: &str, alert: &Alert) {
        let body = serde_json::json!({ "event": event, "alert": alert });
        if self.queue.try_send(body).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            tracing::warn!(
                "alert webhook {}: queue full ({WEBHOOK_QUEUE} events waiting); dropped the {event} event of alert {} ({n} dropped so far)",
                self.shown,
                alert.id
            );
        }
    }
}
