//! Counting requests and their latencies.

use std::time::Duration;

/// What one worker saw.
#[derive(Default)]
pub struct Tally {
    /// Latency of each answered request, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Requests that got no answer (connection, TLS or HTTP failures).
    pub errors: u64,
    /// Answers other than 2xx.
    pub non2xx: u64,
    /// Handshakes that resumed a session, and all handshakes (new-conn).
    pub resumed: u64,
    pub handshakes: u64,
    /// The first few statuses seen (for the probe's message).
    pub statuses: Vec<u16>,
}

impl Tally {
    pub fn record(&mut self, took: Duration, status: u16) {
        self.latencies_us.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        if !(200..300).contains(&status) {
            self.non2xx += 1;
        }
        if self.statuses.len() < 4 {
            self.statuses.push(status);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.non2xx += other.non2xx;
        self.resumed += other.resumed;
        self.handshakes += other.handshakes;
    }
}

/// A whole run: every worker's tally over the measured time.
pub struct Outcome {
    pub tally: Tally,
    pub elapsed: Duration,
}

impl Outcome {
    /// One JSON object, the same fields benches/load.sh reads from wrk.
    pub fn json(mut self) -> String {
        let latencies = &mut self.tally.latencies_us;
        latencies.sort_unstable();
        let at = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            f64::from(latencies[index.min(latencies.len() - 1)])
        };
        let mean = if latencies.is_empty() {
            0.0
        } else {
            latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / latencies.len() as f64
        };
        format!(
            "{{\"requests\":{},\"duration_us\":{},\"socket_errors\":{},\"non2xx\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"mean_us\":{:.1},\"max_us\":{},\"handshakes\":{},\"resumed\":{}}}",
            latencies.len(),
            self.elapsed.as_micros(),
            self.tally.errors,
            self.tally.non2xx,
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            mean,
            latencies.last().copied().unwrap_or(0),
            self.tally.handshakes,
            self.tally.resumed,
        )
    }
}
