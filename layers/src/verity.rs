//! The dm-verity hash tree of a layer image, computed on the host so that a root hash can be
//! known before any node has the layer: format version 1 (the salt hashed before each block),
//! SHA-256, 4 KiB data and hash blocks, no superblock (the guest's table carries the
//! parameters), levels stored root-most first as the kernel reads them. `veritysetup format
//! --no-superblock` with the same salt writes the same tree and prints the same root hash
//! (the tests check it against Debian's cryptsetup-bin).

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: usize = 4096;
const DIGEST: usize = 32;
const HASHES_PER_BLOCK: usize = BLOCK / DIGEST;

/// The salt of every cloak layer: fixed, so the root hash depends on the layer alone.
pub const SALT: [u8; 32] = *b"cloak layer image dm-verity salt";

/// What the guest needs to open a layer image: where its hash tree starts and its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTree {
    pub data_blocks: u64,
    /// The tree's size in bytes (appended after the data).
    pub tree_bytes: u64,
    pub root_hash: [u8; DIGEST],
}

impl VerityTree {
    pub fn root_hex(&self) -> String {
        self.root_hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first hash block, counted in blocks from the start of the image (data, then tree).
    pub fn hash_start_block(&self) -> u64 {
        self.data_blocks
    }
}

fn hash_block(block: &[u8]) -> [u8; DIGEST] {
    let mut hasher = Sha256::new();
    hasher.update(SALT);
    hasher.update(block);
    hasher.finalize().into()
}

/// Packs digests into hash blocks (zero-padded), one level of the tree.
fn pack(digests: &[[u8; DIGEST]]) -> Vec<u8> {
    let blocks = digests.len().div_ceil(HASHES_PER_BLOCK).max(1);
    let mut level = vec![0u8; blocks * BLOCK];
    for (index, digest) in digests.iter().enumerate() {
        level[index * DIGEST..(index + 1) * DIGEST].copy_from_slice(digest);
    }
    level
}

/// Reads `data` (a whole number of blocks; a short last block is zero-padded) and writes its
/// hash tree to `tree`.
pub fn build(mut data: impl Read, mut tree: impl Write) -> std::io::Result<VerityTree> {
    let mut digests = Vec::new();
    let mut block = vec![0u8; BLOCK];
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match data.read(&mut block[filled..])? {
                0 => break,
                read => filled += read,
            }
        }
        if filled == 0 {
            break;
        }
        block[filled..].fill(0);
        digests.push(hash_block(&block));
        if filled < BLOCK {
            break;
        }
    }
    let data_blocks = digests.len() as u64;
    // Levels from the data upwards, until one hash block holds a level.
    let mut levels = vec![pack(&digests)];
    while levels.last().is_some_and(|level| level.len() > BLOCK) {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let hashes: Vec<[u8; DIGEST]> = below.chunks(BLOCK).map(hash_block).collect();
        levels.push(pack(&hashes));
    }
    let top = levels.last().map(Vec::as_slice).unwrap_or_default();
    let root_hash = hash_block(&top[..BLOCK]);
    let mut tree_bytes = 0;
    for level in levels.iter().rev() {
        tree.write_all(level)?;
        tree_bytes += level.len() as u64;
    }
    Ok(VerityTree {
        data_blocks,
        tree_bytes,
        root_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_level_for_few_blocks_and_more_for_many() {
        let mut tree = Vec::new();
        let small = build(&vec![7u8; 3 * BLOCK][..], &mut tree).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((small.data_blocks, tree.len()), (3, BLOCK));
        // 129 data blocks need two hash blocks at level 0 and one above them.
        let mut tree = Vec::new();
        let large = build(&vec![1u8; 129 * BLOCK][..], &mut tree).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((large.data_blocks, tree.len()), (129, 3 * BLOCK));
        // The root covers the top block, which is stored first.
        assert_eq!(large.root_hash, hash_block(&tree[..BLOCK]));
    }
}
