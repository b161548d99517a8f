//! `slb::logging` in a child process (a subscriber is global to a process): what it writes to a
//! standard error that is a pipe, as when a log goes to a file or a collector.

use std::process::Command;

const CHILD_ENV: &str = "SLB_LOGGING_TEST_CHILD";

/// The child: installs the subscriber in the format the parent names and logs two events.
#[test]
fn child_logger() {
    let Ok(format) = std::env::var(CHILD_ENV) else { return };
    slb::logging::init(format.parse().unwrap()).unwrap();
    tracing::info!(backend = "127.0.0.1:9001", "an info event");
    tracing::warn!("a warning");
    assert!(matches!(
        slb::logging::init(slb::logging::LogFormat::Text),
        Err(slb::logging::InitError::AlreadyInstalled)
    ));
}

/// Runs the child with `format` and `RUST_LOG`; returns its standard error.
fn run_child(format: &str, rust_log: Option<&str>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_logger", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format)
        .env_remove("RUST_LOG");
    if let Some(f) = rust_log {
        cmd.env("RUST_LOG", f);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn text_lines_on_a_pipe_have_no_escape_codes() {
    let err = run_child("text", None);
    let info = err.lines().find(|l| l.contains("an info event")).expect(&err);
    assert!(info.contains("INFO") && info.contains("backend=\"127.0.0.1:9001\""), "{info}");
    assert!(err.contains("a warning"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes on a pipe: {err:?}");
}

#[test]
fn json_lines_are_one_object_each() {
    let err = run_child("json", None);
    let events: Vec<&str> =
        err.lines().filter(|l| l.contains("an info event") || l.contains("a warning")).collect();
    assert_eq!(events.len(), 2, "{err}");
    for l in &events {
        assert!(l.starts_with('{') && l.ends_with('}'), "not a JSON object: {l}");
        assert!(l.contains("\"timestamp\":") && l.contains("\"target\":"), "{l}");
    }
    assert!(events[0].contains("\"level\":\"INFO\""), "{}", events[0]);
    assert!(events[0].contains("\"backend\":\"127.0.0.1:9001\""), "{}", events[0]);
    assert!(events[1].contains("\"level\":\"WARN\""), "{}", events[1]);
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn rust_log_filters_the_events() {
    let err = run_child("text", Some("warn"));
    assert!(!err.contains("an info event"), "{err}");
    assert!(err.contains("a warning"), "{err}");
}
