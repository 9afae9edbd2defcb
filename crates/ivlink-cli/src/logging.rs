//! The tracing subscriber the binaries install.

use std::path::Path;

use clap::ValueEnum;
use tracing::Level;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (the default for tools).
    Stderr,
    /// Standard output (QEMU's verbose server and client print there).
    Stdout,
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(
    level: Level,
    format: LogFormat,
    target: LogTarget,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let writer: tracing_subscriber::fmt::writer::BoxMakeWriter = match (file, target) {
        (Some(path), _) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        (None, LogTarget::Stdout) => {
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout)
        }
        (None, LogTarget::Stderr) => {
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
        }
    };
    let result = match format {
        LogFormat::Text => builder.with_writer(writer).with_ansi(false).try_init(),
        LogFormat::Json => builder.json().with_writer(writer).try_init(),
    };
    // A second init (tests calling twice) keeps the first subscriber.
    let _ = result;
    Ok(())
}
