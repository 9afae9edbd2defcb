//! Every command that takes `--json`, found by walking the command tree, is run
//! here with it, and its standard output must be JSON only: one object, or JSON
//! lines each with an `"event"`. A new report command fails the walk until it is
//! added to [`SCENES`].

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::json::one_object;
use common::{IVLINK, WAIT};
use serde_json::Value;

/// One command of a scene. `{S}` in its arguments is the scene's server socket.
struct Step {
    args: &'static [&'static str],
    /// Started and left running (until it ends, or SIGTERM after the scene),
    /// once it has printed its first line; the next step starts then.
    background: bool,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step {
        args,
        background: false,
    }
}

const fn start(args: &'static [&'static str]) -> Step {
    Step {
        args,
        background: true,
    }
}

/// Steps sharing one private server (when `server` is set).
struct Scene {
    server: bool,
    steps: &'static [Step],
}

const SCENES: &[Scene] = &[
    Scene {
        server: true,
        steps: &[
            start(&[
                "listen",
                "-S",
                "{S}",
                "--json",
                "--count",
                "1",
                "--timeout",
                "20",
            ]),
            run(&["notify", "-S", "{S}", "0", "0", "hello", "--json"]),
            run(&["dump", "-S", "{S}", "--json"]),
            run(&["inspect", "-S", "{S}", "--json"]),
            run(&["format", "-S", "{S}", "--yes", "--json"]),
        ],
    },
    Scene {
        server: true,
        steps: &[
            start(&[
                "channel", "recv", "-S", "{S}", "demo", "--json", "--count", "2",
            ]),
            start(&["recv", "-S", "{S}", "other", "--json", "--count", "1"]),
            run(&[
                "channel", "send", "-S", "{S}", "demo", "--to", "0", "a", "--json",
            ]),
            run(&["send", "-S", "{S}", "demo", "--to", "0", "b", "--json"]),
            run(&["send", "-S", "{S}", "other", "--to", "1", "c", "--json"]),
        ],
    },
    Scene {
        server: true,
        steps: &[
            start(&["mailbox", "listen", "-S", "{S}", "--json", "--count", "1"]),
            run(&["mailbox", "info", "-S", "{S}", "--json"]),
            run(&[
                "mailbox", "send", "-S", "{S}", "0", "hi", "--id", "3", "--json",
            ]),
        ],
    },
    Scene {
        server: true,
        steps: &[
            start(&["rpmsg", "echo", "-S", "{S}", "--json"]),
            run(&["rpmsg", "send", "-S", "{S}", "hi", "2", "--json"]),
            run(&[
                "rpmsg", "bench", "-S", "{S}", "--count", "50", "--warmup", "5", "--json",
            ]),
        ],
    },
    Scene {
        server: true,
        steps: &[
            start(&[
                "ntb", "pingpong", "-S", "{S}", "--port", "1", "--delay", "10ms", "--json",
            ]),
            run(&[
                "ntb", "pingpong", "-S", "{S}", "--port", "0", "--delay", "10ms", "--count", "2",
                "--json",
            ]),
        ],
    },
    Scene {
        server: true,
        steps: &[
            start(&["ntb", "perf", "-S", "{S}", "--json"]),
            run(&[
                "ntb",
                "perf",
                "-S",
                "{S}",
                "--run",
                "--total-order",
                "20",
                "--json",
            ]),
        ],
    },
    Scene {
        server: false,
        steps: &[
            run(&["testbed", "--peers", "2", "--json"]),
            run(&["stress", "--peers", "2", "--duration", "300ms", "--json"]),
            run(&["bench", "--quick", "--json"]),
            run(&["console", "bench", "--quick", "--bytes", "1M", "--json"]),
        ],
    },
];

/// The command path of a step: its leading words up to the first option.
fn path_of(step: &Step) -> String {
    let words: Vec<&str> = step
        .args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .copied()
        .collect();
    words.join(" ")
}

/// Every command path (`mailbox info`, ...) with a `--json` option.
fn commands_with_json() -> BTreeSet<String> {
    fn walk(command: &clap::Command, path: &mut Vec<String>, out: &mut BTreeSet<String>) {
        if command
            .get_arguments()
            .any(|a| a.get_long() == Some("json"))
        {
            out.insert(path.join(" "));
        }
        for sub in command.get_subcommands() {
            path.push(sub.get_name().to_owned());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut root = ivlink_cli::cli::command();
    root.build();
    let mut out = BTreeSet::new();
    walk(&root, &mut Vec::new(), &mut out);
    out
}

#[test]
fn every_command_with_json_is_run_here() {
    let walked = commands_with_json();
    let run: BTreeSet<String> = SCENES
        .iter()
        .flat_map(|scene| scene.steps.iter().map(path_of))
        .collect();
    assert!(walked.len() >= 20, "the walk found only {walked:?}");
    assert_eq!(
        walked, run,
        "commands with --json against those this test runs"
    );
}

/// A running step: its standard output collected whole, standard error line by
/// line (readiness; shown on failure). Killed (by pid) if the test ends early.
struct Running {
    shown: String,
    child: Child,
    stdout: mpsc::Receiver<Vec<u8>>,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(args: &[String]) -> Running {
        let mut child = Command::new(IVLINK)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivlink");
        let (lines_tx, lines) = mpsc::channel();
        let (stdout_tx, stdout) = mpsc::channel();
        let mut out = child.stdout.take().unwrap();
        let first = lines_tx.clone();
        std::thread::spawn(move || {
            // The first byte on standard output also counts as "ready".
            let mut all = Vec::new();
            let mut byte = [0u8; 1];
            if out.read(&mut byte).unwrap_or(0) == 1 {
                all.push(byte[0]);
                let _ = first.send(String::from("(standard output)"));
                let _ = out.read_to_end(&mut all);
            }
            let _ = stdout_tx.send(all);
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        Running {
            shown: args.join(" "),
            child,
            stdout,
            lines,
        }
    }

    fn wait_ready(&self) {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("ivlink {}: printed nothing", self.shown));
    }

    /// Ends it (SIGTERM if still running) and checks what it printed.
    fn finish(mut self, background: bool) {
        if background && self.child.try_wait().unwrap().is_none() {
            // Let a listener take what the last step sent before it is stopped.
            std::thread::sleep(Duration::from_millis(200));
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let stdout = self
            .stdout
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("ivlink {}: did not end", self.shown));
        let status = self.child.wait().unwrap();
        let stderr: Vec<String> = self.lines.try_iter().collect();
        assert!(
            status.success(),
            "ivlink {}: {status}\n{}",
            self.shown,
            stderr.join("\n")
        );
        check_json_only(&self.shown, &stdout, background);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Standard output is one JSON object, or JSON lines each with an `"event"`
/// (a serving side may print nothing at all).
fn check_json_only(shown: &str, stdout: &[u8], may_be_empty: bool) {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        assert!(may_be_empty, "ivlink {shown}: printed nothing");
        return;
    }
    let lines: Vec<&str> = text.lines().collect();
    let as_lines: Result<Vec<Value>, _> = lines.iter().map(|l| serde_json::from_str(l)).collect();
    match as_lines {
        Ok(values)
            if values.len() > 1 || values.first().is_some_and(|v| v.get("event").is_some()) =>
        {
            for value in values {
                assert!(
                    value["event"].is_string(),
                    "ivlink {shown}: a line without an event: {value}"
                );
            }
        }
        _ => {
            let output = std::process::Output {
                status: std::process::ExitStatus::default(),
                stdout: stdout.to_vec(),
                stderr: Vec::new(),
            };
            one_object(&output);
        }
    }
}

#[test]
fn every_report_prints_json_only() {
    for scene in SCENES {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock");
        let _server = scene.server.then(|| common::server(&socket, &["--memfd"]));
        let mut running = Vec::new();
        for step in scene.steps {
            let args: Vec<String> = step
                .args
                .iter()
                .map(|a| a.replace("{S}", socket.to_str().unwrap()))
                .collect();
            let child = Running::spawn(&args);
            if step.background {
                child.wait_ready();
                running.push(child);
            } else {
                child.finish(false);
            }
        }
        for child in running {
            child.finish(true);
        }
    }
}
