//! Route lookup cost at 10, 1,000 and 10,000 routes.
//!
//! Each table is a quarter prefixes on one host (`api.example.com`), a
//! quarter wildcard hosts and the rest exact hosts, so every scenario runs
//! against a table whose buckets grow with N. Lookup cost should stay about
//! the same as N grows.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use token_sidecar::routes::{HostPattern, RouteSpec, RouteTable, Scheme};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn route(host: &str, prefix: &str, value: usize) -> RouteSpec<usize> {
    RouteSpec {
        scheme: Scheme::Https,
        host: HostPattern::parse(host).expect("bench host patterns are valid"),
        port: None,
        path_prefix: prefix.to_owned(),
        methods: Vec::new(),
        value,
    }
}

struct Fixture {
    table: RouteTable<usize>,
    exact_host: String,
    wildcard_host: String,
    prefix_path: String,
}

fn fixture(n: usize) -> Fixture {
    let prefixes = n / 4;
    let wildcards = n / 4;
    let exacts = n - prefixes - wildcards;
    let mut specs = Vec::with_capacity(n);
    for i in 0..prefixes {
        specs.push(route("api.example.com", &format!("/v1/resource{i}"), specs.len()));
    }
    for i in 0..wildcards {
        specs.push(route(&format!("*.tenant{i}.example.net"), "/", specs.len()));
    }
    for i in 0..exacts {
        specs.push(route(&format!("svc{i}.internal.example"), "/", specs.len()));
    }
    let table = RouteTable::new(specs).expect("bench routes are valid and distinct");
    assert_eq!(table.len(), n);
    Fixture {
        table,
        exact_host: format!("svc{}.internal.example", exacts / 2),
        wildcard_host: format!("a.b.tenant{}.example.net", wildcards / 2),
        prefix_path: format!("/v1/resource{}/items/42", prefixes / 2),
    }
}

fn bench_route_match(c: &mut Criterion) {
    let fixtures: Vec<(usize, Fixture)> = SIZES.iter().map(|&n| (n, fixture(n))).collect();
    let get = Method::GET;

    let mut group = c.benchmark_group("route_match/exact_host_hit");
    for (n, f) in &fixtures {
        assert!(f.table.find(Scheme::Https, &f.exact_host, 443, "/x", &get).is_some());
        group.bench_with_input(BenchmarkId::from_parameter(n), f, |b, f| {
            b.iter(|| f.table.find(Scheme::Https, black_box(&f.exact_host), 443, black_box("/anything/at/all"), &get))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route_match/wildcard_hit");
    for (n, f) in &fixtures {
        assert!(f.table.find(Scheme::Https, &f.wildcard_host, 443, "/x", &get).is_some());
        group.bench_with_input(BenchmarkId::from_parameter(n), f, |b, f| {
            b.iter(|| f.table.find(Scheme::Https, black_box(&f.wildcard_host), 443, black_box("/x"), &get))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route_match/prefix_hit_one_host");
    for (n, f) in &fixtures {
        assert!(f.table.find(Scheme::Https, "api.example.com", 443, &f.prefix_path, &get).is_some());
        group.bench_with_input(BenchmarkId::from_parameter(n), f, |b, f| {
            b.iter(|| f.table.find(Scheme::Https, black_box("api.example.com"), 443, black_box(&f.prefix_path), &get))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route_match/miss");
    for (n, f) in &fixtures {
        assert!(f.table.find(Scheme::Https, "unknown.host.example.org", 443, "/", &get).is_none());
        group.bench_with_input(BenchmarkId::from_parameter(n), f, |b, f| {
            b.iter(|| {
                f.table.find(
                    Scheme::Https,
                    black_box("unknown.host.example.org"),
                    443,
                    black_box("/v1/resource1"),
                    &get,
                )
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_route_match
}
criterion_main!(benches);
