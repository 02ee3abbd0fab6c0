//! The temporary file a capture spills body bytes to.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An anonymous temporary file (unlinked at creation, so nothing is left behind
/// even if the process dies), written at its end and read at any offset.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    len: u64,
}

impl Spool {
    /// A new empty spool in `dir`, or in the system's temporary directory.
    pub(crate) fn create(dir: Option<&Path>) -> io::Result<Spool> {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        Ok(Spool { file, len: 0 })
    }

    /// Appends `data`.
    pub(crate) fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads at `offset` into `buf`; 0 at the end.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let room = (self.len - offset).min(buf.len() as u64) as usize;
        self.file.read_at(&mut buf[..room], offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back_at_any_offset() {
        let mut s = Spool::create(None).unwrap();
        s.append(b"hello ").unwrap();
        s.append(b"world").unwrap();
        assert_eq!(s.len(), 11);
        let mut buf = [0u8; 8];
        assert_eq!(s.read_at(&mut buf, 0).unwrap(), 8);
        assert_eq!(&buf, b"hello wo");
        assert_eq!(s.read_at(&mut buf, 8).unwrap(), 3);
        assert_eq!(&buf[..3], b"rld");
        assert_eq!(s.read_at(&mut buf, 11).unwrap(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("absent");
        assert!(Spool::create(Some(&gone)).is_err());
        let s = Spool::create(Some(dir.path())).unwrap();
        // Unlinked at creation: the directory stays empty.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(s);
    }
}
