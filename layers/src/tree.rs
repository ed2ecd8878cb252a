//! One OCI layer as a file tree, read from its tar: entries in archive order (a later entry
//! of the same path replaces an earlier one), parent directories implied where the tar has
//! none, hard links sharing one inode, PAX xattrs, and the OCI whiteouts turned into what
//! overlayfs reads from a lower layer: `.wh.NAME` becomes a 0:0 character device `NAME`,
//! `.wh..wh..opq` marks its directory opaque (`trusted.overlay.opaque = "y"`). Regular file
//! data is streamed to the image as it is read; only metadata and small files stay in memory.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::LayerError;

pub(crate) type NodeId = usize;

/// Where a regular file's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// Small enough to sit after its inode.
    Inline(Vec<u8>),
    /// `blocks` whole blocks from block `start` of the image.
    Blocks { start: u32, size: u64 },
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Directory {
        children: BTreeMap<Vec<u8>, NodeId>,
    },
    File(Data),
    Symlink(Vec<u8>),
    /// Character or block device, fifo or socket: `rdev` where it has one.
    Special {
        rdev: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// File type and permission bits, as `st_mode`.
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: u64,
    /// `(erofs name index, name without its prefix) → value`.
    pub(crate) xattrs: BTreeMap<(u8, Vec<u8>), Vec<u8>>,
    pub(crate) nlink: u32,
}

pub(crate) const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;
const S_IFCHR: u16 = 0o020000;
const S_IFBLK: u16 = 0o060000;
const S_IFIFO: u16 = 0o010000;

/// Files up to this size are stored inline after their inode.
pub(crate) const INLINE_MAX: u64 = 2048;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// erofs's xattr name indexes for the prefixes it knows (anything else is refused).
fn xattr_key(name: &str) -> Option<(u8, Vec<u8>)> {
    [("user.", 1u8), ("trusted.", 4), ("security.", 6)]
        .iter()
        .find_map(|(prefix, index)| {
            name.strip_prefix(prefix)
                .map(|rest| (*index, rest.as_bytes().to_vec()))
        })
}

pub(crate) fn new_encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// A layer's tree.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
}

pub(crate) const ROOT: NodeId = 0;

fn directory(mode: u16, uid: u32, gid: u32, mtime: u64) -> Node {
    Node {
        kind: Kind::Directory {
            children: BTreeMap::new(),
        },
        mode: S_IFDIR | (mode & 0o7777),
        uid,
        gid,
        mtime,
        xattrs: BTreeMap::new(),
        nlink: 1,
    }
}

/// A path's components, without `.`, empty parts and a leading `/`; `..` is refused.
fn components(path: &[u8]) -> Result<Vec<Vec<u8>>, LayerError> {
    let mut parts = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(LayerError::Path(String::from_utf8_lossy(path).into_owned())),
            name => parts.push(name.to_vec()),
        }
    }
    Ok(parts)
}

impl Tree {
    fn new() -> Self {
        Self {
            nodes: vec![directory(0o755, 0, 0, 0)],
        }
    }

    fn children_mut(&mut self, dir: NodeId) -> Option<&mut BTreeMap<Vec<u8>, NodeId>> {
        match &mut self.nodes[dir].kind {
            Kind::Directory { children } => Some(children),
            _ => None,
        }
    }

    /// The directory at `parts`, created (0755, root) where missing; a non-directory in the
    /// way is replaced, as a later tar entry would.
    fn directory_at(&mut self, parts: &[Vec<u8>]) -> NodeId {
        let mut at = ROOT;
        for part in parts {
            let existing = self
                .children_mut(at)
                .and_then(|children| children.get(part).copied());
            at = match existing {
                Some(child) if matches!(self.nodes[child].kind, Kind::Directory { .. }) => child,
                _ => {
                    let id = self.nodes.len();
                    self.nodes.push(directory(0o755, 0, 0, 0));
                    if let Some(children) = self.children_mut(at) {
                        children.insert(part.clone(), id);
                    }
                    id
                }
            };
        }
        at
    }

    fn lookup(&self, parts: &[Vec<u8>]) -> Option<NodeId> {
        let mut at = ROOT;
        for part in parts {
            at = match &self.nodes[at].kind {
                Kind::Directory { children } => *children.get(part)?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// Puts `node` at `parts` (replacing what was there; an existing directory keeps its
    /// children when a directory entry replaces it).
    fn insert(&mut self, parts: &[Vec<u8>], mut node: Node) {
        let Some((name, parent)) = parts.split_last() else {
            // The root itself: keep its children, take its metadata.
            if let Kind::Directory { children } = &self.nodes[ROOT].kind {
                node.kind = Kind::Directory {
                    children: children.clone(),
                };
            }
            self.nodes[ROOT] = node;
            return;
        };
        let parent = self.directory_at(parent);
        let existing = self
            .children_mut(parent)
            .and_then(|children| children.get(name).copied());
        if let (Some(existing), Kind::Directory { .. }) = (existing, &node.kind) {
            if let Kind::Directory { children } = &self.nodes[existing].kind {
                node.kind = Kind::Directory {
                    children: children.clone(),
                };
                self.nodes[existing] = node;
                return;
            }
        }
        let id = self.nodes.len();
        self.nodes.push(node);
        if let Some(children) = self.children_mut(parent) {
            children.insert(name.clone(), id);
        }
    }

    fn link(&mut self, parts: &[Vec<u8>], target: NodeId) {
        if let Some((name, parent)) = parts.split_last() {
            let parent = self.directory_at(parent);
            if let Some(children) = self.children_mut(parent) {
                children.insert(name.clone(), target);
            }
        }
    }
}

/// Reads the layer tar `input`, writing regular files' blocks to `image` from block
/// `first_block` on; the tree and the next free block.
pub(crate) fn read_layer(
    input: impl Read,
    image: &mut (impl Write + Seek),
    first_block: u32,
) -> Result<(Tree, u32), LayerError> {
    let mut tree = Tree::new();
    let mut next_block = first_block;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(LayerError::Tar)? {
        let mut entry = entry.map_err(LayerError::Tar)?;
        let path = entry.path_bytes().into_owned();
        let mut parts = components(&path)?;
        let header = entry.header().clone();
        let mode = (header.mode().map_err(LayerError::Tar)? & 0o7777) as u16;
        // Some image tools leave these fields empty: they read as 0, on every node alike.
        let uid = u32::try_from(header.uid().unwrap_or(0)).unwrap_or(u32::MAX);
        let gid = u32::try_from(header.gid().unwrap_or(0)).unwrap_or(u32::MAX);
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().map_err(LayerError::Tar)? {
            for extension in extensions {
                let extension = extension.map_err(LayerError::Tar)?;
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    let key = xattr_key(name).ok_or_else(|| LayerError::Xattr(name.to_owned()))?;
                    xattrs.insert(key, extension.value_bytes().to_vec());
                }
            }
        }
        // Whiteouts.
        if let Some(name) = parts.last().cloned() {
            if name == OPAQUE_MARKER {
                parts.pop();
                let dir = tree.directory_at(&parts);
                tree.nodes[dir]
                    .xattrs
                    .insert((4, b"overlay.opaque".to_vec()), b"y".to_vec());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if let Some(last) = parts.last_mut() {
                    *last = hidden.to_vec();
                }
                tree.insert(
                    &parts,
                    Node {
                        kind: Kind::Special { rdev: 0 },
                        mode: S_IFCHR,
                        uid: 0,
                        gid: 0,
                        mtime,
                        xattrs: BTreeMap::new(),
                        nlink: 1,
                    },
                );
                continue;
            }
        }
        let node = |kind: Kind, file_type: u16| Node {
            kind,
            mode: file_type | mode,
            uid,
            gid,
            mtime,
            xattrs: xattrs.clone(),
            nlink: 1,
        };
        use tar::EntryType;
        match kind {
            EntryType::Directory => tree.insert(
                &parts,
                node(
                    Kind::Directory {
                        children: BTreeMap::new(),
                    },
                    S_IFDIR,
                ),
            ),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                let data = if size <= INLINE_MAX {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).map_err(LayerError::Io)?;
                    Data::Inline(bytes)
                } else {
                    let start = next_block;
                    image
                        .seek(SeekFrom::Start(u64::from(start) * crate::BLOCK as u64))
                        .map_err(LayerError::Io)?;
                    let copied = std::io::copy(&mut entry, image).map_err(LayerError::Io)?;
                    let blocks = copied.div_ceil(crate::BLOCK as u64);
                    let padding = blocks * crate::BLOCK as u64 - copied;
                    image
                        .write_all(&vec![0u8; padding as usize])
                        .map_err(LayerError::Io)?;
                    next_block = u32::try_from(u64::from(start) + blocks)
                        .map_err(|_| LayerError::TooLarge)?;
                    Data::Blocks {
                        start,
                        size: copied,
                    }
                };
                tree.insert(&parts, node(Kind::File(data), S_IFREG));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::Path(String::from_utf8_lossy(&path).into_owned()))?
                    .into_owned();
                tree.insert(&parts, node(Kind::Symlink(target), S_IFLNK));
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::Path(String::from_utf8_lossy(&path).into_owned()))?;
                let target_parts = components(&target)?;
                let target = tree.lookup(&target_parts).ok_or_else(|| {
                    LayerError::Path(String::from_utf8_lossy(&target).into_owned())
                })?;
                tree.nodes[target].nlink += 1;
                tree.link(&parts, target);
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let file_type = match kind {
                    EntryType::Char => S_IFCHR,
                    EntryType::Block => S_IFBLK,
                    _ => S_IFIFO,
                };
                tree.insert(
                    &parts,
                    node(
                        Kind::Special {
                            rdev: new_encode_dev(major, minor),
                        },
                        file_type,
                    ),
                );
            }
            // PAX and GNU long-name headers are consumed by the tar reader.
            _ => {}
        }
    }
    Ok((tree, next_block))
}
