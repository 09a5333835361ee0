//! Egress policy: where traffic may go, who may send it, where a token may be written, and
//! a record of it all.
//!
//! Agent functions can be steered by what they read, and the sidecar is the one place all
//! their traffic passes, so it decides:
//! - [`networks`] / [`connect`]: which addresses an upstream connection may reach, checked
//!   on the addresses a name resolved to, connecting only to checked ones;
//! - [`hosts`]: which hosts unrouted traffic may go to;
//! - [`callers`]: which function sent a request (and so which routes it may use);
//! - [`positions`]: where in a request a route's tokens may be written;
//! - [`rate`]: how often a route or a caller may be used;
//! - [`audit`]: one JSON line per request; [`report`]: the effective policy as a table.
//!
//! [`Policy`] is compiled once per snapshot; the request path only reads it.

pub mod audit;
pub mod callers;
pub mod connect;
pub mod hosts;
pub mod networks;
pub mod positions;
pub mod rate;
pub mod report;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, RateLimit};
use crate::error::ProxyError;
use crate::proxy::target::HostPort;
use crate::proxy::ProxyBody;
use callers::{Caller, Callers};
use networks::NetworkRules;
use positions::RoutePositions;
use rate::Bucket;

/// The policy of one snapshot.
#[derive(Debug)]
pub struct Policy {
    /// The rule sets upstream connections are checked with: `[0]` is `[policy]`'s (unrouted
    /// traffic, token exchanges, routes without allowances), then one per distinct set of
    /// route allowances. The upstream client keeps one connection pool per set, so a
    /// connection opened under a route's allowance is never reused by other traffic.
    pub network_sets: Vec<Arc<NetworkRules>>,
    pub hosts: hosts::HostRules,
    pub callers: Callers,
    /// By route index.
    pub routes: Vec<RoutePolicy>,
    pub audit: Option<Arc<audit::AuditLog>>,
    /// Rate-limit buckets by owner, carried into the next snapshot when unchanged.
    buckets: HashMap<(BucketOwner, String), Arc<Bucket>>,
}

/// What a bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketOwner {
    Route,
    Caller,
}

/// The policy of one route.
#[derive(Debug)]
pub struct RoutePolicy {
    /// The callers that may use it; `None`: every caller.
    pub callers: Option<Box<[Arc<str>]>>,
    /// Index into [`Policy::network_sets`].
    pub network_set: usize,
    pub positions: Option<Arc<RoutePositions>>,
    pub rate: Option<Arc<Bucket>>,
}

impl Policy {
    /// Compiles the policy of `config`, keeping the previous snapshot's rate-limit buckets
    /// and audit writer where their settings did not change.
    ///
    /// # Errors
    ///
    /// When the audit log cannot be opened.
    pub fn build(config: &Config, previous: Option<&Policy>) -> Result<Policy, String> {
        let mut buckets = HashMap::new();
        let mut bucket = |owner: BucketOwner, name: &str, limit: Option<RateLimit>| -> Option<Arc<Bucket>> {
            let limit = limit?;
            let key = (owner, name.to_string());
            let kept = previous.and_then(|p| p.buckets.get(&key)).filter(|b| b.limit() == limit);
            let b = kept.map_or_else(|| Arc::new(Bucket::new(limit)), Arc::clone);
            buckets.insert(key, Arc::clone(&b));
            Some(b)
        };
        let callers = Callers::new(&config.callers, |def| bucket(BucketOwner::Caller, &def.name, def.rate_limit));

        let global = Arc::new(config.policy.network_rules());
        let mut network_sets = vec![Arc::clone(&global)];
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let p = &route.policy;
            let network_set = if p.allow_networks.is_empty() {
                0
            } else {
                let rules = global.with_allowed(&p.allow_networks);
                match network_sets.iter().position(|s| **s == rules) {
                    Some(i) => i,
                    None => {
                        network_sets.push(Arc::new(rules));
                        network_sets.len() - 1
                    }
                }
            };
            routes.push(RoutePolicy {
                callers: p.callers.as_ref().map(|names| names.iter().map(|n| Arc::from(n.as_str())).collect()),
                network_set,
                positions: RoutePositions::compile(route),
                rate: bucket(BucketOwner::Route, &route.name, p.rate_limit),
            });
        }
        let audit = match (&config.audit, previous.and_then(|p| p.audit.as_ref())) {
            (None, _) => None,
            (Some(settings), Some(old)) if old.settings() == settings => Some(Arc::clone(old)),
            (Some(settings), _) => Some(audit::AuditLog::start(settings)?),
        };
        Ok(Policy {
            network_sets,
            hosts: hosts::HostRules::new(&config.policy.allow_hosts, &config.policy.deny_hosts),
            callers,
            routes,
            audit,
            buckets,
        })
    }

    /// The rules of unrouted traffic and token exchanges.
    pub fn networks(&self) -> &Arc<NetworkRules> {
        &self.network_sets[0]
    }

    /// Who sent a request (`None` when no callers are configured); 407 when it cannot say.
    pub fn identify(
        &self,
        listener: callers::Listener,
        peer: &callers::Peer,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<Caller>>, ProxyError> {
        self.callers.identify(listener, peer, headers).map_err(|e| ProxyError::ProxyAuthRequired(e.0))
    }

    /// Whether unrouted traffic may go to `host`, and whether the caller is within its rate.
    pub fn admit_unrouted(&self, host: &str, caller: Option<&Caller>) -> Result<(), ProxyError> {
        self.hosts.check(host).map_err(ProxyError::PolicyDenied)?;
        take_caller_token(caller)
    }

    /// Whether `caller` may use route `index` (named `name`) now.
    pub fn admit_route(&self, index: usize, name: &str, caller: Option<&Caller>) -> Result<(), ProxyError> {
        let Some(route) = self.routes.get(index) else { return Ok(()) };
        if let Some(allowed) = &route.callers {
            let who = caller.map(|c| &c.name);
            if !who.is_some_and(|w| allowed.contains(w)) {
                let list: Vec<&str> = allowed.iter().map(|a| &**a).collect();
                return Err(ProxyError::PolicyDenied(format!(
                    "caller {} may not use route {name} (its callers: {})",
                    who.map_or("(none)", |w| &**w),
                    list.join(", ")
                )));
            }
        }
        take_caller_token(caller)?;
        if let Some(bucket) = &route.rate {
            bucket.take().map_err(|wait| ProxyError::RateLimited {
                what: format!("route {name} ({})", bucket.limit()),
                retry_after: rate::retry_after_seconds(wait),
            })?;
        }
        Ok(())
    }
}

impl Policy {
    /// Answers a CONNECT with `error`, counted and logged.
    pub fn connect_answered(
        &self,
        caller: Option<&Caller>,
        target: &HostPort,
        error: ProxyError,
    ) -> http::Response<ProxyBody> {
        let code = error.code();
        let status = error.status();
        record(self, caller, &metrics::SharedString::const_str("none"), status_code_label(status), Some(code));
        if let Some(log) = &self.audit {
            let mut entry = audit::Entry::connect(caller, target, "tunnel");
            entry.status = status.as_u16();
            entry.error = Some(code);
            log.write(entry.line(std::time::Duration::ZERO));
        }
        error.into_response()
    }

    /// Counts and logs a CONNECT answered with 200 for an intercepted tunnel (its requests
    /// are logged one by one).
    pub fn connect_opened(&self, caller: Option<&Caller>, target: &HostPort, scheme: &'static str) {
        record(self, caller, &metrics::SharedString::const_str("intercept"), "200", None);
        if let Some(log) = &self.audit {
            let mut entry = audit::Entry::connect(caller, target, scheme);
            entry.status = 200;
            log.write(entry.line(std::time::Duration::ZERO));
        }
    }

    /// Counts a blind tunnel opened now; its audit line is written when it closes.
    pub fn tunnel_record(&self, caller: Option<&Caller>, target: &HostPort) -> Option<audit::TunnelLine> {
        record(self, caller, &metrics::SharedString::const_str("tunnel"), "200", None);
        let log = self.audit.as_ref()?;
        let mut entry = audit::Entry::connect(caller, target, "tunnel");
        entry.status = 200;
        Some(audit::TunnelLine::new(entry, Arc::clone(log)))
    }
}

/// The status labels CONNECT answers use.
fn status_code_label(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400",
        403 => "403",
        407 => "407",
        429 => "429",
        502 => "502",
        504 => "504",
        _ => "other",
    }
}

fn take_caller_token(caller: Option<&Caller>) -> Result<(), ProxyError> {
    let Some(caller) = caller else { return Ok(()) };
    let Some(bucket) = &caller.rate else { return Ok(()) };
    bucket.take().map_err(|wait| ProxyError::RateLimited {
        what: format!("caller {} ({})", caller.name, bucket.limit()),
        retry_after: rate::retry_after_seconds(wait),
    })
}

/// Counts a finished request by caller (`caller_requests_total`, when callers are configured)
/// and a policy refusal by its code (`policy_denials_total`).
pub fn record(
    policy: &Policy,
    caller: Option<&Caller>,
    route: &metrics::SharedString,
    status: &'static str,
    error: Option<&'static str>,
) {
    if policy.callers.is_empty() {
        if let Some(code) = error.filter(|e| audit::decision(Some(e)) == "denied") {
            metrics::counter!("policy_denials_total", "reason" => code, "caller" => "none").increment(1);
        }
        return;
    }
    let caller: metrics::SharedString = match caller {
        Some(c) => metrics::SharedString::from(Arc::clone(&c.name)),
        None => metrics::SharedString::const_str("unidentified"),
    };
    metrics::counter!("caller_requests_total", "caller" => caller.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    if let Some(code) = error.filter(|e| audit::decision(Some(e)) == "denied") {
        metrics::counter!("policy_denials_total", "reason" => code, "caller" => caller).increment(1);
    }
}
