//! cgroupfs knobs: one read, one write (the actuators' CPU quota and its undo go through here).
use std::{io, path::Path};

pub fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// One write of `value` (O_TRUNC, as `echo v > file`: kernfs ignores it; a plain file, a test
/// tree, needs it).
pub fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))
}
