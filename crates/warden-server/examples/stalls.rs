//! How often this machine stops a running thread: spins on the monotonic clock for a while and
//! counts the gaps between consecutive readings. On a quiet machine a gap is the time the thread
//! was not running (hypervisor or kernel preemption), which every request in flight then waits
//! out; it sets a floor under any tail latency measured here (BENCHMARKS.md, "serve").
//! `taskset -c 0 target/release/examples/stalls 10 & taskset -c 1 target/release/examples/stalls 10`

#![allow(missing_docs)]

use std::time::{Duration, Instant};

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let run = Duration::from_secs(seconds);
    let (mut over_50us, mut over_200us, mut over_1ms) = (0u64, 0u64, 0u64);
    let (mut lost, mut longest) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap > Duration::from_micros(50) {
            over_50us += 1;
            lost += gap;
            over_200us += u64::from(gap > Duration::from_micros(200));
            over_1ms += u64::from(gap > Duration::from_millis(1));
            longest = longest.max(gap);
        }
        if now - start >= run {
            break;
        }
    }
    println!(
        "{seconds} s spinning: gaps over 50 µs {over_50us}, over 200 µs {over_200us}, over 1 ms \
         {over_1ms}; longest {:.2} ms; {:.2}% of the time in gaps",
        longest.as_secs_f64() * 1e3,
        lost.as_secs_f64() * 100.0 / start.elapsed().as_secs_f64()
    );
}
