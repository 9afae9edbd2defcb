//! Every `ivlink` command, found by walking the command tree, answers `--help`
//! with its usage on standard output, and documents every option it shows.

mod common;

use common::run;

/// Every command path below `ivlink`, parents before children (`["mailbox"]`,
/// `["mailbox", "send"]`, ...), hidden ones included.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(command: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            path.push(sub.get_name().to_owned());
            out.push(path.clone());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(&ivlink_cli::cli::command(), &mut Vec::new(), &mut out);
    out
}

fn find<'a>(root: &'a clap::Command, path: &[String]) -> &'a clap::Command {
    path.iter().fold(root, |command, name| {
        command
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"))
    })
}

#[test]
fn every_command_answers_help_with_its_usage() {
    let paths = command_paths();
    assert!(
        paths.len() > 30,
        "the walk found only {} commands",
        paths.len()
    );
    let mut root = ivlink_cli::cli::command();
    root.build();
    for path in &paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let output = run(&args);
        let shown = args.join(" ");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "ivlink {shown} failed");
        assert!(output.stderr.is_empty(), "ivlink {shown} wrote to stderr");
        let usage = format!("Usage: ivlink {}", path.join(" "));
        assert!(stdout.contains(&usage), "ivlink {shown}:\n{stdout}");
        let command = find(&root, path);
        if let Some(about) = command.get_about() {
            // Compared word by word: help wraps long lines.
            let words = |text: &str| {
                text.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            let about = words(&about.to_string());
            let shown_words = words(&stdout);
            assert!(
                shown_words.starts_with(&about),
                "ivlink {shown} starts otherwise:\n{stdout}"
            );
        }
    }
}

#[test]
fn every_shown_option_says_what_it_does() {
    let mut root = ivlink_cli::cli::command();
    root.build();
    for path in command_paths() {
        let command = find(&root, &path);
        for arg in command.get_arguments() {
            if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "ivlink {} --{}: no help text",
                path.join(" "),
                arg.get_long().unwrap_or(arg.get_id().as_str())
            );
        }
    }
}
