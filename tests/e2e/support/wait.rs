//! Waiting without guessing: every wait in the suite is a poll against a deadline.

use std::time::{Duration, Instant};

/// Polls `condition` every 10 ms until it holds or `deadline` has passed; returns whether it
/// held. Callers assert on the result with their own message (or, to check that something
/// does *not* happen for a while, on its negation).
pub async fn wait_until(deadline: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
