//! `proxy_requests_total` handles for one route, so counting a request is an atomic add
//! rather than a registry lookup (hashing the name and both labels) per request.

use std::sync::{Arc, OnceLock};

/// How many different statuses per route keep a handle; others are looked up each time.
const SLOTS: usize = 6;

/// The request counters of one route, one per status, registered on first use.
#[derive(Debug)]
pub struct StatusCounters {
    route: Arc<str>,
    slots: [OnceLock<(&'static str, metrics::Counter)>; SLOTS],
}

impl StatusCounters {
    /// Counters for requests of `route`.
    pub fn new(route: Arc<str>) -> StatusCounters {
        StatusCounters { route, slots: Default::default() }
    }

    /// Counts one request of this route answered with `status` (a label of a status code).
    pub fn increment(&self, status: &'static str) {
        for slot in &self.slots {
            let (label, counter) = slot.get_or_init(|| (status, self.register(status)));
            if *label == status {
                counter.increment(1);
                return;
            }
        }
        self.register(status).increment(1);
    }

    fn register(&self, status: &'static str) -> metrics::Counter {
        metrics::counter!("proxy_requests_total", "route" => Arc::clone(&self.route), "status" => status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_counted_beyond_the_slots() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counters = StatusCounters::new(Arc::from("r"));
        let statuses = ["200", "201", "204", "301", "400", "404", "500", "502", "503"];
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                for status in statuses {
                    counters.increment(status);
                }
            }
        });
        let text = handle.render();
        for status in statuses {
            let line = format!("proxy_requests_total{{route=\"r\",status=\"{status}\"}} 3");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
