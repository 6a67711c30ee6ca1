//! The harness itself (testkit): the node files it writes read back with every key typed, and
//! its port allocator hands out distinct ports below the ephemeral range.

use testkit::config::{ControllerSection, Ms, NodeFile, SmtpSection, WorkerSection, keys, section};
use toml::Table;

#[test]
fn a_worker_file_reads_back_with_every_key_typed() {
    let mut file = NodeFile::with_secret("s3cret");
    file.worker = Some(WorkerSection {
        id: "w1".into(),
        addr: "127.0.0.1:1".into(),
        view_addr: vec!["127.0.0.1:2".into(), "127.0.0.1:3".into()],
        heartbeat_interval: Some(Ms(250)),
        lease: None,
        disconnect_pause: None,
        extra: keys([("location", "fra".into())]),
    });
    file.controller = Some(ControllerSection {
        addr: "127.0.0.1:4".into(),
        database: vec!["mysql://u@h/db".into()],
        reload_period: Some(Ms(500)),
        extra: keys([("confirmations", 2.into())]),
    });
    file.sections
        .insert("smtp".into(), section(SmtpSection::capture(25)).into());
    let back: Table = toml::from_str(&file.to_toml()).unwrap();
    assert_eq!(back["default"]["password"].as_str(), Some("s3cret"));
    assert_eq!(back["worker"]["heartbeat_interval"].as_str(), Some("250ms"));
    assert!(back["worker"].get("lease").is_none(), "None is left out");
    assert_eq!(back["worker"]["location"].as_str(), Some("fra"));
    assert_eq!(back["worker"]["view_addr"].as_array().unwrap().len(), 2);
    assert_eq!(back["controller"]["confirmations"].as_integer(), Some(2));
    assert_eq!(back["controller"]["reload_period"].as_str(), Some("500ms"));
    assert_eq!(back["smtp"]["port"].as_integer(), Some(25));
    assert_eq!(back["smtp"]["admin"].as_str(), Some("admin@test"));
    assert!(back.get("viewserver").is_none());
}

/// The product's own reader accepts what the harness writes for a worker.
#[test]
fn the_product_reads_a_harness_worker_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w1.toml");
    NodeFile {
        worker: Some(WorkerSection {
            id: "w1".into(),
            addr: "127.0.0.1:7001".into(),
            view_addr: vec!["127.0.0.1:7000".into()],
            heartbeat_interval: Some(Ms(250)),
            lease: Some(Ms(1500)),
            disconnect_pause: Some(Ms(3000)),
            extra: Table::new(),
        }),
        controller: Some(ControllerSection {
            addr: "127.0.0.1:7002".into(),
            database: vec!["mysql://u:p@127.0.0.1:1/db".into()],
            reload_period: Some(Ms(500)),
            extra: keys([("confirmations", 2.into())]),
        }),
        ..NodeFile::with_secret("a-cluster-secret-0123456789")
    }
    .write(&path);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ports_are_distinct_free_and_below_the_ephemeral_range() {
    let ports: Vec<u16> = (0..200).map(|_| testkit::ports::free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "a port handed out twice");
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let first: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    assert!(ports.iter().all(|&p| p < first), "{ports:?} vs {first}");
    for p in ports {
        std::net::TcpListener::bind(("127.0.0.1", p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}
