//! Fashion-MNIST from IDX files (`train-images-idx3-ubyte[.gz]` and friends), gzip'd or raw.
//! Default folder: /usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist`).
//! Images are 28x28 with one channel; the network pads them by 2 pixels to 32x32.

use super::{read_file, Dataset, Split, FASHION_CLASSES};
use std::io::Read;
use std::path::{Path, PathBuf};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf, String> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(format!(
        "{}: missing (neither {stem} nor {stem}.gz); on Debian, apt-get install dataset-fashion-mnist, or point \
            --data at the folder",
        dir.join(stem).display()
    ))
}

/// Reads a file, inflating it when it is gzip'd (by its magic bytes, not its name).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, String> {
    maybe_gunzip(path, read_file(path)?)
}

/// Inflates `raw` when it starts with gzip's magic bytes; `path` names it in errors.
pub fn maybe_gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: corrupt gzip stream: {e}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX image file: magic 0x00000803, count, 28, 28, then count*784 bytes.
pub fn parse_images(path: &Path, b: &[u8]) -> Result<(usize, Vec<u8>), String> {
    let name = path.display();
    if b.len() < 16 {
        return Err(format!("{name}: {} bytes is too short for an IDX image header (16 bytes)", b.len()));
    }
    let magic = be32(b, 0);
    if magic != IMAGES_MAGIC {
        return Err(format!(
            "{name}: magic 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} (IDX unsigned-byte images, 3 dimensions)"
        ));
    }
    let (n, rows, cols) = (be32(b, 4) as usize, be32(b, 8) as usize, be32(b, 12) as usize);
    if rows != 28 || cols != 28 {
        return Err(format!("{name}: images are {rows}x{cols}, expected 28x28"));
    }
    let want = 16 + n * 784;
    if b.len() != want {
        return Err(format!(
            "{name}: {} bytes, expected {want} for {n} images of 28x28 (truncated or trailing data)",
            b.len()
        ));
    }
    Ok((n, b[16..].to_vec()))
}

/// Parses an IDX label file: magic 0x00000801, count, then count bytes, each 0-9.
pub fn parse_labels(path: &Path, b: &[u8]) -> Result<Vec<u8>, String> {
    let name = path.display();
    if b.len() < 8 {
        return Err(format!("{name}: {} bytes is too short for an IDX label header (8 bytes)", b.len()));
    }
    let magic = be32(b, 0);
    if magic != LABELS_MAGIC {
        return Err(format!(
            "{name}: magic 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x} (IDX unsigned-byte labels, 1 dimension)"
        ));
    }
    let n = be32(b, 4) as usize;
    if b.len() != 8 + n {
        return Err(format!(
            "{name}: {} bytes, expected {} for {n} labels (truncated or trailing data)",
            b.len(),
            8 + n
        ));
    }
    if let Some((i, &l)) = b[8..].iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(format!("{name}: label {i} is {l}, expected 0-9"));
    }
    Ok(b[8..].to_vec())
}

fn load_split(dir: &Path, prefix: &str) -> Result<Split, String> {
    let ip = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (n, images) = parse_images(&ip, &read_maybe_gz(&ip)?)?;
    let labels = parse_labels(&lp, &read_maybe_gz(&lp)?)?;
    if labels.len() != n {
        return Err(format!("{}: {} labels for {n} images in {}", lp.display(), labels.len(), ip.display()));
    }
    if n == 0 {
        return Err(format!("{}: holds no images", ip.display()));
    }
    Ok(Split { images, labels })
}

pub fn load(dir: &Path) -> Result<Dataset, String> {
    if !dir.is_dir() {
        return Err(format!(
            "{}: no such folder; Fashion-MNIST is expected there (on Debian: apt-get install dataset-fashion-mnist), \
                or point --data at its IDX files",
            dir.display()
        ));
    }
    Ok(Dataset {
        name: "fashion-mnist".into(),
        source: dir.display().to_string(),
        channels: 1,
        height: 28,
        width: 28,
        pad: 2,
        class_names: FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        train: load_split(dir, "train")?,
        test: load_split(dir, "t10k")?,
    })
}
