//! The resctrl filesystem's file operations: the kernel's (`KernelFs`), or a test's emulated
//! tree (`actuate::resctrl_emu`), behind one trait.
use std::{io, path::Path};

/// File operations on the resctrl tree (the kernel's, or the emulated one in tests).
pub trait ResctrlFs: Send {
    fn read(&self, p: &Path) -> io::Result<String>;
    fn write(&self, p: &Path, s: &str) -> io::Result<()>;
    fn mkdir(&self, p: &Path) -> io::Result<()>;
    fn rmdir(&self, p: &Path) -> io::Result<()>;
    fn list(&self, p: &Path) -> io::Result<Vec<String>>;
}

/// The real filesystem.
pub struct KernelFs;

impl ResctrlFs for KernelFs {
    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }
    fn write(&self, p: &Path, s: &str) -> io::Result<()> {
        // One write(2) per call: resctrl parses each write on its own.
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|mut f| io::Write::write_all(&mut f, s.as_bytes()))
    }
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn list(&self, p: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }
}
