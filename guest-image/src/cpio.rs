//! A deterministic writer for the cpio "newc" format the kernel unpacks as initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Entries are written sorted by
//! path, with fixed mtime, owner and inode numbers, so equal inputs give equal bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits only; the type comes from `kind`.
    pub mode: u32,
    pub kind: EntryKind,
}

/// An initramfs under construction: paths (no leading `/`) to entries. Parent directories are
/// added automatically with mode 0755.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: &str, mode: u32, kind: EntryKind) {
        let path = path.trim_matches('/').to_owned();
        let mut parent = path.as_str();
        while let Some((head, _)) = parent.rsplit_once('/') {
            self.entries.entry(head.to_owned()).or_insert(Entry {
                mode: 0o755,
                kind: EntryKind::Directory,
            });
            parent = head;
        }
        self.entries.insert(path, Entry { mode, kind });
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) {
        self.add(path, mode, EntryKind::Directory);
    }

    pub fn add_file(&mut self, path: &str, mode: u32, contents: Vec<u8>) {
        self.add(path, mode, EntryKind::File(contents));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the archive in path order; `mtime` is stamped on every entry.
    pub fn write_newc(&self, mtime: u32, out: &mut impl Write) -> io::Result<()> {
        let mut written = 0usize;
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            let (type_bits, data, rdev): (u32, &[u8], (u32, u32)) = match &entry.kind {
                EntryKind::Directory => (S_IFDIR, &[], (0, 0)),
                EntryKind::File(contents) => (S_IFREG, contents, (0, 0)),
                EntryKind::Symlink(target) => (S_IFLNK, target.as_bytes(), (0, 0)),
                EntryKind::CharDevice { major, minor } => (S_IFCHR, &[], (*major, *minor)),
            };
            let nlink = if type_bits == S_IFDIR { 2 } else { 1 };
            let header = Header {
                ino: index as u32 + 1,
                mode: type_bits | (entry.mode & 0o7777),
                nlink,
                mtime,
                filesize: data.len() as u32,
                rdev,
                name: path,
            };
            written += header.write(out)?;
            out.write_all(data)?;
            written += data.len();
            written += pad4(out, written)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev: (0, 0),
            name: TRAILER,
        };
        written += trailer.write(out)?;
        pad4(out, written)?;
        Ok(())
    }
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
    name: &'a str,
}

impl Header<'_> {
    /// Writes header + NUL-terminated name + padding; returns the bytes written.
    fn write(&self, out: &mut impl Write) -> io::Result<usize> {
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor
            0, // devminor
            self.rdev.0,
            self.rdev.1,
            self.name.len() as u32 + 1,
            0, // check
        ];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        out.write_all(header.as_bytes())?;
        out.write_all(self.name.as_bytes())?;
        out.write_all(&[0])?;
        let written = header.len() + self.name.len() + 1;
        Ok(written + pad4(out, written)?)
    }
}

fn pad4(out: &mut impl Write, written: usize) -> io::Result<usize> {
    let padding = (4 - written % 4) % 4;
    out.write_all(&[0u8; 3][..padding])?;
    Ok(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(archive: &Archive) -> Vec<u8> {
        let mut out = Vec::new();
        archive.write_newc(0, &mut out).unwrap();
        out
    }

    #[test]
    fn layout_matches_newc() {
        let mut archive = Archive::new();
        archive.add_file("init", 0o755, b"hello".to_vec());
        let bytes = written(&archive);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("070701"));
        // mode 0100755 in the second field
        assert_eq!(&text[14..22], "000081ed");
        // namesize "init\0" = 5
        assert_eq!(&text[94..102], "00000005");
        assert_eq!(&bytes[110..115], b"init\0");
        // header+name = 115 -> padded to 116, data starts there
        assert_eq!(&bytes[116..121], b"hello");
        assert!(text.contains(TRAILER));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn parents_are_created_and_order_is_stable() {
        let mut first = Archive::new();
        first.add_file("lib/modules/x/a.ko", 0o644, vec![1]);
        first.add_file("etc/cloak/modules", 0o644, vec![2]);
        let mut second = Archive::new();
        second.add_file("etc/cloak/modules", 0o644, vec![2]);
        second.add_file("lib/modules/x/a.ko", 0o644, vec![1]);
        assert_eq!(first.len(), 7);
        assert_eq!(written(&first), written(&second));
    }

    #[test]
    fn matches_gnu_cpio_listing() {
        // Cross-check against the reference implementation when it is installed.
        let Ok(output) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("skipped: GNU cpio is not installed");
            return;
        };
        assert!(output.status.success());
        let mut archive = Archive::new();
        archive.add_file("bin/tool", 0o755, vec![7; 1001]);
        archive.add(
            "dev/console",
            0o600,
            EntryKind::CharDevice { major: 5, minor: 1 },
        );
        archive.add("sbin/init", 0o777, EntryKind::Symlink("/bin/tool".into()));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.cpio");
        std::fs::write(&file, written(&archive)).unwrap();
        let listing = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cpio -itv --quiet < {}", file.display()))
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(text.contains("bin/tool"), "{text}");
        assert!(text.contains("1001"), "{text}");
        assert!(text.contains("sbin/init -> /bin/tool"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with('c') && l.contains("dev/console")),
            "{text}"
        );
    }
}
