//! `warden bench`: how fast a policy decides a set of requests, on this machine.
//!
//! The requests are read and parsed once, before timing; then every thread decides them in
//! turn, over and over, until the time is up, through the same library call as `warden eval`
//! (sessions included: a request with a `session` reads and updates that session's state).
//! The figure is the library's cost per decision; the daemon adds HTTP, authentication and
//! logging on top (see BENCHMARKS.md for both).

use std::io::BufReader;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;
use warden::{Request, Verdict};

use crate::EXIT_BAD_INPUT;
use crate::eval::{self, Decider};

/// The longest run `--seconds` accepts.
const MAX_SECONDS: f64 = 3600.0;
/// The most threads `--threads` accepts.
const MAX_THREADS: usize = 256;
/// Decisions between two looks at the clock (reading it each time would be measured too).
const CLOCK_EVERY: usize = 256;

/// What `warden bench` was asked to do.
pub(crate) struct BenchArgs<'a> {
    pub policy: &'a eval::PolicyArgs,
    pub requests: &'a Path,
    pub seconds: f64,
    pub threads: usize,
    pub json: bool,
}

/// One input, prepared before timing.
enum Input {
    Warden(Box<Request>),
    Rego(Value),
}

/// What one thread counted.
#[derive(Default)]
struct Tally {
    decisions: u64,
    /// Warden: allowed. Rego: the query was defined.
    allow: u64,
    /// Warden: denied. Rego: the query was undefined.
    deny: u64,
    /// Decisions that failed (a store or a Rego evaluation error).
    errors: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.decisions += other.decisions;
        self.allow += other.allow;
        self.deny += other.deny;
        self.errors += other.errors;
    }
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

pub(crate) fn run(args: &BenchArgs<'_>) -> ExitCode {
    if !(args.seconds > 0.0 && args.seconds <= MAX_SECONDS) {
        return bad(format!(
            "`--seconds` must be more than 0 and at most {MAX_SECONDS}, not {}",
            args.seconds
        ));
    }
    if args.threads == 0 || args.threads > MAX_THREADS {
        return bad(format!(
            "`--threads` must be from 1 to {MAX_THREADS}, not {}",
            args.threads
        ));
    }
    let decider = match eval::load(args.policy) {
        Ok(d) => d,
        Err(message) => return bad(message),
    };
    let inputs = match read_inputs(&decider, args.requests) {
        Ok(inputs) => inputs,
        Err(message) => return bad(message),
    };
    let run = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let deadline = started + run;
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| scope.spawn(|| decide_until(&decider, &inputs, deadline)))
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(tally) => total.add(&tally),
                // A panic in the engine is a bug; count the thread's work as lost, not as done.
                Err(_) => total.errors += 1,
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    report(args, &decider, inputs.len(), &total, elapsed);
    ExitCode::SUCCESS
}

/// Reads and prepares every request before timing; the first bad one is an error naming its
/// line and field, and so is having none.
fn read_inputs(decider: &Decider, requests: &Path) -> Result<Vec<Input>, String> {
    let (input, name) = eval::open_requests(requests)?;
    let mut inputs = Vec::new();
    eval::for_each_value(&name, BufReader::new(input), |value, line| {
        inputs.push(match decider {
            Decider::Warden(_) => Input::Warden(Box::new(
                Request::from_value(value).map_err(|e| format!("{name}:{line}: {e}"))?,
            )),
            Decider::Rego { .. } => Input::Rego(value),
        });
        Ok(())
    })?;
    if inputs.is_empty() {
        return Err(format!("{name}: no requests"));
    }
    Ok(inputs)
}

/// Decides `inputs` in turn, over and over, until `deadline`.
fn decide_until(decider: &Decider, inputs: &[Input], deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut cycle = inputs.iter().cycle();
    loop {
        for input in cycle.by_ref().take(CLOCK_EVERY) {
            tally.decisions += 1;
            match (decider, input) {
                (Decider::Warden(engine), Input::Warden(request)) => {
                    match engine.decide(request).map(|d| d.verdict) {
                        Ok(Verdict::Allow) => tally.allow += 1,
                        // Pending is not allowed: counted with the denials.
                        Ok(Verdict::Deny | Verdict::Pending) => tally.deny += 1,
                        Err(_) => tally.errors += 1,
                    }
                }
                (Decider::Rego { policy, query }, Input::Rego(value)) => {
                    match policy.eval_value(query, value) {
                        Ok(Some(_)) => tally.allow += 1,
                        Ok(None) => tally.deny += 1,
                        Err(_) => tally.errors += 1,
                    }
                }
                // `read_inputs` prepares every input for its decider.
                _ => tally.errors += 1,
            }
        }
        if Instant::now() >= deadline {
            return tally;
        }
    }
}

fn report(args: &BenchArgs<'_>, decider: &Decider, requests: usize, total: &Tally, elapsed: f64) {
    let per_second = total.decisions as f64 / elapsed;
    // Each thread spends the whole run deciding: its time per decision.
    let ns_each = elapsed * 1e9 * args.threads as f64 / (total.decisions.max(1) as f64);
    let (allow, deny) = match decider {
        Decider::Warden(_) => ("allow", "deny"),
        Decider::Rego { .. } => ("defined", "undefined"),
    };
    if args.json {
        let mut line = serde_json::json!({
            "policy": args.policy.policy.display().to_string(),
            "requests": requests,
            "threads": args.threads,
            "seconds": elapsed,
            "decisions": total.decisions,
            "per_second": per_second,
            "ns_per_decision": ns_each,
            "errors": total.errors,
        });
        if let Some(fields) = line.as_object_mut() {
            fields.insert(allow.to_owned(), total.allow.into());
            fields.insert(deny.to_owned(), total.deny.into());
        }
        println!("{line}");
    } else {
        println!(
            "{}: {requests} request(s), {} thread(s), {elapsed:.2} s (requests parsed before timing)",
            args.policy.policy.display(),
            args.threads,
        );
        println!(
            "  {} decisions, {per_second:.0} per second, {ns_each:.0} ns each",
            total.decisions
        );
        println!(
            "  {allow} {}, {deny} {}, errors {}",
            total.allow, total.deny, total.errors
        );
    }
}
