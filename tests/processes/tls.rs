//! TLS between nodes and to a private mail server, with the built binary as separate processes
//! on loopback and certificates made with rcgen: a cluster with `[tls]` on every node elects,
//! runs checks and fails over; foreign certificates are refused; the cluster secret is still
//! checked under TLS; unusable certificate files stop a node at start; `[smtp] ca` lets mail
//! through STARTTLS to a server signed by that CA.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gobearmon::config::{Secret, SmtpTls};
use gobearmon::notify::admin::{AdminKind, AdminNotifier, AdminOutcome};
use gobearmon::notify::email::EmailSender;
use gobearmon::rpc::sign::Signer;
use testkit::cluster::{Cluster, ClusterPki, SECRET, wait_until};
use testkit::config::{NodeFile, TlsSection, ViewserverSection};
use testkit::db::TestDb;
use testkit::notify::{SmtpOptions, SmtpServer, TestPki, smtp_config};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gobearmon"));
    c.env_remove("RUST_LOG");
    c
}

/// The whole chain of an error, for assertions on what went wrong underneath.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

/// A client that speaks plain HTTP.
fn plain_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .unwrap()
}

/// A client that trusts `trusted` and presents `identity` (certificate and key files).
fn client_with(trusted: &str, identity: Option<(&Path, &Path)>) -> reqwest::blocking::Client {
    gobearmon::tlsutil::install_default_provider();
    let mut b = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(trusted.as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[test]
fn a_tls_cluster_elects_runs_checks_and_fails_over() {
    let _serial = testkit::cluster::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _store) = rt.block_on(TestDb::installed("tls_cluster"));
    // A port the check finds open, so both workers report results to the controller.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    rt.block_on(db.exec(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'tcp over tls','tcp','{{"address":"127.0.0.1:{port}","timeout":3}}',1,0)"#
    )));
    let mut c = Cluster::builder(crate::BIN, &db.url)
        .viewservers(3)
        .workers(2)
        .tls()
        .start();

    // Phase 1: Raft between the members and heartbeats from the workers run over TLS, so a
    // controller is named and takes control.
    let (e1, first) = wait_until(Duration::from_secs(30), "a controller", || {
        match c.current() {
            Some((epoch, Some(node))) if epoch > 0 => Some((epoch, node)),
            _ => None,
        }
    });
    let w1 = c.worker_index(&first);
    c.wait_acting(w1, true, Duration::from_secs(10));

    // Phase 2: /ready over https with the CA alone (no client certificate), on every
    // listener; plain HTTP to the same listeners gets no HTTP answer.
    for w in 0..2 {
        wait_until(Duration::from_secs(15), "workers to connect", || {
            let (code, _) = c.get(&c.worker_addrs[w], "/ready")?;
            (code == 200).then_some(())
        });
    }
    for addr in &c.vs_addrs {
        wait_until(Duration::from_secs(10), "every member to be ready", || {
            let (code, _) = c.get(addr, "/ready")?;
            (code == 200).then_some(())
        });
    }
    let controller_addr = c.controller_addrs[w1].clone();
    assert_eq!(
        c.get(&controller_addr, "/status").map(|r| r.0),
        Some(401),
        "the controller API answers over https, and wants a signature"
    );
    let plain = plain_client();
    let listeners = [
        c.vs_addrs[0].clone(),
        c.worker_addrs[0].clone(),
        controller_addr,
    ];
    for addr in &listeners {
        let r = plain.get(format!("http://{addr}/ready")).send();
        assert!(r.is_err(), "plain HTTP to the TLS listener {addr}: {r:?}");
    }

    // Phase 3: the work protocol over TLS, seen through `gobearmon status` (which also finds
    // the controller through the group over TLS): both workers' results reach the
    // controller.
    let config = c.path(&format!("{}.toml", c.worker_ids[1 - w1]));
    let status = wait_until(
        Duration::from_secs(20),
        "results of both workers in `gobearmon status`",
        || {
            let out = bin()
                .args(["status", "--json"])
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            if !out.status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let results = v["checks"][0]["last_results"].as_array()?;
            let mut workers: Vec<&str> = results
                .iter()
                .filter_map(|r| r["worker"].as_str())
                .collect();
            workers.sort();
            workers.dedup();
            (workers.len() == 2).then_some(v)
        },
    );
    assert!(status["epoch"].as_u64() >= Some(e1), "{status}");

    // Phase 4: kill -9 of the controller; the group names the other worker with a higher
    // epoch, and it takes control and raises the fence. (The controller is read again: on a
    // loaded machine a late heartbeat may have moved it since phase 1.)
    let (e1, first) = c.current().expect("a view");
    let w1 = c.worker_index(&first.expect("a controller"));
    let other = 1 - w1;
    c.workers[w1].kill9();
    // (The bound of controller_timeout + 2 s is asserted by tests/cluster.rs; here TLS is
    // what is tested, so the wait is generous.)
    let (e2, second) = wait_until(Duration::from_secs(15), "a new controller", || {
        match c.current() {
            Some((epoch, Some(node))) if epoch > e1 => Some((epoch, node)),
            _ => None,
        }
    });
    assert_eq!(second, c.worker_ids[other]);
    c.wait_acting(other, true, Duration::from_secs(10));
    // The lease makes it act; the fence write follows just after.
    testkit::db::wait_fence(&rt, &db, e2);
    // Every node said it serves TLS, and the plain-HTTP attempt was logged with its peer.
    for p in c.viewservers.iter().chain(&c.workers) {
        assert!(p.log_text().contains("tls=true"), "{}", p.name);
    }
    let log = c.viewservers[0].log_text();
    assert!(
        log.contains("TLS handshake refused") && log.contains("peer=127.0.0.1:"),
        "{log}"
    );
    // SIGTERM drains a TLS node like a plain one.
    assert_eq!(c.viewservers[2].terminate(), Some(0));
    assert_eq!(c.workers[other].terminate(), Some(0));
    drop(target);
    rt.block_on(db.drop_db());
}

#[test]
fn foreign_certificates_are_refused_and_the_secret_is_still_checked() {
    let _serial = testkit::cluster::serial();
    // One viewserver member is enough: it serves Raft and heartbeats on one TLS listener.
    let c = Cluster::builder(crate::BIN, "mysql://unused@127.0.0.1:1/none")
        .tls()
        .start();
    let addr = c.vs_addrs[0].clone();
    wait_until(Duration::from_secs(20), "the member to be ready", || {
        let (code, _) = c.get(&addr, "/ready")?;
        (code == 200).then_some(())
    });
    let pki = c.pki.as_ref().unwrap();
    let foreign = ClusterPki::new(c.dir.path(), "foreign");
    let url = format!("https://{addr}/ready");

    // A certificate from the cluster CA is accepted, as nodes present theirs.
    let (cert, key) = pki.issue("operator");
    let node_like = client_with(&pki.ca_pem, Some((&cert, &key)));
    assert_eq!(node_like.get(&url).send().unwrap().status(), 200);

    // A client certificate from another CA is refused in the handshake. Under TLS 1.3 the
    // client may see the server's alert or only the closed connection, whichever arrives
    // first; the member's log says why.
    let (cert, key) = foreign.issue("intruder");
    let intruder = client_with(&pki.ca_pem, Some((&cert, &key)));
    intruder.get(&url).send().expect_err("refused");
    wait_until(
        Duration::from_secs(5),
        "the member to log the refusal",
        || {
            let log = c.viewservers[0].log_text();
            let line = log.lines().find(|l| l.contains("TLS handshake refused"))?;
            assert!(
                line.contains("peer=127.0.0.1:") && line.contains("UnknownIssuer"),
                "{line}"
            );
            Some(())
        },
    );

    // A client that trusts only another CA does not accept the member's certificate.
    let err = client_with(&foreign.ca_pem, None)
        .get(&url)
        .send()
        .expect_err("server certificate not trusted");
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));

    // Under TLS the signature still decides: the wrong secret gets 401, the right one 200.
    let body = serde_json::to_vec(&serde_json::json!({
        "node": "tester", "controller_addr": null, "up_since_ms": 0, "stepping_down": false
    }))
    .unwrap();
    let send = |signer: &Signer| {
        let s = signer.sign("POST", &addr.to_string(), "/view/heartbeat", &body);
        let mut request = node_like
            .post(format!("https://{addr}/view/heartbeat"))
            .header("content-type", "application/json");
        for (name, value) in s.headers() {
            request = request.header(name, value);
        }
        request.body(body.clone()).send().unwrap().status().as_u16()
    };
    let wrong = Signer::cluster(&Secret::new("not-the-cluster-secret"), "intruder");
    assert_eq!(send(&wrong), 401);
    let right = Signer::cluster(&Secret::new(SECRET), "tester");
    assert_eq!(send(&right), 200);
}

fn viewserver_config(dir: &Path, tls: TlsSection) -> std::path::PathBuf {
    let addr = format!("127.0.0.1:{}", testkit::cluster::free_port());
    let path = dir.join("vs.toml");
    NodeFile {
        viewserver: Some(ViewserverSection {
            id: 1,
            addr: addr.clone(),
            peers: vec![addr],
            data_dir: dir.join("data"),
            controller_timeout: None,
            raft_heartbeat: None,
            raft_election_timeout: None,
        }),
        tls: Some(tls),
        ..NodeFile::with_secret(SECRET)
    }
    .write(&path);
    path
}

#[test]
fn unusable_tls_files_stop_the_node_with_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::new(dir.path(), "cluster");
    let (cert, key) = pki.issue("vs1");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(
        &garbage,
        "-----BEGIN NOTHING-----\nxx\n-----END NOTHING-----\n",
    )
    .unwrap();
    let (_, other_key) = pki.issue("someone-else");
    let missing = dir.path().join("missing.crt");
    let section = |cert: &Path, key: &Path| TlsSection {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        ca: pki.ca_path.clone(),
    };
    let cases = [
        (section(&cert, &garbage), "[tls] key", &garbage),
        (section(&missing, &key), "[tls] cert", &missing),
        (section(&cert, &other_key), "[tls] key", &other_key),
    ];
    for (tls, what, file) in cases {
        let config = viewserver_config(dir.path(), tls);
        for command in ["run", "check-config"] {
            let out = bin().arg(command).arg(&config).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{command} {what}: {err}");
            assert!(err.contains(what), "{command}: {err}");
            assert!(
                err.contains(&file.display().to_string()),
                "{command}: {err}"
            );
        }
    }
    // And with good files the same config validates.
    let config = viewserver_config(dir.path(), section(&cert, &key));
    let out = bin().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_ca_lets_mail_through_starttls_to_a_private_server() {
    gobearmon::tlsutil::install_default_provider();
    let pki = TestPki::generate();
    let server = SmtpServer::start(SmtpOptions {
        tls: Some((pki.cert_path.clone(), pki.key_path.clone())),
        require_auth: true,
        ..Default::default()
    })
    .await;

    // Without [smtp] ca the private CA is not trusted: nothing is sent.
    let untrusted = smtp_config(server.port, SmtpTls::StartTls, Some("admin@test"));
    let err = EmailSender::new(&untrusted)
        .unwrap()
        .send("untrusted@test", "s", "b")
        .await
        .unwrap_err();
    assert!(server.messages_to("untrusted@test").is_empty(), "{err}");

    // With it, contact mail and admin notices go through STARTTLS.
    let mut cfg = untrusted.clone();
    cfg.ca = Some(pki.ca_path.clone());
    EmailSender::new(&cfg)
        .unwrap()
        .send("ops@test", "subject", "body")
        .await
        .unwrap();
    let m = server.wait_messages_to("ops@test", 1).await.remove(0);
    assert_eq!(m["tls"], true, "{m}");
    let admin = AdminNotifier::new(&cfg, Duration::from_secs(60)).unwrap();
    assert_eq!(
        admin.notify(AdminKind::ReloadErrors, "reloads fail").await,
        AdminOutcome::Sent
    );
    let m = server.wait_messages_to("admin@test", 1).await.remove(0);
    assert_eq!(m["tls"], true, "{m}");

    // `gobearmon contact test` reads [smtp] ca from the node's file, and stops with 64 on a
    // CA file it cannot use.
    let db = testkit::notify::TestDb::create("tls_smtp_ca").await;
    let contact = db.add_contact("email", "contact-test@test").await;
    let dir = tempfile::tempdir().unwrap();
    let write = |ca: &Path| {
        let path = dir.path().join("w1.toml");
        std::fs::write(
            &path,
            format!(
                "[default]\npassword = \"{SECRET}\"\n[worker]\nid = \"w1\"\nview_addr = \"127.0.0.1:9\"\n[controller]\naddr = \"127.0.0.1:0\"\ndatabase = \"{}\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"mon@test\"\nusername = \"monuser\"\npassword = \"monpass\"\ntls = \"starttls\"\nca = \"{}\"\n",
                db.url,
                server.port,
                ca.display()
            ),
        )
        .unwrap();
        path
    };
    let config = write(&pki.ca_path);
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .args(["contact", "test", &contact.0.to_string(), "--config"])
            .arg(config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = server
        .wait_messages_to("contact-test@test", 1)
        .await
        .remove(0);
    assert_eq!(m["tls"], true, "{m}");

    let missing = dir.path().join("no-such-ca.crt");
    let config = write(&missing);
    let out = bin()
        .args(["contact", "test", &contact.0.to_string(), "--config"])
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("[smtp] ca") && err.contains("no-such-ca.crt"),
        "{err}"
    );
    db.drop_db().await;
}
