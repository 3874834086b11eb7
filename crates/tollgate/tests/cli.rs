//! The command line's own words: help texts that describe each command, and `operator create`
//! printing the login URL of the server that runs on the same database.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::BIN;

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .expect("running tollgate");
    assert!(out.status.success(), "tollgate {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every subcommand's one-line description is its own (a flattened group of flags used to
/// lend its description to those without one).
#[test]
fn help_describes_each_command() {
    let help = run(&["merchant-accounts", "--help"]);
    assert!(help.contains("create  Create a merchant account"), "{help}");
    assert!(help.contains("list    List merchant accounts"), "{help}");
    let help = run(&["merchant-accounts", "create", "--help"]);
    assert!(help.starts_with("Create a merchant account"), "{help}");
    for group in [
        "keys",
        "merchant-accounts",
        "operator",
        "connections",
        "stripe",
    ] {
        let help = run(&[group, "--help"]);
        assert!(
            !help.contains("Flags shared") && !help.contains("SPEC"),
            "{group}: {help}"
        );
    }
}

/// `operator create` run beside a server (same data directory, no flags repeated) prints the
/// server's own login URL, not the default address; a configured public URL wins.
#[tokio::test]
async fn operator_create_prints_the_servers_login_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let _server = common::Proc(
        common::serve_command(dir.path(), port, None)
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_PUBLIC_URL")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tollgate serve"),
    );
    // The first key is written after the server recorded its URL.
    let started = Instant::now();
    while !dir.path().join("first-secret-key").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let create = |name: &str, extra: &[&str]| {
        let mut child = Command::new(BIN)
            .args(["operator", "create", name, "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_PUBLIC_URL")
            .env_remove("TOLLGATE_LISTEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tollgate operator create");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"a long enough password\n")
            .expect("writing the password");
        let out = child.wait_with_output().expect("operator create");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = create("admin", &[]);
    assert!(
        out.contains(&format!(
            "log in at http://127.0.0.1:{port}/dashboard/login"
        )),
        "{out}"
    );
    let out = create("other", &["--public-url", "https://pay.example.com/"]);
    assert!(
        out.contains("log in at https://pay.example.com/dashboard/login"),
        "{out}"
    );
}
