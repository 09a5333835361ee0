//! Java's `HttpClient` (JDK 11+) through the sidecar, configured the way the README's client
//! guide says: `-Dhttp(s).proxyHost/Port` in `JAVA_TOOL_OPTIONS`, an empty
//! `-Dhttp.nonProxyHosts` (the default bypasses localhost), and a PKCS#12 truststore holding
//! the sidecar's CA. (Java asks for HTTP/2 by default: an h2c upgrade on an `http://` URL
//! would not be carried upstream; over TLS it gets h2 from the interception.)
//!
//! Skipped, with a message, when `javac` is missing; the client is compiled once per run.

use std::path::PathBuf;

use crate::protocols::ClientSetup;
use crate::support::client::{command, run_command, stdout};
use crate::support::jwt::verify_demo;

const SOURCE: &str = include_str!("ProxyClient.java");

/// The folder holding the compiled client, compiling it the first time; `None` (with the
/// reason printed) without a JDK.
async fn compiled() -> Option<PathBuf> {
    static COMPILE: tokio::sync::Mutex<Option<PathBuf>> = tokio::sync::Mutex::const_new(None);
    let mut done = COMPILE.lock().await;
    if let Some(dir) = done.as_ref() {
        return Some(dir.clone());
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-java");
    let source = dir.join("ProxyClient.java");
    let unchanged = std::fs::read_to_string(&source).is_ok_and(|s| s == SOURCE);
    if unchanged && dir.join("ProxyClient.class").exists() {
        *done = Some(dir.clone());
        return Some(dir);
    }
    std::fs::create_dir_all(&dir).expect("java build dir");
    std::fs::write(&source, SOURCE).expect("write the Java source");
    let mut javac = command("javac");
    javac.arg("-d").arg(&dir).arg(&source);
    match tokio::task::spawn_blocking(move || javac.output()).await.expect("javac task") {
        Err(_) => {
            println!("SKIPPED: javac is not installed; the Java HttpClient test needs a JDK (11 or newer)");
            return None;
        }
        Ok(out) => assert!(out.status.success(), "javac failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
    *done = Some(dir.clone());
    Some(dir)
}

#[tokio::test]
async fn java_http_client_with_system_properties_and_a_truststore() {
    let Some(classes) = compiled().await else { return };
    let ClientSetup { plain, tls, running } = ClientSetup::start().await;
    let store = running.dir.path("truststore.p12");
    let mut keytool = command("keytool");
    keytool
        .args(["-importcert", "-noprompt", "-alias", "token-sidecar", "-storetype", "PKCS12", "-storepass", "changeit"])
        .arg("-file")
        .arg(running.dir.path("ca/ca.pem"))
        .arg("-keystore")
        .arg(&store);
    let out = run_command(keytool).await;
    assert!(out.status.success(), "keytool failed: {}", String::from_utf8_lossy(&out.stderr));

    let proxy = running.proxy();
    let options = format!(
        "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={port} -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={port} \
         -Dhttp.nonProxyHosts= -Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit",
        port = proxy.port(),
        store = store.display()
    );
    let mut java = command("java");
    java.arg("-cp").arg(&classes).arg("ProxyClient");
    java.args([plain.url("/from-java"), format!("https://localhost:{}/from-java", tls.port())]);
    java.env("JAVA_TOOL_OPTIONS", options);
    let out = run_command(java).await;
    assert!(out.status.success(), "java failed: {}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines, ["200 HTTP_1_1 upstream ok", "200 HTTP_2 upstream ok"], "java printed {lines:?}");
    for upstream in [&plain, &tls] {
        let request = upstream.single();
        assert_eq!(verify_demo(request.token())["sub"], "tok");
        assert!(request.header("upgrade").is_none(), "an h2c upgrade reached the upstream: {:?}", request.headers);
    }
}
