//! The run's own iceoryx2 domain: a root directory and a shared-memory prefix
//! of its own, so that a run never writes into iceoryx2's machine-wide
//! `/tmp/iceoryx2` nor leaves `iox2_*` objects in `/dev/shm`, and removes all
//! it made. The leader picks both; its peer processes get them through the
//! environment.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use iceoryx2::prelude::*;
use iceoryx2_bb_system_types::file_name::FileName;

const ROOT_VAR: &str = "IVLINK_IOX2_ROOT";
const PREFIX_VAR: &str = "IVLINK_IOX2_PREFIX";
/// Where POSIX shared memory objects live.
const SHM_DIR: &str = "/dev/shm";

/// A run's root directory and file prefix.
#[derive(Debug)]
pub struct Domain {
    root: PathBuf,
    prefix: String,
}

/// This process's domain: inherited from the leader, or picked now.
pub fn get() -> &'static Domain {
    static DOMAIN: OnceLock<Domain> = OnceLock::new();
    DOMAIN.get_or_init(
        || match (std::env::var(ROOT_VAR), std::env::var(PREFIX_VAR)) {
            (Ok(root), Ok(prefix)) => Domain {
                root: root.into(),
                prefix,
            },
            _ => Domain::pick(),
        },
    )
}

impl Domain {
    /// A domain no other run has: named after this process and the time.
    fn pick() -> Domain {
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Domain {
            root: std::env::temp_dir().join(format!("ivlink-iox2-{pid}-{nanos:x}")),
            prefix: format!("ivl{pid}x{nanos:x}_"),
        }
    }

    /// The variables a peer process needs to join this domain.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            (ROOT_VAR, self.root.display().to_string()),
            (PREFIX_VAR, self.prefix.clone()),
        ]
    }

    /// iceoryx2's default configuration in this domain (a config file on the
    /// machine is not read, so every run measures the same setup).
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        // The root ends in a separator, as iceoryx2's own default does.
        let root = format!("{}/", self.root.display());
        match iceoryx2_bb_system_types::path::Path::new(root.as_bytes()) {
            Ok(path) => config.global.set_root_path(&path),
            Err(e) => eprintln!("iceoryx2: cannot use {root} as the root path ({e:?})"),
        }
        match FileName::new(self.prefix.as_bytes()) {
            Ok(prefix) => config.global.prefix = prefix,
            Err(e) => eprintln!("iceoryx2: cannot use {} as the prefix ({e:?})", self.prefix),
        }
        config
    }

    /// Removes the domain's directory and shared memory objects; returns what
    /// could not be removed.
    pub fn remove(&self) -> Vec<String> {
        let mut left = Vec::new();
        if self.root.exists() && std::fs::remove_dir_all(&self.root).is_err() {
            left.push(format!("directory {}", self.root.display()));
        }
        for name in self.shm_objects() {
            let path = Path::new(SHM_DIR).join(&name);
            if std::fs::remove_file(&path).is_err() {
                left.push(format!("shared memory {}", path.display()));
            }
        }
        left
    }

    fn shm_objects(&self) -> Vec<String> {
        std::fs::read_dir(SHM_DIR)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(&self.prefix))
            .collect()
    }
}
