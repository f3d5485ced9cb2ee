//! TLS (docs/API.md, "Exposure"), with certificates made here: HTTPS only, a reload on SIGHUP
//! that keeps connections, and a Raft group over mutual TLS that takes no stranger.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster_support::{Cluster, Options};
use crate::common::spawn_app_with;
use crate::process_support::ServerProcess;
use crate::tls_support::{https, presented_certificate, Ca, KeptAlive};

/// A server with a certificate of a new CA (kept in `dir`), serving HTTPS only.
fn https_app(dir: &std::path::Path) -> (Ca, crate::common::TestApp) {
    let ca = Ca::new(dir, "test");
    let cert = ca.issue("server");
    let app = spawn_app_with(|c| {
        c.tls_cert = Some(cert.cert.clone());
        c.tls_key = Some(cert.key.clone());
    });
    (ca, app)
}

#[test]
fn https_is_served_and_plain_http_on_the_same_port_gets_no_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, app) = https_app(tmp.path());
    let body = br#"{"email":"tls@x.io"}"#;
    let answer = https(app.addr, &ca.client(), "POST", "/identify", body, &[]).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json()["contact"]["emails"][0], "tls@x.io");

    let mut plain = TcpStream::connect(app.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /contacts/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn sighup_serves_the_new_certificate_keeps_connections_and_survives_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "rotation");
    let (first, second) = (ca.issue("first"), ca.issue("second"));
    let (cert, key) = (tmp.path().join("server.pem"), tmp.path().join("server.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let client = ca.client();
    let data = tmp.path().join("data").display().to_string();
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let args = [
        "--data-dir",
        &data,
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
    ];
    let ready_client = client.clone();
    let mut server = ServerProcess::start(&args, &tmp.path().join("server.log"), move |addr| {
        https(addr, &ready_client, "GET", "/healthz", b"", &[]).is_ok_and(|r| r.status == 200)
    });
    let addr = server.addr;
    let mut kept = KeptAlive::open(addr, &client).unwrap();
    assert_eq!(kept.get("/healthz").unwrap().status, 200);
    assert_eq!(presented_certificate(addr, &client).unwrap(), first.der);

    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    server.signal("-HUP");
    server.wait_until(
        Duration::from_secs(10),
        "the new certificate served",
        || presented_certificate(addr, &client).is_ok_and(|c| c == second.der),
    );
    assert_eq!(
        kept.get("/healthz").unwrap().status,
        200,
        "the connection made before the reload still serves"
    );

    std::fs::write(&key, "not a key").unwrap();
    server.signal("-HUP");
    server.wait_until(Duration::from_secs(10), "the failed reload logged", || {
        server.log_text().contains("TLS reload failed")
    });
    assert_eq!(
        presented_certificate(addr, &client).unwrap(),
        second.der,
        "a failed reload keeps the certificate in use"
    );
    server.stop();
    assert!(
        !server.log_text().contains("not a key"),
        "no key material in the log"
    );
}

#[test]
fn a_raft_group_over_mutual_tls_elects_replicates_and_refuses_other_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::new(tmp.path(), "members"));
    let cluster = Cluster::start(
        3,
        Options {
            tls: Some(ca.clone()),
            peer_ca: true,
            ..Options::default()
        },
    );
    let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let follower = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    // A follower forwards the change to the leader, over mutual TLS too.
    let answer = cluster
        .node(follower)
        .post("/identify", r#"{"email":"mtls@x.io"}"#)
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    let export = cluster.converged_export(&[1, 2, 3], Duration::from_secs(20));
    assert!(export.contains("mtls@x.io"), "{export}");

    let addr = cluster.node(leader).addr;
    let vote = |client: &Arc<rustls::ClientConfig>| {
        https(
            addr,
            client,
            "POST",
            "/cluster/raft/vote",
            b"not a vote",
            &[],
        )
    };
    let stranger = Ca::new(tmp.path(), "stranger").issue("intruder");
    let refused = vote(&ca.client_presenting(&stranger));
    assert!(
        refused.is_err(),
        "a certificate another CA signed is refused at the handshake: {refused:?}"
    );
    let no_certificate = vote(&ca.client()).unwrap();
    assert_eq!(no_certificate.status, 403, "{}", no_certificate.text);
    let healthz = https(addr, &ca.client(), "GET", "/healthz", b"", &[]).unwrap();
    assert_eq!(
        healthz.status, 200,
        "clients of the API need no certificate"
    );
    let member = vote(&ca.client_presenting(&ca.issue("member-4"))).unwrap();
    assert_eq!(
        member.status, 400,
        "a certificate the CA signed is let through (to a body that is no vote): {}",
        member.text
    );
}

#[test]
fn a_member_whose_certificate_another_ca_signed_never_joins() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::new(tmp.path(), "members"));
    let stranger = Arc::new(Ca::new(tmp.path(), "stranger"));
    let cluster = Cluster::start(
        3,
        Options {
            tls: Some(ca.clone()),
            peer_ca: true,
            stranger: Some((3, stranger.clone())),
            ..Options::default()
        },
    );
    cluster.wait_for_leader(&[1, 2], Duration::from_secs(20));
    let answer = cluster
        .node(1)
        .post("/identify", r#"{"email":"two@x.io"}"#)
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    let export = cluster.converged_export(&[1, 2], Duration::from_secs(20));
    assert!(export.contains("two@x.io"));
    // Node 3 trusts only the other CA, and the members only theirs: it hears from no one.
    let outsider = cluster.node(3).status().unwrap();
    assert!(outsider["leader"].is_null(), "{outsider}");
    assert!(outsider["appliedIndex"].is_null(), "{outsider}");
}

#[test]
fn the_change_feed_follower_reads_https_trusting_the_ca_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, app) = https_app(tmp.path());
    let body = br#"{"email":"feed@x.io"}"#;
    https(app.addr, &ca.client(), "POST", "/identify", body, &[]).unwrap();
    // The certificate names localhost (as rcgen issued it for the tests).
    let url = format!("https://localhost:{}", app.addr.port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_identity-engine"))
        .args(["changes", "--url", &url, "--ca"])
        .arg(ca.ca_file())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        (event["seq"].as_u64(), event["type"].as_str()),
        (Some(1), Some("created"))
    );
    let untrusted = std::process::Command::new(env!("CARGO_BIN_EXE_identity-engine"))
        .args(["changes", "--url", &url])
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "a certificate no trusted CA signed is refused"
    );
}
