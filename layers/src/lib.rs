//! Container layers as read-only, verifiable block images: each OCI layer tar becomes an
//! uncompressed erofs image (written here, so the same layer gives the same bytes on every
//! node and on the machine that writes a pod's policy) followed by its dm-verity hash tree.
//! The root hash is a function of the layer alone; a confidential pod's policy pins it and
//! the guest opens the image with exactly that hash.

mod erofs;
mod tree;
pub mod verity;

use std::io::{Read, Seek, SeekFrom, Write};

pub use verity::{VerityTree, BLOCK};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading the layer tar: {0}")]
    Tar(std::io::Error),
    #[error("writing the layer image: {0}")]
    Io(std::io::Error),
    #[error("the layer has a path that leaves its root or cannot be linked: {0}")]
    Path(String),
    #[error("the layer has an xattr erofs cannot hold: {0}")]
    Xattr(String),
    #[error("the layer is too large for its image format")]
    TooLarge,
}

/// A converted layer: `image_bytes` of erofs, then its hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerImage {
    pub image_bytes: u64,
    pub verity: VerityTree,
}

/// Converts the (uncompressed) layer tar `layer` into `out`: the erofs image, then the
/// dm-verity tree of that image.
pub fn convert(
    layer: impl Read,
    out: &mut (impl Read + Write + Seek),
) -> Result<LayerImage, LayerError> {
    let (tree, next_block) = tree::read_layer(layer, out, 1)?;
    let image_bytes = erofs::write(&tree, next_block, out)?;
    out.seek(SeekFrom::Start(0)).map_err(LayerError::Io)?;
    let mut tree_bytes = Vec::new();
    let verity =
        verity::build((&mut *out).take(image_bytes), &mut tree_bytes).map_err(LayerError::Io)?;
    out.seek(SeekFrom::Start(image_bytes))
        .map_err(LayerError::Io)?;
    out.write_all(&tree_bytes).map_err(LayerError::Io)?;
    Ok(LayerImage {
        image_bytes,
        verity,
    })
}

#[cfg(test)]
mod tests;
