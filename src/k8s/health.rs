//! Whether the API server answers. A watch cannot tell a resource that is merely quiet from a
//! connection the server stopped answering: kube-runtime gives such a watch up only after
//! about five minutes, and a listing on such a connection waits forever. So a cheap request
//! (the server's version) goes out on a fixed interval with a deadline. Its outcome is in the
//! metrics and the log, and once the server answers after leaving a check unanswered, the
//! watches start afresh on new connections, because one of them may still be waiting on a
//! connection the server will never answer.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Time between checks while the server answers.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Time between checks while it does not: short, so that recovery is noticed within seconds.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// A check without an answer after this long counts as unanswered. An answering API server
/// returns its version in milliseconds, even when busy.
pub(super) const CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    Answered,
    /// An error status, a refused or reset connection, a failed TLS handshake.
    Failed(String),
    /// No answer within [`CHECK_DEADLINE`].
    Unanswered,
}

impl Check {
    fn reason(&self) -> Option<&'static str> {
        match self {
            Check::Answered => None,
            Check::Failed(_) => Some("error"),
            Check::Unanswered => Some("timeout"),
        }
    }
}

/// What the watchers must do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing: the server answers as before, or still does not.
    Carry,
    /// The server answers again after leaving at least one check unanswered: start afresh.
    RestartWatches,
}

/// Health across checks: when the server stopped answering and whether it left any check
/// without an answer meanwhile.
#[derive(Debug, Default)]
pub(super) struct Health {
    down_since: Option<Instant>,
    went_silent: bool,
}

impl Health {
    /// Whether the last check was answered (a fresh agent counts as up: it just listed).
    pub(super) fn is_up(&self) -> bool {
        self.down_since.is_none()
    }

    /// Takes one check's outcome at `now`, and says so in the metrics and the log on every
    /// change between answering and not.
    pub(super) fn record(&mut self, check: Check, now: Instant, metrics: &Metrics) -> Verdict {
        metrics
            .apiserver_up
            .set(i64::from(check == Check::Answered));
        if let Some(reason) = check.reason() {
            metrics
                .apiserver_check_failures
                .with_label_values(&[reason])
                .inc();
        }
        match (check, self.down_since) {
            (Check::Answered, None) => Verdict::Carry,
            (Check::Answered, Some(since)) => {
                let down_ms = now.saturating_duration_since(since).as_millis() as u64;
                self.down_since = None;
                if std::mem::take(&mut self.went_silent) {
                    tracing::warn!(
                        down_ms,
                        "the API server answers again after leaving requests unanswered; the watches start afresh, since one may still wait on a connection it will never answer"
                    );
                    Verdict::RestartWatches
                } else {
                    tracing::info!(down_ms, "the API server answers again");
                    Verdict::Carry
                }
            }
            (failed, down_since) => {
                let silent = failed == Check::Unanswered;
                if down_since.is_none() {
                    self.down_since = Some(now);
                    match &failed {
                        Check::Failed(error) => tracing::warn!(
                            %error,
                            "the API server fails its health check; the rules stay as they are"
                        ),
                        _ => tracing::warn!(
                            deadline_ms = CHECK_DEADLINE.as_millis() as u64,
                            "the API server did not answer its health check in time; the rules stay as they are"
                        ),
                    }
                } else if silent && !self.went_silent {
                    tracing::warn!(
                        deadline_ms = CHECK_DEADLINE.as_millis() as u64,
                        "the API server now leaves its health check unanswered"
                    );
                }
                self.went_silent |= silent;
                Verdict::Carry
            }
        }
    }

    /// How long to wait before the next check.
    pub(super) fn next_check_in(&self) -> Duration {
        if self.is_up() {
            CHECK_INTERVAL
        } else {
            RETRY_INTERVAL
        }
    }
}

/// Runs one check: `request` is the server's answer to a version request.
pub(super) async fn check<F, T, E>(request: F) -> Check
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_DEADLINE, request).await {
        Ok(Ok(_)) => Check::Answered,
        Ok(Err(error)) => Check::Failed(error.to_string()),
        Err(_) => Check::Unanswered,
    }
}

/// Checks on its interval until the server answers after leaving a check unanswered; returns
/// then, so that the caller restarts the watches. Never returns while that does not happen.
/// The checks have a client of their own, replaced after every unanswered check: its pool may
/// hold a connection the server will never answer, which the next check would otherwise reuse.
pub(super) async fn until_watches_restart(
    config: &kube::Config,
    health: &mut Health,
    metrics: &Metrics,
) {
    let mut client: Option<kube::Client> = None;
    loop {
        tokio::time::sleep(health.next_check_in()).await;
        let outcome = match &client {
            Some(client) => check(client.apiserver_version()).await,
            None => match kube::Client::try_from(config.clone()) {
                Ok(fresh) => check(client.insert(fresh).apiserver_version()).await,
                Err(error) => Check::Failed(error.to_string()),
            },
        };
        if outcome == Check::Unanswered {
            client = None;
        }
        if health.record(outcome, Instant::now(), metrics) == Verdict::RestartWatches {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> std::sync::Arc<Metrics> {
        Metrics::new().expect("the metrics register")
    }

    fn failures(metrics: &Metrics, reason: &str) -> u64 {
        metrics
            .apiserver_check_failures
            .with_label_values(&[reason])
            .get()
    }

    #[test]
    fn error_answers_are_reported_and_need_no_restart() {
        let metrics = metrics();
        let mut health = Health::default();
        let t0 = Instant::now();
        assert_eq!(health.record(Check::Answered, t0, &metrics), Verdict::Carry);
        assert_eq!(metrics.apiserver_up.get(), 1);
        for i in 1..=3 {
            let failed = Check::Failed("500 Internal Server Error".into());
            assert_eq!(
                health.record(failed, t0 + Duration::from_secs(i), &metrics),
                Verdict::Carry
            );
            assert_eq!(metrics.apiserver_up.get(), 0);
            assert!(!health.is_up());
            assert_eq!(health.next_check_in(), RETRY_INTERVAL);
        }
        assert_eq!(failures(&metrics, "error"), 3);
        // Every watch got an error too, and kube-runtime recovers those by itself.
        let back = health.record(Check::Answered, t0 + Duration::from_secs(4), &metrics);
        assert_eq!(back, Verdict::Carry);
        assert_eq!(metrics.apiserver_up.get(), 1);
        assert_eq!(health.next_check_in(), CHECK_INTERVAL);
    }

    #[test]
    fn an_unanswered_check_restarts_the_watches_once_the_server_answers() {
        let metrics = metrics();
        let mut health = Health::default();
        let t0 = Instant::now();
        let outcomes = [
            Check::Failed("connection refused".into()),
            Check::Unanswered,
            Check::Failed("connection reset".into()),
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            assert_eq!(health.record(outcome, at, &metrics), Verdict::Carry);
        }
        assert_eq!(failures(&metrics, "timeout"), 1);
        assert_eq!(failures(&metrics, "error"), 2);
        let back = health.record(Check::Answered, t0 + Duration::from_secs(9), &metrics);
        assert_eq!(back, Verdict::RestartWatches);
        // Once: the next outage starts clean.
        let again = health.record(Check::Answered, t0 + Duration::from_secs(19), &metrics);
        assert_eq!(again, Verdict::Carry);
        let refused = Check::Failed("connection refused".into());
        health.record(refused, t0 + Duration::from_secs(29), &metrics);
        let after_errors = health.record(Check::Answered, t0 + Duration::from_secs(31), &metrics);
        assert_eq!(after_errors, Verdict::Carry);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_deadline_is_unanswered() {
        let never = std::future::pending::<Result<(), String>>();
        assert_eq!(check(never).await, Check::Unanswered);
        let refused = async { Err::<(), _>("connection refused") };
        assert_eq!(
            check(refused).await,
            Check::Failed("connection refused".into())
        );
        assert_eq!(check(async { Ok::<_, String>(()) }).await, Check::Answered);
    }
}
