//! `GET /cache`, `DELETE /cache`, `DELETE /cache/ROUTE`, and reloads: entries of routes whose
//! cache settings, upstream or tokens changed are dropped; unchanged routes keep theirs.

use super::{assert_reply, cache_report, cached_route, entries_of};
use crate::support::client::{get, request, send};
use crate::support::config::{config, rs256_token, ConfigDir};
use crate::support::origin::Origin;
use crate::support::sidecar::start_file;

async fn admin(admin: std::net::SocketAddr, method: &str, path: &str) -> crate::support::client::Reply {
    send(admin, request(method, path, &[("host", &admin.to_string())], "")).await
}

#[tokio::test]
async fn the_admin_endpoints_report_and_purge_per_route_or_all() {
    let origin = Origin::counting().await;
    let routes = format!(
        "{}{}{}",
        cached_route("alpha", origin.port(), &["tok"], "path_prefix = \"/a\"", "ttl = \"60s\""),
        cached_route("beta", origin.port(), &["tok"], "path_prefix = \"/b\"", "ttl = \"60s\""),
        // Unnamed: it is `routes[2]`, which travels percent-encoded in the admin path.
        cached_route("", origin.port(), &["tok"], "path_prefix = \"/c\"", "ttl = \"60s\"").replace("name = \"\"\n", ""),
    );
    let dir = ConfigDir::empty();
    let path =
        dir.write_config(&config("[cache]\nmax_bytes = \"2MiB\"", &format!("{}{routes}", rs256_token("tok", "10m"))));
    let sidecar = start_file(&path).await;
    let proxy = sidecar.proxy_addr;
    for url in ["/a/1", "/a/2", "/b/1", "/c/1"] {
        assert_eq!(get(proxy, &origin.url(url), &[]).await.status, 200);
    }
    let report = cache_report(sidecar.admin_addr).await;
    assert_eq!((report["entries"].as_u64(), report["max_bytes"].as_u64()), (Some(4), Some(2 << 20)), "{report}");
    let routes = report["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "routes[2]"]);
    assert_eq!(routes[0]["entries"], 2);
    let bytes: u64 = routes.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert!(bytes > 0 && bytes == report["bytes"].as_u64().unwrap(), "{report}");
    assert!(!report.to_string().contains("/a/1"), "no keys or targets in the report: {report}");

    let purged = admin(sidecar.admin_addr, "DELETE", "/cache/alpha").await;
    assert_eq!((purged.status.as_u16(), purged.json()), (200, serde_json::json!({"route": "alpha", "purged": 2})));
    assert_eq!(entries_of(sidecar.admin_addr, "alpha").await, 0);
    assert_eq!(entries_of(sidecar.admin_addr, "beta").await, 1);
    assert_reply(&get(proxy, &origin.url("/a/1"), &[]).await, "5", "miss");
    assert_reply(&get(proxy, &origin.url("/b/1"), &[]).await, "3", "hit");

    let unnamed = admin(sidecar.admin_addr, "DELETE", "/cache/routes%5B2%5D").await;
    assert_eq!(unnamed.json()["purged"], 1);
    let unknown = admin(sidecar.admin_addr, "DELETE", "/cache/gamma").await;
    assert_eq!((unknown.status.as_u16(), &unknown.json()["error"]), (404, &"unknown_route".into()));
    let wrong = admin(sidecar.admin_addr, "POST", "/cache").await;
    assert_eq!((wrong.status.as_u16(), wrong.headers["allow"].to_str().unwrap()), (405, "GET, HEAD, DELETE"));

    let all = admin(sidecar.admin_addr, "DELETE", "/cache").await;
    assert_eq!(all.json()["purged"], 2);
    let report = cache_report(sidecar.admin_addr).await;
    assert_eq!((report["entries"].as_u64(), report["bytes"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_reply(&get(proxy, &origin.url("/b/1"), &[]).await, "6", "miss");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_reload_drops_the_entries_of_routes_whose_cache_upstream_or_tokens_changed() {
    let origin = Origin::counting().await;
    let moved_to = Origin::counting().await;
    let text = |ttl: &str, moved: u16, sub: &str| {
        let routes = format!(
            "{}{}{}{}",
            cached_route("kept", origin.port(), &["tok"], "path_prefix = \"/kept\"", "ttl = \"60s\""),
            cached_route("ttl", origin.port(), &["tok"], "path_prefix = \"/ttl\"", &format!("ttl = \"{ttl}\"")),
            cached_route("moved", moved, &["tok"], "path_prefix = \"/moved\"", "ttl = \"60s\""),
            cached_route("tokens", origin.port(), &["other"], "path_prefix = \"/tokens\"", "ttl = \"60s\""),
        );
        let other = rs256_token("other", "10m").replace("sub = \"other\"", &format!("sub = \"{sub}\""));
        config("", &format!("{}{other}{routes}", rs256_token("tok", "10m")))
    };
    let dir = ConfigDir::empty();
    let path = dir.write_config(&text("60s", origin.port(), "first"));
    let sidecar = start_file(&path).await;
    let proxy = sidecar.proxy_addr;
    for (url, body) in [("/kept/x", "1"), ("/ttl/x", "2"), ("/moved/x", "3"), ("/tokens/x", "4")] {
        assert_reply(&get(proxy, &origin.url(url), &[]).await, body, "miss");
    }
    assert_eq!(cache_report(sidecar.admin_addr).await["entries"], 4);

    dir.write_config(&text("120s", moved_to.port(), "second"));
    let outcome = token_sidecar::reload::reload(&path, &sidecar).await.expect("the reload is accepted");
    assert_eq!(outcome, token_sidecar::reload::ReloadOutcome::Applied);
    for (name, entries) in [("kept", 1), ("ttl", 0), ("moved", 0), ("tokens", 0)] {
        assert_eq!(entries_of(sidecar.admin_addr, name).await, entries, "{name} after the reload");
    }
    assert_reply(&get(proxy, &origin.url("/kept/x"), &[]).await, "1", "hit");
    assert_reply(&get(proxy, &origin.url("/ttl/x"), &[]).await, "5", "miss");
    assert_reply(&get(proxy, &origin.url("/tokens/x"), &[]).await, "6", "miss");
    assert_reply(&get(proxy, &moved_to.url("/moved/x"), &[]).await, "1", "miss");
    assert_eq!(cache_report(sidecar.admin_addr).await["entries"], 4);
    sidecar.shutdown().await;
}
