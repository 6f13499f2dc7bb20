//! The trail file's journal: a fixed-size file beside the trail, mapped into the operator's
//! memory (`MAP_SHARED`), where each line is copied the moment it is recorded. The mapped pages
//! belong to the kernel's page cache, so a line copied there survives the operator being killed
//! exactly as a line `write`n to the trail does, without a system call per line (a `write` to
//! ext4 costs about 3 µs here, and a recall records thousands of lines a second). The lines go
//! on to the trail file in batches: when the journal fills, and whenever the trail is synced
//! before a report; after a crash, opening the trail moves what the journal still holds into it.
//!
//! The journal never needs syncing itself: a report waits for its lines to be in the trail and
//! for the trail to be synced, as before.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// Bytes the journal holds: lines wait here until this much, less room for one more line, has
/// gathered (or a sync takes them). About 500 lines: one `write` to the trail per 500 actions.
pub const CAPACITY: usize = 256 * 1024;

/// The journal of the trail at `trail`.
pub fn path_for(trail: &Path) -> PathBuf {
    let mut name = trail.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// The mapped journal. Lines are appended from its start; `clear` starts it over once they are
/// in the trail. What lies beyond `len` is left from earlier batches: lines that are already
/// in the trail, told apart on recovery by their sequence numbers and hashes.
pub struct Journal {
    map: NonNull<u8>,
    len: usize,
    /// Kept open for as long as it is mapped.
    _file: File,
}

// The mapping is owned by this value alone and reached only through `&mut self` or `&self`.
unsafe impl Send for Journal {}
unsafe impl Sync for Journal {}

impl Journal {
    /// Opens (or creates) the journal; with it, what an earlier process left in it, for the trail
    /// to recover. Its blocks are written once at creation, so a full volume later fails
    /// nothing: a copy into an unbacked page would kill the process (SIGBUS) instead of failing.
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<u8>)> {
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut left = Vec::new();
        file.read_to_end(&mut left)?;
        if left.len() != CAPACITY {
            file.set_len(0)?;
            file.write_all(&vec![0; CAPACITY])?;
            file.sync_all()?;
        }
        // SAFETY: a fresh shared read-write mapping of a file of CAPACITY bytes opened read-write;
        // the result is checked before use and unmapped once, in Drop.
        let map = unsafe {
            libc::mmap(std::ptr::null_mut(), CAPACITY, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&file), 0)
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).expect("mmap never returns null on success");
        Ok((Self { map, len: 0, _file: file }, left))
    }

    /// Copies `line` in after the lines already there; false when it does not fit.
    pub fn push(&mut self, line: &[u8]) -> bool {
        if line.len() > CAPACITY - self.len {
            return false;
        }
        // SAFETY: `len + line.len() <= CAPACITY`, inside the mapping, which `line` cannot overlap
        // (it is the caller's buffer, and the mapping is only lent out as shared by `pending`).
        unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), self.map.as_ptr().add(self.len), line.len()) };
        self.len += line.len();
        true
    }

    /// The lines not yet in the trail.
    pub fn pending(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping were written by `push`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }

    /// Once the pending lines are in the trail.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: mapped in `open` with this length, unmapped only here.
        unsafe { libc::munmap(self.map.as_ptr().cast(), CAPACITY) };
    }
}
