//! One kind's watch, as every kind runs it: kube-runtime's watcher, a listing buffered until
//! complete, a backoff that grows while the watch keeps failing, and the translation into
//! source events.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};

use crate::agent::{AgentMessage, SourceEvent};
use crate::metrics::Metrics;
use crate::model::ObjectKey;

/// Retry delay of a failing watcher. kube-runtime's own backoff resets on the `Init` event that
/// precedes every list attempt, so a watcher that keeps failing would retry about once a
/// second forever; this one grows until the watch delivers a listing or an event again.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(800);
    // Short enough that an agent resumes within seconds of an API server outage ending.
    const MAX: Duration = Duration::from_secs(5);

    pub(super) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(super) fn next(&self) -> Duration {
        self.next
    }

    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

/// Sends one event to the agent; false once the agent has stopped listening.
pub(super) fn send(sender: &Sender<AgentMessage>, event: SourceEvent) -> bool {
    sender.send(AgentMessage::Source(Box::new(event))).is_ok()
}

/// The namespace and name an object is stored under.
pub(super) fn key_of<K: Resource>(object: &K) -> ObjectKey {
    ObjectKey::new(object.namespace().unwrap_or_default(), object.name_any())
}

/// How one kind's watch events become source events.
pub(super) trait Translate<K> {
    /// Takes one object of a listing in progress.
    fn list_item(&mut self, object: &K);
    /// The finished listing.
    fn listed(&mut self) -> SourceEvent;
    /// An object added or changed: usually one event, two when its identity changed.
    fn applied(&mut self, object: &K) -> Vec<SourceEvent>;
    fn deleted(&mut self, object: &K) -> Vec<SourceEvent>;
}

/// Runs one watcher until the agent stops listening. A listing is buffered until complete;
/// errors back off until the watch delivers again.
pub(super) async fn watch<K, T>(
    api: Api<K>,
    kind: &'static str,
    mut translate: T,
    sender: Sender<AgentMessage>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    T: Translate<K>,
{
    let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let mut backoff = Backoff::new();
    let mut listings = 0_u64;
    while let Some(event) = stream.next().await {
        let out = match event {
            Ok(Event::Init) => {
                listings += 1;
                if listings > 1 {
                    metrics.watch_relists.with_label_values(&[kind]).inc();
                    tracing::info!(
                        kind,
                        listings,
                        "listing again: the watch could not resume from where it was (410 Gone, or the server lost its history)"
                    );
                }
                continue;
            }
            Ok(Event::InitApply(object)) => {
                translate.list_item(&object);
                continue;
            }
            Ok(Event::InitDone) => vec![translate.listed()],
            Ok(Event::Apply(object)) => translate.applied(&object),
            Ok(Event::Delete(object)) => translate.deleted(&object),
            // The server no longer has the history the watch would resume from (an etcd
            // compaction, a fresh watch cache): the watcher lists again at once. Routine, so
            // not a failure; the listing after it is counted.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::info!(
                    kind,
                    reason = %status.reason,
                    message = %status.message,
                    "watch expired (410 Gone); listing again"
                );
                continue;
            }
            Err(error) => {
                metrics.sync_errors.with_label_values(&["watch"]).inc();
                tracing::warn!(
                    kind,
                    %error,
                    retry_in_ms = backoff.next().as_millis() as u64,
                    "watch failed; retrying with backoff (rules stay as they are)"
                );
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        for event in out {
            if !send(&sender, event) {
                return;
            }
        }
    }
}
