//! Reading `--json` output in tests: one object, or JSON lines each with an
//! `"event"`, from standard output alone (standard error is for people).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::Value;

use super::{IVLINK, WAIT, run, text};

/// The whole standard output of a successful `ivlink ARGS`, as one JSON object.
pub fn object(args: &[&str]) -> Value {
    let output = run(args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    one_object(&output)
}

/// Standard output as exactly one JSON object.
pub fn one_object(output: &Output) -> Value {
    let value: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "standard output is not one JSON object ({e}):\n{}",
            text(output)
        )
    });
    assert!(value.is_object(), "{value}");
    value
}

/// Standard output as JSON lines, each an object with an "event".
pub fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{line:?} is not JSON ({e}):\n{}", text(output)));
            assert!(value["event"].is_string(), "no event in {line}");
            value
        })
        .collect()
}

/// The events' names, in order.
pub fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

/// An `ivlink` command printing JSON lines: its standard output, line by line,
/// apart from its standard error. Killed (by pid) if the test ends early.
pub struct JsonLines {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl JsonLines {
    pub fn start(args: &[&str]) -> JsonLines {
        let mut child = Command::new(IVLINK)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ivlink");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        JsonLines { child, lines }
    }

    /// The next line, which must be a JSON object with an `"event"`; `None` once
    /// standard output is closed.
    pub fn next(&self) -> Option<Value> {
        let line = self.lines.recv_timeout(WAIT).ok()?;
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(value["event"].is_string(), "no \"event\": {line}");
        Some(value)
    }

    /// The next line whose event is `kind` (lines of other kinds are checked and
    /// skipped).
    pub fn expect(&self, kind: &str) -> Value {
        let mut seen = Vec::new();
        while let Some(value) = self.next() {
            if value["event"] == kind {
                return value;
            }
            seen.push(value);
        }
        panic!("no {kind:?} event; saw {seen:?}");
    }

    /// Every line left, once the process has ended on its own (successfully).
    pub fn finish(&mut self) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the command did not end");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(self.child.wait().unwrap().success());
        std::iter::from_fn(|| self.next()).collect()
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
