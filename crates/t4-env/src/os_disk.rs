//! OsDisk: the operating system's files under a data directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::disk::{Disk, DiskFile};

#[derive(Debug, Clone)]
pub struct OsDisk {
    root: PathBuf,
}

impl OsDisk {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        debug_assert!(!relative.starts_with('/'), "disk paths are relative: {relative}");
        if relative.is_empty() {
            self.root.clone()
        } else {
            self.root.join(relative)
        }
    }
}

impl Disk for OsDisk {
    fn open(&self, path: &str, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(self.path(path))?;
        Ok(Box::new(OsFile { file }))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(self.path(dir)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(path)) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.path(dir))
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        File::open(self.path(dir))?.sync_all()
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.path(path).try_exists()
    }

    fn lock_exclusive(&self) -> io::Result<Box<dyn Send + Sync + std::fmt::Debug>> {
        std::fs::create_dir_all(&self.root)?;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.path("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("data directory {} is in use by another process", self.root.display()),
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }
}

#[derive(Debug)]
struct OsFile {
    file: File,
}

impl DiskFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let current = self.len()?;
        if len <= current {
            return Ok(());
        }
        let offset = libc::off_t::try_from(current).map_err(io::Error::other)?;
        let growth = libc::off_t::try_from(len - current).map_err(io::Error::other)?;
        // SAFETY: the descriptor is open for the life of `self.file`; posix_fallocate only
        // reads its arguments.
        let status = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), offset, growth) };
        match status {
            0 => Ok(()),
            // A filesystem without fallocate: the file grows with each append instead.
            libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}
