//! What a server process needs from the system beyond the server itself:
//! detaching from the terminal like QEMU's server, and naming its group.

use std::ffi::CString;

use rustix::fs::Gid;
use thiserror::Error;

/// Why a group could not be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GroupError {
    /// The name holds a NUL byte, which no group name can.
    #[error("group names cannot contain NUL")]
    Nul,
    /// No group has this name.
    #[error("unknown group '{0}'")]
    Unknown(String),
}

/// Detaches like QEMU's `qemu_daemon(1, 1)`: keeps the working directory and the
/// standard streams. Call it before any thread starts: only the calling thread
/// survives the fork.
pub fn daemonize() -> std::io::Result<()> {
    // SAFETY: daemon(3) forks and takes no pointers; the caller has started no
    // threads (see above), so the child is a complete copy of this process.
    if unsafe { libc::daemon(1, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Resolves a group name or number to its id.
pub fn resolve_group(name: &str) -> Result<Gid, GroupError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    let c_name = CString::new(name).map_err(|_| GroupError::Nul)?;
    // SAFETY: libc::group is a plain C struct of integers and pointers, for which
    // all-zero bytes are a valid (empty) value.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: every pointer refers to a live local of the right type; `buf` is
    // large enough for typical entries and its length is passed.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(GroupError::Unknown(name.to_owned()));
    }
    Ok(Gid::from_raw(group.gr_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_groups_by_name_and_number() {
        assert_eq!(resolve_group("0").unwrap().as_raw(), 0);
        assert_eq!(resolve_group("root").unwrap().as_raw(), 0);
        assert_eq!(
            resolve_group("no-such-group-ivlink"),
            Err(GroupError::Unknown("no-such-group-ivlink".into()))
        );
        assert_eq!(resolve_group("a\0b"), Err(GroupError::Nul));
    }
}
