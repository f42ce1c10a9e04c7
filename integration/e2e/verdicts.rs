//! Verdicts over time: the full matrix against an expectation, the probes a change must flip,
//! how soon they flip, and continuous sampling while something else happens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::harness::cluster::Cluster;
use crate::harness::expect::{self, Line};
use crate::harness::probe::{Observation, Probe, Verdict};

/// Timeout of one probe in the full matrix and in samples. A DROP shows as this timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// A probe expected to connect that timed out is tried once more with this timeout before it
/// counts as wrong in a full-matrix check (a busy machine can delay a first packet; a blocked
/// probe stays blocked however long one waits).
const RETRY_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Expectation lines (see the harness's `expect` module), kept as text for messages.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub text: Vec<String>,
    lines: Vec<Line>,
}

impl Expectation {
    pub fn new(lines: &[&str]) -> Result<Expectation> {
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        Ok(Expectation {
            lines: expect::parse(&text)?,
            text,
        })
    }

    /// Whether the expectation allows the probe; an error if no line covers it.
    pub fn allows(&self, probe: &Probe) -> Result<bool> {
        let observation = Observation {
            probe: probe.clone(),
            verdict: Verdict::Error,
            detail: String::new(),
        };
        match expect::expected(&self.lines, &observation) {
            Some((allow, _)) => Ok(allow),
            None => bail!("no expectation line covers {probe}"),
        }
    }

    /// Whether the observation is what the expectation says.
    pub fn satisfied_by(&self, observation: &Observation) -> Result<bool> {
        Ok(expect::satisfies(
            &observation.verdict,
            self.allows(&observation.probe)?,
        ))
    }
}

/// The probes of the full matrix, from the nodes too.
pub fn all_probes(cluster: &Cluster) -> Result<Vec<Probe>> {
    cluster.matrix_probes(true)
}

/// Measures the full matrix and compares it with `expected`. Expected connections that timed
/// out are retried once with a longer timeout. The error shows the grid and a table.
pub fn check_matrix(cluster: &Cluster, expected: &Expectation) -> Result<Duration> {
    let started = Instant::now();
    let mut matrix = cluster.probe_matrix(true, PROBE_TIMEOUT)?;
    let retry: Vec<Probe> = matrix
        .observations
        .iter()
        .filter(|o| o.verdict == Verdict::Blocked)
        .filter(|o| expected.allows(&o.probe).unwrap_or(false))
        .map(|o| o.probe.clone())
        .collect();
    if !retry.is_empty() {
        let again = cluster.run_probes(&retry, RETRY_TIMEOUT)?;
        for observation in again {
            if let Some(slot) = matrix
                .observations
                .iter_mut()
                .find(|o| o.probe == observation.probe)
            {
                *slot = observation;
            }
        }
    }
    let mismatches = expect::compare(&expected.lines, &matrix.observations)?;
    if !mismatches.is_empty() {
        bail!(
            "the matrix differs from the expectation\n  {}\n{}{}",
            expected.text.join("\n  "),
            expect::grid(&matrix, &mismatches),
            expect::mismatch_table(&mismatches)
        );
    }
    Ok(started.elapsed())
}

/// The probes whose expected verdict differs between `before` and `after`, with the verdict
/// `after` expects. A change that flips nothing cannot be timed: that is an error.
pub fn flips(
    cluster: &Cluster,
    before: &Expectation,
    after: &Expectation,
) -> Result<Vec<(Probe, bool)>> {
    let mut out = Vec::new();
    for probe in all_probes(cluster)? {
        let (was, will) = (before.allows(&probe)?, after.allows(&probe)?);
        if was != will {
            out.push((probe, will));
        }
    }
    if out.is_empty() {
        bail!(
            "the change flips no verdict:\n  before: {}\n  after: {}",
            before.text.join("; "),
            after.text.join("; ")
        );
    }
    Ok(out)
}

/// One measurement of a set of probes.
#[derive(Debug, Clone)]
pub struct Round {
    /// When the probe processes were started: packets leave a few milliseconds later.
    pub launched: Instant,
    pub finished: Instant,
    pub observations: Vec<Observation>,
}

/// How [`sample`] probes.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// A new round is launched this often, whether or not earlier rounds finished.
    pub interval: Duration,
    pub timeout: Duration,
    /// At most this many rounds in flight.
    pub max_in_flight: usize,
    /// Stop launching after this long, whatever `done` says.
    pub limit: Duration,
}

/// Probes `probes` in overlapping rounds until `stop` is set, `done` says so, or
/// `sampling.limit` passes; then waits for the rounds in flight. `done` sees the finished
/// rounds in launch order, but only those launched before every round still in flight, so it
/// never decides on a view that a slower, earlier round could still change. A round whose
/// probing failed outright is an error.
pub fn sample(
    cluster: &Cluster,
    probes: &[Probe],
    sampling: Sampling,
    stop: &AtomicBool,
    mut done: impl FnMut(&[Round]) -> bool,
) -> Result<Vec<Round>> {
    let mut rounds: Vec<Round> = Vec::new();
    let mut finished = false;
    stream(cluster, probes, sampling, stop, |round| {
        rounds.push(round);
        if !finished {
            finished = done(&rounds);
        }
        finished
    })?;
    Ok(rounds)
}

/// Runs `actions` on this thread while [`sample`] probes beside it, until they return (or
/// `sampling.limit` passes). Returns what the actions returned and the rounds, each on its
/// own so that the caller decides which failure to report first.
pub fn sample_during<T>(
    cluster: &Cluster,
    probes: &[Probe],
    sampling: Sampling,
    actions: impl FnOnce() -> Result<T>,
) -> (Result<T>, Result<Vec<Round>>) {
    sample_beside(
        cluster,
        probes,
        sampling,
        None::<fn(&[Round]) -> bool>,
        actions,
    )
}

/// [`sample_during`], but the sampling goes on after the actions return, until `done` says so
/// of the rounds (or the limit passes); it stops at once if the actions fail.
pub fn sample_until<T>(
    cluster: &Cluster,
    probes: &[Probe],
    sampling: Sampling,
    done: impl FnMut(&[Round]) -> bool + Send,
    actions: impl FnOnce() -> Result<T>,
) -> (Result<T>, Result<Vec<Round>>) {
    sample_beside(cluster, probes, sampling, Some(done), actions)
}

fn sample_beside<T>(
    cluster: &Cluster,
    probes: &[Probe],
    sampling: Sampling,
    done: Option<impl FnMut(&[Round]) -> bool + Send>,
    actions: impl FnOnce() -> Result<T>,
) -> (Result<T>, Result<Vec<Round>>) {
    let stop = AtomicBool::new(false);
    let stop_when_acted = done.is_none();
    let mut done = done;
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            sample(cluster, probes, sampling, &stop, |rounds| {
                done.as_mut().is_some_and(|done| done(rounds))
            })
        });
        let outcome = actions();
        if stop_when_acted || outcome.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let rounds = sampler
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the sampling thread panicked")));
        (outcome, rounds)
    })
}

/// [`sample`] without keeping the rounds: each goes to `consume` in launch order, once every
/// round launched before it has finished, and is dropped after; `consume` returning true
/// ends the sampling (the rounds still in flight then reach it too). For runs too long to
/// hold every observation in memory.
pub fn stream(
    cluster: &Cluster,
    probes: &[Probe],
    sampling: Sampling,
    stop: &AtomicBool,
    mut consume: impl FnMut(Round) -> bool,
) -> Result<()> {
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel::<(Instant, Result<Round>)>();
    // Finished rounds waiting for an earlier one still in flight, in launch order.
    let mut waiting: Vec<Round> = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        // Launch instants of the rounds in flight.
        let mut in_flight: Vec<Instant> = Vec::new();
        let mut next_launch = Instant::now();
        let mut finished_early = false;
        loop {
            let stopping = finished_early
                || failure.is_some()
                || stop.load(Ordering::SeqCst)
                || started.elapsed() >= sampling.limit;
            if stopping && in_flight.is_empty() {
                break;
            }
            let now = Instant::now();
            if !stopping && now >= next_launch && in_flight.len() < sampling.max_in_flight {
                let sender = sender.clone();
                let timeout = sampling.timeout;
                let launched = now;
                in_flight.push(launched);
                next_launch = now + sampling.interval;
                scope.spawn(move || {
                    let result = cluster
                        .run_probes(probes, timeout)
                        .map(|observations| Round {
                            launched,
                            finished: Instant::now(),
                            observations,
                        });
                    let _ = sender.send((launched, result));
                });
                continue;
            }
            let wait = if stopping {
                Duration::from_millis(50)
            } else {
                next_launch
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            };
            match receiver.recv_timeout(wait) {
                Ok((launched, result)) => {
                    in_flight.retain(|l| *l != launched);
                    match result {
                        Ok(round) => {
                            let at = waiting
                                .iter()
                                .position(|r| r.launched > round.launched)
                                .unwrap_or(waiting.len());
                            waiting.insert(at, round);
                            let complete = match in_flight.iter().min() {
                                Some(oldest) => waiting
                                    .iter()
                                    .position(|r| r.launched >= *oldest)
                                    .unwrap_or(waiting.len()),
                                None => waiting.len(),
                            };
                            for round in waiting.drain(..complete) {
                                if consume(round) {
                                    finished_early = true;
                                }
                            }
                        }
                        Err(e) => failure = Some(e),
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    match failure {
        Some(e) => Err(e.context("probing failed")),
        None => Ok(()),
    }
}

/// When a change was seen in the kernel by real packets.
#[derive(Debug, Clone)]
pub struct FlipTiming {
    /// Launch of the first round from which on every flipped probe showed its new verdict.
    /// A lower bound: the packets left a few ms later.
    pub launched: Duration,
    /// When that round's packets met the new rules, estimated: a round in which a probe timed
    /// out sent its packets about one probe timeout before it finished; a round in which every
    /// probe got an answer sent them just before it finished. Slightly late, never early.
    pub observed: Duration,
    /// When that round finished.
    pub finished: Duration,
    pub rounds: usize,
    /// Rounds that showed every new verdict but were followed by one that did not (a slow
    /// probe before the change took effect, or a verdict that really flipped back).
    pub flaps: usize,
}

/// How [`await_flips`] samples.
#[derive(Debug, Clone, Copy)]
pub struct Await {
    /// Give up after this long (measured from `since`): an error.
    pub limit: Duration,
    /// The new verdicts must hold this long (by round launch) before they count.
    pub settle: Duration,
    /// A new round this often.
    pub interval: Duration,
    pub timeout: Duration,
}

impl Await {
    pub fn within(limit: Duration) -> Await {
        Await {
            limit,
            settle: Duration::from_millis(400),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
        }
    }
}

/// Samples the flipped probes until every one shows its new verdict and keeps showing it for
/// `how.settle`, or `how.limit` passes (an error naming the probes still wrong). Times are
/// measured from `since`; the time reported is that of the first round after the last wrong one.
pub fn await_flips(
    cluster: &Cluster,
    flips: &[(Probe, bool)],
    since: Instant,
    how: Await,
) -> Result<FlipTiming> {
    let probes: Vec<Probe> = flips.iter().map(|(p, _)| p.clone()).collect();
    let wanted: BTreeMap<Probe, bool> = flips.iter().cloned().collect();
    let ok = |round: &Round| {
        round.observations.iter().all(|o| {
            wanted
                .get(&o.probe)
                .is_some_and(|allow| expect::satisfies(&o.verdict, *allow))
        })
    };
    let first_stable =
        |rounds: &[Round]| rounds.iter().rposition(|r| !ok(r)).map_or(0, |bad| bad + 1);
    let settled = |rounds: &[Round]| {
        let first = first_stable(rounds);
        first < rounds.len()
            && rounds[first].launched + how.settle <= rounds[rounds.len() - 1].launched
    };
    let stop = AtomicBool::new(false);
    let sampling = Sampling {
        interval: how.interval,
        timeout: how.timeout,
        max_in_flight: (how.timeout.as_millis() / how.interval.as_millis().max(1)) as usize + 2,
        limit: how.limit.saturating_sub(since.elapsed()) + how.settle,
    };
    let rounds = sample(cluster, &probes, sampling, &stop, settled)?;
    if !settled(&rounds) {
        let wrong_rounds: Vec<&Round> = rounds.iter().filter(|r| !ok(r)).collect();
        let last_wrong: Vec<String> = wrong_rounds
            .last()
            .map(|r| {
                let at = r.launched.saturating_duration_since(since);
                r.observations
                    .iter()
                    .filter(|o| {
                        !wanted
                            .get(&o.probe)
                            .is_some_and(|allow| expect::satisfies(&o.verdict, *allow))
                    })
                    .map(|o| {
                        format!(
                            "+{}ms {} {} ({})",
                            at.as_millis(),
                            o.probe,
                            o.verdict.as_str(),
                            o.detail
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        bail!(
            "not enforced (stably, for {:?}) within {:?}: {} rounds, {} of them wrong; the last wrong one:\n  {}",
            how.settle,
            how.limit,
            rounds.len(),
            wrong_rounds.len(),
            last_wrong.join("\n  ")
        );
    }
    let first = first_stable(&rounds);
    let round = &rounds[first];
    let timed_out = round
        .observations
        .iter()
        .any(|o| o.verdict == Verdict::Blocked);
    let observed = if timed_out {
        round
            .finished
            .checked_sub(how.timeout)
            .map_or(round.launched, |sent| sent.max(round.launched))
    } else {
        round.finished
    };
    Ok(FlipTiming {
        launched: round.launched.saturating_duration_since(since),
        observed: observed.saturating_duration_since(since),
        finished: round.finished.saturating_duration_since(since),
        rounds: first + 1,
        flaps: rounds[..first].iter().filter(|r| ok(r)).count(),
    })
}

/// Wrong verdicts seen while sampling against a fixed expectation.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub rounds: usize,
    pub probes: usize,
    /// `(offset of the round's launch from the start, probe, verdict)`.
    pub wrong: Vec<(Duration, String)>,
}

impl Tally {
    pub fn count(rounds: &[Round], expected: &Expectation, start: Instant) -> Result<Tally> {
        let mut tally = Tally {
            rounds: rounds.len(),
            ..Tally::default()
        };
        for round in rounds {
            for observation in &round.observations {
                tally.probes += 1;
                if !expected.satisfied_by(observation)? {
                    tally.wrong.push((
                        round.launched.saturating_duration_since(start),
                        format!(
                            "{} {} ({})",
                            observation.probe,
                            observation.verdict.as_str(),
                            observation.detail
                        ),
                    ));
                }
            }
        }
        Ok(tally)
    }

    /// An error listing the first 20 wrong verdicts, if there are any; `during` says when
    /// they were seen ("during the upgrade").
    pub fn ensure_none_wrong(&self, during: &str) -> Result<()> {
        if self.wrong.is_empty() {
            return Ok(());
        }
        bail!(
            "{} wrong verdicts {during}:\n  {}",
            self.wrong.len(),
            self.describe(20)
        )
    }

    pub fn describe(&self, limit: usize) -> String {
        let mut lines: Vec<String> = self
            .wrong
            .iter()
            .take(limit)
            .map(|(at, what)| format!("+{:>5}ms {what}", at.as_millis()))
            .collect();
        if self.wrong.len() > limit {
            lines.push(format!("... and {} more", self.wrong.len() - limit));
        }
        lines.join("\n  ")
    }
}

/// Waits (up to 15 s) for the full matrix to match; for state changes that are not timed.
pub fn settle(cluster: &Cluster, expected: &Expectation) -> Result<()> {
    let started = Instant::now();
    loop {
        match check_matrix(cluster, expected) {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(15) => {
                return Err(e.context("the cluster did not settle within 15 s"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
