//! The command line as an operator meets it: the built binary, exit codes, messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gobearmon"));
    c.env_remove("RUST_LOG");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Environment the sample files reference.
fn sample_env(c: &mut Command) -> &mut Command {
    c.env("GOBEARMON_PASSWORD", "a-cluster-secret-of-some-length")
        .env("GOBEARMON_DB_PASSWORD", "dbpw")
        .env("GOBEARMON_SMTP_PASSWORD", "smtppw")
        .env("GOBEARMON_TWILIO_TOKEN", "twtoken")
        .env("GOBEARMON_API_TOKEN", "an-api-token-of-some-length")
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run gobearmon");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn both_samples_validate() {
    for (file, role) in [
        ("gobearmon.worker.toml", "worker (controller-capable)"),
        ("gobearmon.viewserver.toml", "viewserver"),
    ] {
        let (code, out, err) = run(sample_env(bin().arg("check-config").arg(root().join(file))));
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(out.contains(role), "{file}: {out}");
    }
}

#[test]
fn samples_document_every_key() {
    let text = std::fs::read_to_string(root().join("gobearmon.worker.toml")).unwrap()
        + &std::fs::read_to_string(root().join("gobearmon.viewserver.toml")).unwrap();
    for key in gobearmon::config::known_keys() {
        let (section, name) = key.split_once('.').unwrap();
        assert!(
            text.contains(&format!("[{section}]")),
            "section [{section}] is not in a sample file"
        );
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(name) && l[name.len()..].trim_start().starts_with('=')
        });
        assert!(documented, "{key} is not documented in a sample file");
    }
}

#[test]
fn misspelled_key_and_wrong_type_exit_64_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.toml",
        "[default]\npassword = \"0123456789abcdef\"\n[worker]\nid = \"w1\"\nview_adr = [\"127.0.0.1:7000\"]\nnum_threads = \"many\"\n",
    );
    for args in [vec!["check-config"], vec!["run"], vec![]] {
        let (code, out, err) = run(bin().args(&args).arg(&f));
        assert_eq!(code, 64, "{args:?}: {out}{err}");
        assert!(err.contains("worker.view_adr"), "{err}");
        assert!(err.contains("did you mean `view_addr`"), "{err}");
        assert!(err.contains("worker.num_threads"), "{err}");
        assert!(err.contains("\"many\""), "{err}");
        assert!(err.contains("bad.toml"), "{err}");
    }
}

#[test]
fn both_roles_or_neither_exit_64_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let both = write(
        dir.path(),
        "both.toml",
        "[default]\npassword = \"0123456789abcdef\"\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n[viewserver]\npeers = [\"a:1\"]\n",
    );
    let (code, _, err) = run(bin().arg("run").arg(&both));
    assert_eq!(code, 64);
    assert!(err.contains("one role per file"), "{err}");
    let neither = write(
        dir.path(),
        "neither.toml",
        "[default]\npassword = \"0123456789abcdef\"\n",
    );
    let (code, _, err) = run(bin().arg(&neither));
    assert_eq!(code, 64);
    assert!(err.contains("neither [worker] nor [viewserver]"), "{err}");
}

#[test]
fn unreadable_or_garbled_files_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(bin()
        .arg("check-config")
        .arg(dir.path().join("missing.toml")));
    assert_eq!(code, 64);
    assert!(err.contains("cannot read config file"), "{err}");
    let garbled = write(dir.path(), "garbled.toml", "[default\npassword = ");
    let (code, _, err) = run(bin().arg("check-config").arg(&garbled));
    assert_eq!(code, 64);
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn secrets_stay_out_of_messages() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "secret.toml",
        "[default]\npassword = \"tiny-secret\"\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n[controller]\ndatabase = \"pgsql://user:verysecretpw@h/db\"\n[smtp]\npassword = 12\n",
    );
    let (code, out, err) = run(bin().arg("check-config").arg(&f));
    assert_eq!(code, 64);
    let all = out + &err;
    assert!(
        !all.contains("tiny-secret") && !all.contains("verysecretpw"),
        "{all}"
    );
    assert!(
        all.contains("smtp.password") && !all.contains("= 12"),
        "{all}"
    );
}

#[test]
fn help_explains_every_command() {
    let (code, out, _) = run(bin().arg("--help"));
    assert_eq!(code, 0);
    for cmd in ["run", "check-config", "probe", "status", "contact"] {
        assert!(out.contains(cmd), "--help lacks {cmd}: {out}");
    }
}

#[test]
fn systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_gobearmon");
    let mut units = Vec::new();
    for name in ["gobearmon-worker.service", "gobearmon-viewserver.service"] {
        let text = std::fs::read_to_string(root().join("scripts/systemd").join(name)).unwrap();
        assert!(text.contains("Restart=on-failure"), "{name}");
        if name.contains("worker") {
            assert!(text.contains("AmbientCapabilities=CAP_NET_RAW"), "{name}");
        } else {
            assert!(
                text.contains("StateDirectory=gobearmon/viewserver"),
                "{name}"
            );
        }
        // Point the unit at the binary just built so the verifier can check it exists.
        let p = dir.path().join(name);
        std::fs::write(&p, text.replace("/usr/local/bin/gobearmon", bin)).unwrap();
        units.push(p);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("systemd-analyze (package systemd, installed by scripts/test.sh) must be present");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn probe_with_an_unreadable_config_exits_2_and_says_why() {
    let (code, _, err) =
        run(bin().args(["probe", "tcp", "{}", "--config", "/nonexistent/node.toml"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent/node.toml"),
        "the file is named: {err}"
    );
}
