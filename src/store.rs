//! The token store: one lock-free cell per token, kept current by a background refresher.
//!
//! Requests only ever `load` a cell (an atomic pointer read); signing happens on the
//! refresher, on the blocking pool, so even an RSA-4096 signature never delays a request.
//! A failed refresh keeps the last good token until its own `exp`; after that the cell
//! reports it as unavailable and requests needing it get 503 instead of a stale token.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::task::AbortHandle;

use crate::tokens::{MintError, MintedToken, TokenDefinition};

/// What [`Mint::mint`] returns: signing runs on the blocking pool, an exchange on the runtime.
pub type MintFuture = Pin<Box<dyn Future<Output = Result<MintedToken, MintError>> + Send>>;

/// Why a cell asks for a token: a fleet-shared exchange treats each differently.
#[derive(Debug, Clone)]
pub enum MintReason {
    /// The first token, or the background refresh ahead of expiry.
    Scheduled,
    /// An operator asked for a new value now (`POST /tokens/NAME/refresh`).
    Forced,
    /// An upstream answered 401 to this value.
    Rejected(Arc<MintedToken>),
}

/// Something that can produce tokens: a configured token definition, an exchange at a token
/// endpoint, or a test double.
pub trait Mint: Send + Sync + 'static {
    /// Produces a fresh token valid from `now`. Never called on the request path.
    fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture;
    /// Produces a token for `reason`; by default the same as [`Mint::mint`].
    fn mint_for(self: Arc<Self>, now: SystemTime, _reason: MintReason) -> MintFuture {
        self.mint(now)
    }
    /// Where the last token produced came from, for `/tokens`: `signed`, `static`,
    /// `exchange`, or for fleet-shared tokens `shared` (a peer's exchange, read from Redis)
    /// and `exchange_fallback` (exchanged here because Redis was unavailable).
    fn source(&self) -> &'static str {
        "signed"
    }
    /// How long before `token`'s expiry to produce the next one.
    fn refresh_before(&self, token: &MintedToken) -> Duration;
    /// Whether a failure to produce the first token fails the start (or reload). A signing
    /// failure is a configuration problem; a token endpoint that is down is not, and the
    /// sidecar starts without that token, retrying with backoff.
    fn required_at_start(&self) -> bool {
        true
    }
    /// Whether an upstream's 401 to a request carrying this token means it should be
    /// renewed: true for exchanged tokens, which the issuer may revoke early.
    fn renews_on_rejection(&self) -> bool {
        false
    }
    /// Hands an exchange the upstream client of a new snapshot that keeps this token's cell,
    /// so a reloaded CA bundle or timeout applies to the next exchange.
    fn use_upstream(&self, _upstream: &Arc<crate::proxy::upstream::Upstream>) {}
}

impl Mint for TokenDefinition {
    fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || TokenDefinition::mint(&self, now))
                .await
                .unwrap_or(Err(MintError::Aborted))
        })
    }

    fn refresh_before(&self, _token: &MintedToken) -> Duration {
        self.refresh_before
    }

    fn source(&self) -> &'static str {
        if self.expires() {
            "signed"
        } else {
            "static"
        }
    }
}

/// What the refresher last did, for `/tokens` and `/readyz`. Never holds the token.
#[derive(Debug, Clone, Default)]
pub struct RefreshStatus {
    pub last_attempt: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Where the current value came from ([`Mint::source`]).
    pub source: Option<&'static str>,
}

/// One token's current value and its refresher.
pub struct TokenCell {
    name: Arc<str>,
    minter: Arc<dyn Mint>,
    current: ArcSwapOption<MintedToken>,
    status: Mutex<RefreshStatus>,
    refresher: Mutex<Option<AbortHandle>>,
    /// Held while a token is being produced, so the background refresher, an admin refresh
    /// and any number of 401s cause one exchange at a time, never a burst.
    producing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCell").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Drop for TokenCell {
    fn drop(&mut self) {
        if let Some(handle) = self.refresher.get_mut().ok().and_then(Option::take) {
            handle.abort();
        }
    }
}

/// Retry delays after a failed refresh: 1s, 2s, 4s ... capped at 60s.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

impl TokenCell {
    /// Produces the first token (so the cell is ready before any request) and starts the
    /// refresher on the current tokio runtime. The refresher stops when the cell is dropped.
    ///
    /// If the first attempt fails, the start fails when the minter requires its first token
    /// ([`Mint::required_at_start`]); otherwise the cell starts empty and the refresher
    /// retries with backoff.
    pub async fn start(name: &str, minter: Arc<dyn Mint>) -> Result<Arc<TokenCell>, MintError> {
        let cell = Arc::new(TokenCell {
            name: Arc::from(name),
            minter,
            current: ArcSwapOption::empty(),
            status: Mutex::new(RefreshStatus::default()),
            refresher: Mutex::new(None),
            producing: tokio::sync::Mutex::new(()),
        });
        let first = {
            let _producing = cell.producing.lock().await;
            cell.refresh_once(MintReason::Scheduled).await
        };
        if let Err(e) = &first {
            if cell.minter.required_at_start() {
                return Err(e.clone());
            }
        }
        let task = tokio::spawn(refresh_loop(Arc::downgrade(&cell), first.is_err()));
        if let Ok(mut slot) = cell.refresher.lock() {
            *slot = Some(task.abort_handle());
        }
        Ok(cell)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current token if it has not expired. One atomic load; safe on the request path.
    pub fn current(&self, now: SystemTime) -> Option<Arc<MintedToken>> {
        self.current.load_full().filter(|t| t.expires_at > now)
    }

    /// The current token even if expired, for status reporting.
    pub fn latest(&self) -> Option<Arc<MintedToken>> {
        self.current.load_full()
    }

    pub fn status(&self) -> RefreshStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether an upstream's 401 to this token is a reason to renew it.
    pub fn renews_on_rejection(&self) -> bool {
        self.minter.renews_on_rejection()
    }

    pub(crate) fn use_upstream(&self, upstream: &Arc<crate::proxy::upstream::Upstream>) {
        self.minter.use_upstream(upstream);
    }

    /// Produces a new token now (the admin's forced refresh), waiting for one in progress.
    pub async fn refresh_now(&self) -> Result<Arc<MintedToken>, MintError> {
        let _producing = self.producing.lock().await;
        self.refresh_once(MintReason::Forced).await?;
        self.latest().ok_or(MintError::Aborted)
    }

    /// Renews a token an upstream rejected. `rejected` is the value the request carried: if
    /// another caller already replaced it (or is replacing it), that newer token is used, so
    /// fifty requests rejected together cause one exchange.
    pub async fn renew_rejected(&self, rejected: &Arc<MintedToken>) -> Result<Arc<MintedToken>, MintError> {
        let _producing = self.producing.lock().await;
        if let Some(newer) = self.current(SystemTime::now()).filter(|t| !Arc::ptr_eq(t, rejected)) {
            return Ok(newer);
        }
        self.refresh_once(MintReason::Rejected(Arc::clone(rejected))).await?;
        self.latest().ok_or(MintError::Aborted)
    }

    /// Produces one token and stores it, recording the outcome. Callers hold `producing`.
    async fn refresh_once(&self, reason: MintReason) -> Result<(), MintError> {
        let now = SystemTime::now();
        let result = Arc::clone(&self.minter).mint_for(now, reason).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics::counter!("token_refreshes_total", "token" => self.name.to_string(), "result" => outcome).increment(1);
        let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        status.last_attempt = Some(now);
        match result {
            Ok(token) => {
                let expires_at = token.expires_at;
                self.current.store(Some(Arc::new(token)));
                status.last_success = Some(now);
                status.last_error = None;
                status.consecutive_failures = 0;
                status.source = Some(self.minter.source());
                tracing::info!(token = %self.name, expires_in = ?expires_at.duration_since(now).unwrap_or_default(), "token refreshed");
                Ok(())
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                status.consecutive_failures += 1;
                tracing::warn!(token = %self.name, error = %e, failures = status.consecutive_failures, "token refresh failed");
                Err(e)
            }
        }
    }

    /// When the next refresh is due: `refresh_before` ahead of expiry, minus up to a tenth of
    /// that again at random, so many tokens with equal ttls do not all sign at once.
    fn next_refresh_delay(&self, now: SystemTime) -> Duration {
        let Some(token) = self.current.load_full() else {
            return Duration::ZERO;
        };
        let lead = self.minter.refresh_before(&token);
        let jitter = lead.mul_f64(rand::random::<f64>() * 0.1);
        token.expires_at.checked_sub(lead + jitter).and_then(|at| at.duration_since(now).ok()).unwrap_or_default()
    }
}

async fn refresh_loop(cell: Weak<TokenCell>, start_failed: bool) {
    let mut backoff = BACKOFF_START;
    if start_failed {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
    loop {
        let delay = match cell.upgrade() {
            Some(c) => c.next_refresh_delay(SystemTime::now()),
            None => return,
        };
        tokio::time::sleep(delay).await;
        loop {
            let Some(c) = cell.upgrade() else { return };
            let before = c.latest().map(|t| t.expires_at);
            let refreshed = {
                let _producing = c.producing.lock().await;
                // A forced or 401-driven refresh may have renewed it while this one waited.
                let renewed = c.latest().map(|t| t.expires_at) != before && before.is_some();
                renewed || c.refresh_once(MintReason::Scheduled).await.is_ok()
            };
            if refreshed {
                backoff = BACKOFF_START;
                // JWT times are whole seconds: signing again within the same second gives the
                // same expiry, so a refresh_before close to the ttl would re-sign in a loop.
                // Let the clock reach the next second before deciding again.
                if before.is_some() && before == c.latest().map(|t| t.expires_at) {
                    drop(c);
                    tokio::time::sleep(until_next_second(SystemTime::now())).await;
                }
                break;
            }
            drop(c);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }
}

/// Time from `now` to the next whole second of the Unix clock.
fn until_next_second(now: SystemTime) -> Duration {
    let sub = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    Duration::from_nanos(u64::from(1_000_000_000 - sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A test double that answers at once, like a signer would.
    trait SyncMint: Send + Sync + 'static {
        fn sign(&self, now: SystemTime) -> Result<MintedToken, MintError>;
        fn lead(&self) -> Duration;
    }

    impl<T: SyncMint> Mint for T {
        fn mint(self: Arc<Self>, now: SystemTime) -> MintFuture {
            Box::pin(std::future::ready(self.sign(now)))
        }
        fn refresh_before(&self, _token: &MintedToken) -> Duration {
            self.lead()
        }
    }

    /// Mints numbered tokens with a short ttl; can be told to fail.
    struct Flaky {
        ttl: Duration,
        failing: AtomicBool,
        minted: AtomicU32,
    }

    impl SyncMint for Flaky {
        fn sign(&self, now: SystemTime) -> Result<MintedToken, MintError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(MintError::Sign("injected".into()));
            }
            let n = self.minted.fetch_add(1, Ordering::SeqCst);
            Ok(MintedToken {
                exposed: Vec::new(),
                value: format!("t{n}").into(),
                issued_at: now,
                expires_at: now + self.ttl,
            })
        }
        fn lead(&self) -> Duration {
            self.ttl / 2
        }
    }

    /// Mints like a JWT: whole-second times.
    struct WholeSeconds {
        minted: AtomicU32,
    }

    impl SyncMint for WholeSeconds {
        fn sign(&self, now: SystemTime) -> Result<MintedToken, MintError> {
            self.minted.fetch_add(1, Ordering::SeqCst);
            let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            Ok(MintedToken {
                exposed: Vec::new(),
                value: "t".into(),
                issued_at,
                expires_at: issued_at + Duration::from_secs(2),
            })
        }
        fn lead(&self) -> Duration {
            Duration::from_millis(1500)
        }
    }

    #[tokio::test]
    async fn a_lead_close_to_the_ttl_does_not_re_sign_in_a_loop() {
        let minter = Arc::new(WholeSeconds { minted: AtomicU32::new(0) });
        let cell = TokenCell::start("t", minter.clone()).await.unwrap();
        let started = std::time::Instant::now();
        // Two seconds of refreshing: at most a few signings per second, never thousands.
        assert!(wait_for(Duration::from_secs(5), || started.elapsed() >= Duration::from_secs(2)).await);
        let minted = minter.minted.load(Ordering::SeqCst);
        assert!(minted <= 8, "{minted} signings in 2 s");
        assert!(cell.current(SystemTime::now()).is_some());
    }

    async fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn refreshes_ahead_of_expiry_keeps_last_good_then_expires_then_recovers() {
        let flaky = Arc::new(Flaky {
            ttl: Duration::from_millis(600),
            failing: AtomicBool::new(false),
            minted: AtomicU32::new(0),
        });
        let cell = TokenCell::start("t", flaky.clone()).await.unwrap();
        let first = cell.current(SystemTime::now()).unwrap();
        assert_eq!(&first.value[..], b"t0");
        // A refresh happens before the first token expires.
        assert!(wait_for(Duration::from_secs(5), || flaky.minted.load(Ordering::SeqCst) >= 2).await);
        assert!(SystemTime::now() < first.expires_at, "the second token was signed only after the first expired");

        // Signing breaks: the last good token is served until its exp, then nothing.
        flaky.failing.store(true, Ordering::SeqCst);
        assert!(wait_for(Duration::from_secs(5), || cell.status().consecutive_failures >= 1).await);
        // Nothing is signed while failing, so the newest token signed is the last good one: the
        // failed refresh left it in the cell, served up to its exp and not after.
        let last_good = format!("t{}", flaky.minted.load(Ordering::SeqCst) - 1);
        let last = cell.latest().expect("a failed refresh emptied the cell");
        assert_eq!(last.value, last_good.as_bytes(), "a failed refresh replaced the last good token");
        let just_before_exp = last.expires_at - Duration::from_millis(1);
        assert_eq!(cell.current(just_before_exp).map(|t| t.value.clone()), Some(last.value.clone()));
        assert!(cell.current(last.expires_at).is_none(), "a token is not current at its exp");
        assert!(wait_for(Duration::from_secs(5), || cell.current(SystemTime::now()).is_none()).await);
        assert!(cell.status().last_error.unwrap().contains("injected"));

        // Signing works again: a fresh token appears after the backoff.
        flaky.failing.store(false, Ordering::SeqCst);
        assert!(wait_for(Duration::from_secs(10), || cell.current(SystemTime::now()).is_some()).await);
        assert_eq!(cell.status().consecutive_failures, 0);
    }

    #[tokio::test]
    async fn dropping_the_cell_stops_its_refresher() {
        let flaky = Arc::new(Flaky {
            ttl: Duration::from_millis(200),
            failing: AtomicBool::new(false),
            minted: AtomicU32::new(0),
        });
        let cell = TokenCell::start("t", flaky.clone()).await.unwrap();
        assert!(wait_for(Duration::from_secs(5), || flaky.minted.load(Ordering::SeqCst) >= 2).await);
        drop(cell);
        let after_drop = flaky.minted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(flaky.minted.load(Ordering::SeqCst) <= after_drop + 1);
    }

    /// Succeeds or fails as scripted (then fails), stamping each attempt with tokio's clock.
    struct Scripted {
        script: Mutex<std::collections::VecDeque<bool>>,
        attempts: Mutex<Vec<tokio::time::Instant>>,
        attempted: tokio::sync::mpsc::UnboundedSender<()>,
    }

    impl SyncMint for Scripted {
        fn sign(&self, now: SystemTime) -> Result<MintedToken, MintError> {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(tokio::time::Instant::now());
            let _ = self.attempted.send(());
            if !self.script.lock().unwrap().pop_front().unwrap_or(false) {
                return Err(MintError::Sign("scripted failure".into()));
            }
            // Already inside `refresh_before` of its expiry, so the next refresh is due at once
            // (the wall clock does not move with tokio's paused clock); a distinct expiry each
            // time, so the store's same-second guard does not wait.
            let expires_at = now + Duration::from_secs(1) + Duration::from_nanos(attempts.len() as u64);
            Ok(MintedToken { exposed: Vec::new(), value: "scripted".into(), issued_at: now, expires_at })
        }
        fn lead(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    /// README: a failed refresh is retried with backoff, 1 s doubling to 60 s; a success
    /// starts the schedule over. Tokio's paused clock runs the schedule without waiting.
    #[tokio::test(start_paused = true)]
    async fn failed_refreshes_back_off_from_1s_doubling_to_60s() {
        let (attempted, mut attempts) = tokio::sync::mpsc::unbounded_channel();
        // The first signing (at start), nine failures, a success, then failures.
        let script = [[true].as_slice(), &[false; 9], &[true], &[false; 3]].concat();
        let total = script.len();
        let minter = Arc::new(Scripted { script: Mutex::new(script.into()), attempts: Mutex::default(), attempted });
        let cell = TokenCell::start("t", minter.clone()).await.unwrap();
        for _ in 0..total {
            attempts.recv().await.expect("an attempt");
        }
        drop(cell);
        let at = minter.attempts.lock().unwrap().clone();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).take(total - 1).collect();
        let expected: Vec<Duration> =
            [0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 0, 1, 2].into_iter().map(Duration::from_secs).collect();
        assert_eq!(gaps, expected, "delays between signing attempts");
    }

    /// A JWT-shaped value, to look for in `Debug` output.
    struct FixedJwt;

    impl SyncMint for FixedJwt {
        fn sign(&self, now: SystemTime) -> Result<MintedToken, MintError> {
            let value = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjZWxsLWRlYnVnIn0.c2lnbmF0dXJlLW9mLXRoZS1jZWxs";
            Ok(MintedToken {
                exposed: Vec::new(),
                value: value.into(),
                issued_at: now,
                expires_at: now + Duration::from_secs(60),
            })
        }
        fn lead(&self) -> Duration {
            Duration::from_secs(10)
        }
    }

    #[tokio::test]
    async fn a_cells_debug_shows_no_token() {
        let cell = TokenCell::start("cell", Arc::new(FixedJwt)).await.unwrap();
        let value = String::from_utf8(cell.latest().unwrap().value.to_vec()).unwrap();
        for shown in [format!("{cell:?}"), format!("{cell:#?}"), format!("{:?}", cell.current(SystemTime::now()))] {
            for part in value.split('.') {
                assert!(!shown.contains(part), "Debug shows part of the token: {shown}");
            }
        }
    }

    #[tokio::test]
    async fn first_mint_failure_is_reported() {
        let flaky =
            Arc::new(Flaky { ttl: Duration::from_secs(60), failing: AtomicBool::new(true), minted: AtomicU32::new(0) });
        let err = TokenCell::start("t", flaky).await.unwrap_err();
        assert_eq!(err, MintError::Sign("injected".into()));
    }
}
