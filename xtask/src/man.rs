//! `cargo xtask man`: the man pages, `ivlink.1` and one page per command
//! (`ivlink-ntb-tool.1`, ...) generated from the command line's clap
//! definitions, so they never fall behind the `--help` texts, plus the drop-in
//! tools' pages (`crates/ivlink-cli/man`), which take QEMU's getopt flags.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use clap::CommandFactory;

/// The hand-written pages of the drop-in tools.
const DROP_IN_PAGES: &[&str] = &["ivshmem-server.1", "ivshmem-client.1"];

/// Writes every page into `out`; returns their paths.
pub fn generate(root: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    clap_mangen::generate_to(ivlink_cli::cli::Cli::command(), out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    for page in DROP_IN_PAGES {
        let from = root.join("crates/ivlink-cli/man").join(page);
        fs::copy(&from, out.join(page)).with_context(|| format!("copying {}", from.display()))?;
    }
    let mut pages: Vec<PathBuf> = fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    ensure!(
        pages.iter().any(|p| p.ends_with("ivlink.1")),
        "no ivlink.1 among the pages written"
    );
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_page_and_hidden_ones_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pages = generate(root, dir.path()).unwrap();
        let names: Vec<_> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        for page in [
            "ivlink.1",
            "ivlink-server.1",
            "ivlink-ntb-tool.1",
            "ivlink-mailbox-send.1",
            "ivlink-completions.1",
            "ivshmem-server.1",
            "ivshmem-client.1",
        ] {
            assert!(names.iter().any(|n| n == page), "no {page} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("stress-peer")),
            "{names:?}"
        );
        let tool = fs::read_to_string(dir.path().join("ivlink-ntb-tool.1")).unwrap();
        assert!(tool.contains("mount"), "{tool}");
    }
}
