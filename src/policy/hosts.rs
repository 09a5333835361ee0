//! Host rules for unrouted traffic: `allow_hosts` and `deny_hosts`.
//!
//! Routed requests go where their route says; everything else (absolute-form requests and
//! CONNECT targets no route matches) may be limited to a list of hosts, or kept away from
//! some. Names are written and matched as routes' hosts are: `api.example.com` exactly,
//! `*.example.com` for every name below it (not the name itself), case-insensitive, without
//! a trailing dot.

use std::collections::HashSet;

use crate::routes::{canonical_host, HostPattern};

/// A set of exact names and wildcard suffixes.
#[derive(Debug, Clone, Default)]
pub struct HostSet {
    exact: HashSet<String>,
    suffixes: HashSet<String>,
}

impl HostSet {
    pub fn new(patterns: &[HostPattern]) -> HostSet {
        let mut set = HostSet::default();
        for p in patterns {
            match p {
                HostPattern::Exact(h) => set.exact.insert(h.clone()),
                HostPattern::Suffix(s) => set.suffixes.insert(s.clone()),
            };
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// Whether `host` (canonical, as the request target gives it) is in the set.
    pub fn contains(&self, host: &str) -> bool {
        if self.exact.contains(host) {
            return true;
        }
        // Every proper suffix after a dot: a.b.example.com -> b.example.com, example.com, com.
        host.match_indices('.').any(|(i, _)| self.suffixes.contains(&host[i + 1..]))
    }
}

/// Where unrouted traffic may go.
#[derive(Debug, Clone, Default)]
pub struct HostRules {
    allow: HostSet,
    deny: HostSet,
}

impl HostRules {
    pub fn new(allow: &[HostPattern], deny: &[HostPattern]) -> HostRules {
        HostRules { allow: HostSet::new(allow), deny: HostSet::new(deny) }
    }

    /// Whether any rule is set (the check can be skipped otherwise).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Why unrouted traffic may not go to `host`, if it may not: a deny rule wins over an
    /// allow rule.
    pub fn check(&self, host: &str) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let canonical = canonical_host(host).unwrap_or_else(|_| host.to_ascii_lowercase());
        if self.deny.contains(&canonical) {
            return Err(format!("unrouted traffic to {canonical} is denied by [policy] deny_hosts"));
        }
        if !self.allow.is_empty() && !self.allow.contains(&canonical) {
            return Err(format!("unrouted traffic to {canonical} is denied: it is not in [policy] allow_hosts"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<HostPattern> {
        list.iter().map(|p| HostPattern::parse(p).unwrap()).collect()
    }

    #[test]
    fn exact_and_wildcard_names_match_like_routes() {
        let set = HostSet::new(&patterns(&["api.example.com", "*.corp.example"]));
        assert!(set.contains("api.example.com"));
        assert!(!set.contains("x.api.example.com"));
        assert!(set.contains("a.corp.example"));
        assert!(set.contains("a.b.corp.example"));
        assert!(!set.contains("corp.example"), "a wildcard does not match its suffix itself");
        assert!(!set.contains("xcorp.example"));
    }

    #[test]
    fn deny_wins_and_an_allow_list_closes_everything_else() {
        let rules = HostRules::new(&patterns(&["*.example.com"]), &patterns(&["admin.example.com"]));
        assert!(rules.check("api.example.com").is_ok());
        assert!(rules.check("API.Example.COM.").is_ok(), "compared canonically");
        assert!(rules.check("admin.example.com").unwrap_err().contains("deny_hosts"));
        assert!(rules.check("evil.test").unwrap_err().contains("allow_hosts"));
        let deny_only = HostRules::new(&[], &patterns(&["[::1]", "localhost"]));
        assert!(deny_only.check("evil.test").is_ok());
        assert!(deny_only.check("LOCALHOST").is_err());
        assert!(deny_only.check("[::1]").is_err());
        assert!(HostRules::default().check("anything").is_ok());
    }
}
