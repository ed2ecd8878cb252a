//! An uncompressed erofs image of a layer's tree, written by cloak itself so the same layer
//! gives the same bytes on any machine, whatever mkfs version it has (and without extracting
//! the tar as root). The on-disk format is Linux's `fs/erofs/erofs_fs.h`: a superblock at
//! 1024, file data from block 1 (written while the tar was read), then directory blocks, then
//! the metadata area of 64-byte extended inodes with inline xattrs and, for small files and
//! symbolic links, inline data. Directory entries are sorted by name, as the kernel expects.

use std::io::{Seek, SeekFrom, Write};

use crate::tree::{Data, Kind, NodeId, Tree, INLINE_MAX, ROOT, S_IFDIR};
use crate::{LayerError, BLOCK};

const SUPER_OFFSET: u64 = 1024;
const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
const INODE_BYTES: usize = 64;
const SLOT: usize = 32;
const DIRENT_BYTES: usize = 12;
const LAYOUT_FLAT_PLAIN: u16 = 0;
const LAYOUT_FLAT_INLINE: u16 = 2;

fn file_type(mode: u16) -> u8 {
    match mode & 0o170000 {
        0o100000 => 1,
        0o040000 => 2,
        0o020000 => 3,
        0o060000 => 4,
        0o010000 => 5,
        0o140000 => 6,
        0o120000 => 7,
        _ => 0,
    }
}

/// The inline xattr area of a node: the ibody header and the entries, 4-byte aligned.
fn xattr_area(xattrs: &std::collections::BTreeMap<(u8, Vec<u8>), Vec<u8>>) -> Vec<u8> {
    if xattrs.is_empty() {
        return Vec::new();
    }
    let mut area = vec![0u8; 12];
    for ((index, name), value) in xattrs {
        area.push(name.len() as u8);
        area.push(*index);
        area.extend_from_slice(&(value.len() as u16).to_le_bytes());
        area.extend_from_slice(name);
        area.extend_from_slice(value);
        while !area.len().is_multiple_of(4) {
            area.push(0);
        }
    }
    area
}

/// One directory's blocks given its entries' nids: `(name, nid, file type)` sorted by name.
fn directory_blocks(entries: &[(Vec<u8>, u64, u8)]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < entries.len() {
        // As many entries as fit: 12 bytes each plus their names.
        let mut end = at;
        let mut used = 0;
        while end < entries.len() && used + DIRENT_BYTES + entries[end].0.len() <= BLOCK {
            used += DIRENT_BYTES + entries[end].0.len();
            end += 1;
        }
        let mut block = vec![0u8; BLOCK];
        let mut name_at = (end - at) * DIRENT_BYTES;
        for (slot, (name, nid, kind)) in entries[at..end].iter().enumerate() {
            let dirent = &mut block[slot * DIRENT_BYTES..(slot + 1) * DIRENT_BYTES];
            dirent[0..8].copy_from_slice(&nid.to_le_bytes());
            dirent[8..10].copy_from_slice(&(name_at as u16).to_le_bytes());
            dirent[10] = *kind;
            block[name_at..name_at + name.len()].copy_from_slice(name);
            name_at += name.len();
        }
        blocks.push(block);
        at = end;
    }
    blocks
}

/// The number of blocks a directory with these names needs.
fn directory_block_count(names: &[&[u8]]) -> usize {
    let fake: Vec<(Vec<u8>, u64, u8)> = names.iter().map(|n| (n.to_vec(), 0, 0)).collect();
    directory_blocks(&fake).len()
}

/// Where each node's inode goes, and the directories' data blocks.
struct Layout {
    /// Byte offset of each node's inode within the metadata area (`None`: not reached).
    inode_at: Vec<Option<usize>>,
    dir_start: Vec<u32>,
    meta_blkaddr: u32,
    meta_bytes: usize,
    order: Vec<NodeId>,
}

fn children_of(tree: &Tree, id: NodeId) -> Vec<(&[u8], NodeId)> {
    match &tree.nodes[id].kind {
        Kind::Directory { children } => children.iter().map(|(n, c)| (n.as_slice(), *c)).collect(),
        _ => Vec::new(),
    }
}

fn inline_bytes(kind: &Kind) -> usize {
    match kind {
        Kind::File(Data::Inline(bytes)) => bytes.len(),
        Kind::Symlink(target) if target.len() as u64 <= INLINE_MAX => target.len(),
        _ => 0,
    }
}

fn layout(tree: &Tree, first_free_block: u32) -> Result<Layout, LayerError> {
    // Breadth-first from the root, children by name: each inode once (hard links share).
    let mut order = vec![ROOT];
    let mut seen = vec![false; tree.nodes.len()];
    seen[ROOT] = true;
    let mut next = 0;
    while next < order.len() {
        for (_, child) in children_of(tree, order[next]) {
            if !seen[child] {
                seen[child] = true;
                order.push(child);
            }
        }
        next += 1;
    }
    let mut dir_start = vec![0u32; tree.nodes.len()];
    let mut block = first_free_block;
    for &id in &order {
        if let Kind::Directory { children } = &tree.nodes[id].kind {
            let mut names: Vec<&[u8]> = vec![b".", b".."];
            names.extend(children.keys().map(Vec::as_slice));
            dir_start[id] = block;
            block += directory_block_count(&names) as u32;
        }
    }
    let mut inode_at = vec![None; tree.nodes.len()];
    // Slot 0 stays empty: the root's nid is never 0.
    let mut offset = SLOT;
    for &id in &order {
        let node = &tree.nodes[id];
        let size = INODE_BYTES + xattr_area(&node.xattrs).len() + inline_bytes(&node.kind);
        if size > BLOCK {
            return Err(LayerError::TooLarge);
        }
        // Inline data must end in the inode's block.
        if offset % BLOCK + size > BLOCK {
            offset = offset.div_ceil(BLOCK) * BLOCK;
        }
        inode_at[id] = Some(offset);
        offset = (offset + size).div_ceil(SLOT) * SLOT;
    }
    if inode_at[ROOT].is_some_and(|at| at / SLOT > usize::from(u16::MAX)) {
        return Err(LayerError::TooLarge);
    }
    Ok(Layout {
        inode_at,
        dir_start,
        meta_blkaddr: block,
        meta_bytes: offset,
        order,
    })
}

/// Writes the metadata of `tree` (whose file data is already at its blocks) and the
/// superblock; the image's size in bytes, a whole number of blocks.
pub(crate) fn write(
    tree: &Tree,
    first_free_block: u32,
    image: &mut (impl Write + Seek),
) -> Result<u64, LayerError> {
    let plan = layout(tree, first_free_block)?;
    let nid = |id: NodeId| plan.inode_at[id].map(|at| (at / SLOT) as u64).unwrap_or(0);
    let mut parent = vec![ROOT; tree.nodes.len()];
    for &id in &plan.order {
        for (_, child) in children_of(tree, id) {
            if matches!(tree.nodes[child].kind, Kind::Directory { .. }) {
                parent[child] = id;
            }
        }
    }
    // Directory blocks.
    for &id in &plan.order {
        if let Kind::Directory { children } = &tree.nodes[id].kind {
            let mut entries = vec![
                (b".".to_vec(), nid(id), 2u8),
                (b"..".to_vec(), nid(parent[id]), 2u8),
            ];
            entries.extend(children.iter().map(|(name, child)| {
                (
                    name.clone(),
                    nid(*child),
                    file_type(tree.nodes[*child].mode),
                )
            }));
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            image
                .seek(SeekFrom::Start(
                    u64::from(plan.dir_start[id]) * BLOCK as u64,
                ))
                .map_err(LayerError::Io)?;
            for block in directory_blocks(&entries) {
                image.write_all(&block).map_err(LayerError::Io)?;
            }
        }
    }
    // The metadata area.
    let mut meta = vec![0u8; plan.meta_bytes.div_ceil(BLOCK) * BLOCK];
    for (ino, &id) in plan.order.iter().enumerate() {
        let node = &tree.nodes[id];
        let at = plan.inode_at[id].unwrap_or(0);
        let xattrs = xattr_area(&node.xattrs);
        let (layout, size, raw, inline): (u16, u64, u32, &[u8]) = match &node.kind {
            Kind::Directory { children } => {
                let mut names: Vec<&[u8]> = vec![b".", b".."];
                names.extend(children.keys().map(Vec::as_slice));
                let blocks = directory_block_count(&names) as u64;
                (
                    LAYOUT_FLAT_PLAIN,
                    blocks * BLOCK as u64,
                    plan.dir_start[id],
                    &[],
                )
            }
            Kind::File(Data::Inline(bytes)) => (LAYOUT_FLAT_INLINE, bytes.len() as u64, 0, bytes),
            Kind::File(Data::Blocks { start, size }) => (LAYOUT_FLAT_PLAIN, *size, *start, &[]),
            Kind::Symlink(target) if target.len() as u64 <= INLINE_MAX => {
                (LAYOUT_FLAT_INLINE, target.len() as u64, 0, target)
            }
            Kind::Symlink(_) => return Err(LayerError::TooLarge),
            Kind::Special { rdev } => (LAYOUT_FLAT_PLAIN, 0, *rdev, &[]),
        };
        let subdirs = children_of(tree, id)
            .iter()
            .filter(|(_, c)| matches!(tree.nodes[*c].kind, Kind::Directory { .. }))
            .count() as u32;
        let nlink = if node.mode & 0o170000 == S_IFDIR {
            2 + subdirs
        } else {
            node.nlink
        };
        let inode = &mut meta[at..at + INODE_BYTES];
        inode[0..2].copy_from_slice(&(1 | (layout << 1)).to_le_bytes());
        let icount: u16 = if xattrs.is_empty() {
            0
        } else {
            ((xattrs.len() - 12) / 4 + 1) as u16
        };
        inode[2..4].copy_from_slice(&icount.to_le_bytes());
        inode[4..6].copy_from_slice(&node.mode.to_le_bytes());
        inode[8..16].copy_from_slice(&size.to_le_bytes());
        inode[16..20].copy_from_slice(&raw.to_le_bytes());
        inode[20..24].copy_from_slice(&(ino as u32 + 1).to_le_bytes());
        inode[24..28].copy_from_slice(&node.uid.to_le_bytes());
        inode[28..32].copy_from_slice(&node.gid.to_le_bytes());
        inode[32..40].copy_from_slice(&node.mtime.to_le_bytes());
        inode[44..48].copy_from_slice(&nlink.to_le_bytes());
        let tail = at + INODE_BYTES;
        meta[tail..tail + xattrs.len()].copy_from_slice(&xattrs);
        let data_at = tail + xattrs.len();
        meta[data_at..data_at + inline.len()].copy_from_slice(inline);
    }
    image
        .seek(SeekFrom::Start(u64::from(plan.meta_blkaddr) * BLOCK as u64))
        .map_err(LayerError::Io)?;
    image.write_all(&meta).map_err(LayerError::Io)?;
    let blocks = u64::from(plan.meta_blkaddr) + (meta.len() / BLOCK) as u64;
    // Block 0: zeros, then the superblock at 1024.
    let mut superblock = [0u8; 128];
    superblock[0..4].copy_from_slice(&SUPER_MAGIC.to_le_bytes());
    superblock[12] = 12; // blkszbits
    superblock[14..16].copy_from_slice(&(nid(ROOT) as u16).to_le_bytes());
    superblock[16..24].copy_from_slice(&(plan.order.len() as u64).to_le_bytes());
    superblock[36..40]
        .copy_from_slice(&(u32::try_from(blocks).map_err(|_| LayerError::TooLarge)?).to_le_bytes());
    superblock[40..44].copy_from_slice(&plan.meta_blkaddr.to_le_bytes());
    image.seek(SeekFrom::Start(0)).map_err(LayerError::Io)?;
    image
        .write_all(&[0u8; SUPER_OFFSET as usize])
        .map_err(LayerError::Io)?;
    image.write_all(&superblock).map_err(LayerError::Io)?;
    image
        .write_all(&vec![0u8; BLOCK - SUPER_OFFSET as usize - superblock.len()])
        .map_err(LayerError::Io)?;
    Ok(blocks * BLOCK as u64)
}
