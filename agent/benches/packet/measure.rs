//! Sampling: rounds in which the empty baseline classifier and every measured path are run
//! alternately, so that a drift of the machine (other builds, frequency) hits them alike. Each
//! "above baseline" sample is the difference within one round.

use anyhow::{bail, ensure, Context as _};
use palisade::dataplane::Hook;
use serde::Serialize;

use crate::{
    fixture::{Family, Fixture},
    stats::{median, Stat},
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// How many samples and runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Plan {
    /// Rounds; each gives one sample of every case and method.
    pub rounds: usize,
    /// `repeat` of one BPF_PROG_TEST_RUN call for the repeat method. Kept below what fills the
    /// 1 MiB events ring between two drains, so that every denied run really writes its event.
    pub repeat: u32,
    /// Single runs (repeat = 1) per sample for the single-run method; a sample is their median.
    pub singles: usize,
}

/// The measured paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    /// The empty classifier.
    Baseline,
    /// A packet of a tracked flow in its opening direction (`ToPod`).
    CtHit,
    /// The pod's reply of a tracked flow (`FromPod`: forward miss, reverse hit).
    CtHitReply,
    /// The first packet of a flow that policy allows: identity lookup, policy lookup,
    /// conntrack insert. Single runs only (see `Method`).
    NewAllowed,
    /// The first packet of a flow that policy denies: identity lookup, both policy lookups,
    /// drop counter and the verdict event in the ring buffer. Creates no state.
    NewDenied,
    /// Breakdown: an ARP frame at a managed endpoint (endpoint lookup, parse, counter).
    Arp,
    /// Breakdown: an IPv4 SYN at a managed interface whose endpoint record is missing: it
    /// fails closed (endpoint lookup miss, parse, drop counter, verdict event).
    NoRecord,
}

/// How a figure was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One call with `repeat` runs of the same packet; the kernel reports the mean per run.
    Repeat,
    /// Calls with `repeat = 1`, each on a packet of a fresh flow (distinct source port); the
    /// kernel reports each run's duration, which includes the timer reads around one run.
    Single,
}

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub rules: u32,
    pub peers: u32,
    pub family: Family,
    pub case: Case,
    pub method: Method,
    /// ns per run as the kernel reports it.
    pub raw_ns: Stat,
    /// ns per run minus the baseline's in the same round.
    pub above_baseline_ns: Stat,
}

#[derive(Default)]
struct Series {
    samples: Vec<f64>,
}

/// Runs `plan` for one family on `fix`.
pub fn measure(fix: &mut Fixture, fam: Family, plan: &Plan) -> anyhow::Result<Vec<Point>> {
    // The tracked flow: created once by its SYN, then measured with ACKs and replies.
    const TRACKED_SPORT: u16 = 1;
    let syn = fix.syn(fam, TRACKED_SPORT);
    ensure!(
        run(fix, Hook::ToPod, &syn, 1)? == TC_ACT_OK,
        "setup: the measured flow is not allowed"
    );
    let ack = fix.ack(fam, TRACKED_SPORT);
    let reply = fix.reply(fam, TRACKED_SPORT);
    let denied = fix.denied(fam, 2);
    let repeat_cases = [
        (Case::Baseline, Hook::Baseline, &syn, TC_ACT_OK),
        (Case::CtHit, Hook::ToPod, &ack, TC_ACT_OK),
        (Case::CtHitReply, Hook::FromPod, &reply, TC_ACT_OK),
        (Case::NewDenied, Hook::ToPod, &denied, TC_ACT_SHOT),
    ];
    let single_cases = [
        (Case::Baseline, Hook::Baseline),
        (Case::CtHit, Hook::ToPod),
        (Case::NewAllowed, Hook::ToPod),
        (Case::NewDenied, Hook::ToPod),
    ];
    let mut rep: Vec<Series> = repeat_cases.iter().map(|_| Series::default()).collect();
    let mut one: Vec<Series> = single_cases.iter().map(|_| Series::default()).collect();
    let mut next_sport: u16 = 1000;
    for round in 0..plan.rounds {
        repeat_round(fix, &repeat_cases, plan, round, &mut rep)?;
        for k in 0..single_cases.len() {
            let i = (k + round) % single_cases.len();
            let (case, hook) = single_cases[i];
            let mut times = Vec::with_capacity(plan.singles);
            fix.drain_events()?;
            for _ in 0..plan.singles {
                let (frame, want) = match case {
                    Case::Baseline => (syn.clone(), TC_ACT_OK),
                    Case::CtHit => (ack.clone(), TC_ACT_OK),
                    Case::NewAllowed => {
                        next_sport = next_sport
                            .checked_add(1)
                            .context("the plan needs more than 64k fresh flows per family")?;
                        (fix.syn(fam, next_sport), TC_ACT_OK)
                    }
                    Case::NewDenied => (denied.clone(), TC_ACT_SHOT),
                    other => bail!("no single-run figure for {other:?}"),
                };
                let out = fix.dp.test_run(hook, &frame, 0, 1)?;
                check(case, out.action, want)?;
                times.push(out.ns_per_run as f64);
            }
            fix.drain_events()?;
            one[i].samples.push(median(&times));
        }
    }
    let mut points = Vec::new();
    let mut emit = |case: Case, method: Method, series: &Series, base: &Series| {
        points.push(point(fix, fam, case, method, series, base));
    };
    for (i, (case, ..)) in repeat_cases.iter().enumerate() {
        emit(*case, Method::Repeat, &rep[i], &rep[0]);
    }
    for (i, (case, _)) in single_cases.iter().enumerate() {
        emit(*case, Method::Single, &one[i], &one[0]);
    }
    Ok(points)
}

type RepeatCase<'a> = (Case, Hook, &'a Vec<u8>, u32);

/// One round of the repeat method over `cases` (the first one is the baseline).
fn repeat_round(
    fix: &mut Fixture,
    cases: &[RepeatCase<'_>],
    plan: &Plan,
    round: usize,
    out: &mut [Series],
) -> anyhow::Result<()> {
    // Rotate the order from round to round so that no case always follows another.
    for k in 0..cases.len() {
        let i = (k + round) % cases.len();
        let (case, hook, frame, want) = cases[i];
        fix.drain_events()?;
        let res = fix.dp.test_run(hook, frame, 0, plan.repeat)?;
        check(case, res.action, want)?;
        if case == Case::NewDenied {
            let events = fix.drain_events()?;
            ensure!(
                events == u64::from(plan.repeat),
                "denied runs wrote {events} events, expected {}: the ring overflowed",
                plan.repeat
            );
        }
        out[i].samples.push(res.ns_per_run as f64);
    }
    Ok(())
}

/// Where the time of the cheapest paths goes (IPv4, on the fixture as it is): an ARP frame at
/// the endpoint, then a packet when the endpoint record is missing. Removes the endpoint.
pub fn breakdown(fix: &mut Fixture, plan: &Plan) -> anyhow::Result<Vec<Point>> {
    let fam = Family::Ipv4;
    let syn = fix.syn(fam, 3);
    let arp = palisade_common::craft::arp();
    let mut points = Vec::new();
    for (case, frame, want) in [
        (Case::Arp, &arp, TC_ACT_OK),
        (Case::NoRecord, &syn, TC_ACT_SHOT),
    ] {
        if case == Case::NoRecord {
            fix.dp.remove_endpoint(1, 1)?;
        }
        let cases = [
            (Case::Baseline, Hook::Baseline, &syn, TC_ACT_OK),
            (case, Hook::ToPod, frame, want),
        ];
        let mut series = [Series::default(), Series::default()];
        for round in 0..plan.rounds {
            repeat_round(fix, &cases, plan, round, &mut series)?;
        }
        points.push(point(
            fix,
            fam,
            case,
            Method::Repeat,
            &series[1],
            &series[0],
        ));
    }
    Ok(points)
}

fn point(
    fix: &Fixture,
    fam: Family,
    case: Case,
    method: Method,
    series: &Series,
    base: &Series,
) -> Point {
    let above: Vec<f64> = series
        .samples
        .iter()
        .zip(&base.samples)
        .map(|(s, b)| s - b)
        .collect();
    Point {
        rules: fix.rules,
        peers: fix.peers,
        family: fam,
        case,
        method,
        raw_ns: Stat::of(&series.samples),
        above_baseline_ns: Stat::of(&above),
    }
}

fn run(fix: &mut Fixture, hook: Hook, frame: &[u8], repeat: u32) -> anyhow::Result<u32> {
    Ok(fix.dp.test_run(hook, frame, 0, repeat)?.action)
}

/// A wrong verdict means the packet did not take the path being measured.
fn check(case: Case, got: u32, want: u32) -> anyhow::Result<()> {
    ensure!(
        got == want,
        "{case:?}: the program returned {got}, expected {want}: wrong path measured"
    );
    Ok(())
}
