//! The sidecar holding the exchange lease dies mid-exchange: the others wait, then one takes
//! the lease over once it lapses (not before), exchanges, and shares the result.

use std::process::Stdio;
use std::time::Duration;

use crate::fleet::{api_ok, call_api, token_status, Fleet, PROMPT};
use crate::support::config::ConfigDir;
use crate::support::idp::{access_token, Idp, Reply};
use crate::support::sidecar::{binary, SidecarProcess};

const LEASE_TTL: Duration = Duration::from_secs(2);

/// The holder process, killed however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_mid_exchange_is_taken_over_after_its_lease() {
    let fleet = Fleet::start().await;
    let idp = Idp::start().await;
    // The first exchange hangs: its sidecar is killed before the answer comes.
    idp.push(Reply::token("never-delivered", 3600).delayed(Duration::from_secs(60)));
    let api = api_ok().await;
    let toml = fleet.config(&idp, api.port(), "lease_ttl = \"2s\"\nlease_wait = \"20s\"\n");

    // The holder: the binary started by hand, as it never becomes ready.
    let holder_dir = ConfigDir::empty();
    let mut holder = KillOnDrop(
        binary()
            .arg("run")
            .arg("--config")
            .arg(holder_dir.write_config(&toml))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the lease holder"),
    );
    let first = idp.wait_for(1, PROMPT).await;
    assert_eq!(fleet.redis.keys_containing("lease:token:").len(), 1, "the holder took the lease to exchange");
    holder.0.kill().expect("SIGKILL the lease holder");
    let _ = holder.0.wait();

    // Another sidecar finds the dead holder's lease and waits for it to lapse.
    let other_dir = ConfigDir::empty();
    let other = SidecarProcess::start(&other_dir.write_config(&toml), "info").await;
    let second = idp.wait_for(2, PROMPT).await;
    let after = second.at - first.at;
    assert!(
        after >= LEASE_TTL - Duration::from_millis(50),
        "the other sidecar exchanged {after:?} after the holder began, inside the holder's {LEASE_TTL:?} lease"
    );
    assert!(after <= LEASE_TTL + Duration::from_secs(3), "the take-over came {after:?} after the holder began");
    assert_eq!(idp.count(), 2, "one take-over exchange");
    assert!(fleet.redis.keys_containing("lease:token:").is_empty(), "the new holder released its lease");

    let reply = call_api(other.proxy, &api).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last().and_then(|s| s.bearer().map(str::to_string)), Some(access_token(2)));
    assert_eq!(token_status(other.admin, "api").await["source"], "exchange");
}
