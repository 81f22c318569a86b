//! CIFAR-10 in its official binary format: `data_batch_1.bin` … `data_batch_5.bin`,
//! `test_batch.bin`, `batches.meta.txt`. Each record is 1 label byte then 3072 pixel bytes
//! (R plane, G plane, B plane, 32x32 row-major). Fewer or shorter training files are accepted
//! so small test sets work; anything malformed is refused with the file and record named.

use super::{read_file, Dataset, Split, CIFAR10_CLASSES};
use std::path::Path;

pub const IMAGE_BYTES: usize = 3 * 32 * 32;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in one official batch file; a longer file is not a CIFAR-10 batch.
pub const RECORDS_PER_FILE: usize = 10_000;

/// Parses one batch file's bytes into `split`.
pub fn parse_batch(path: &Path, bytes: &[u8], split: &mut Split) -> Result<(), String> {
    let name = path.display();
    if bytes.is_empty() {
        return Err(format!(
            "{name}: the file is empty; expected records of {RECORD_BYTES} bytes (1 label byte + 3072 pixel bytes)"
        ));
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(format!(
            "{name}: size {} bytes is not a multiple of the {RECORD_BYTES}-byte CIFAR-10 record (1 label byte + 3072 \
                pixel bytes): the file is truncated or not a CIFAR-10 binary batch (record {} is incomplete)",
            bytes.len(),
            bytes.len() / RECORD_BYTES
        ));
    }
    let n = bytes.len() / RECORD_BYTES;
    if n > RECORDS_PER_FILE {
        return Err(format!("{name}: {n} records, more than the {RECORDS_PER_FILE} a CIFAR-10 batch file holds"));
    }
    split.images.reserve(n * IMAGE_BYTES);
    for (r, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        if rec[0] > 9 {
            return Err(format!("{name}: record {r}: label {} is not a CIFAR-10 class (expected 0-9)", rec[0]));
        }
        split.labels.push(rec[0]);
        split.images.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Loads a `cifar-10-batches-bin` folder.
pub fn load(dir: &Path) -> Result<Dataset, String> {
    if !dir.is_dir() {
        return Err(format!(
            "{}: not a folder; expected a cifar-10-batches-bin folder with data_batch_1.bin … test_batch.bin",
            dir.display()
        ));
    }
    let mut train = Split::default();
    let mut found = 0;
    for i in 1..=5 {
        let path = dir.join(format!("data_batch_{i}.bin"));
        if path.exists() {
            parse_batch(&path, &read_file(&path)?, &mut train)?;
            found += 1;
        }
    }
    if found == 0 {
        return Err(format!(
            "{}: no training batch file (expected data_batch_1.bin … data_batch_5.bin)",
            dir.display()
        ));
    }
    let test_path = dir.join("test_batch.bin");
    if !test_path.exists() {
        return Err(format!("{}: missing; the test split is needed for evaluation", test_path.display()));
    }
    let mut test = Split::default();
    parse_batch(&test_path, &read_file(&test_path)?, &mut test)?;

    let meta = dir.join("batches.meta.txt");
    let class_names = match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if names.len() != 10 {
                return Err(format!(
                    "{}: expected 10 class names, one per line; found {}",
                    meta.display(),
                    names.len()
                ));
            }
            names
        }
        Err(_) => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    Ok(Dataset {
        name: "cifar10".into(),
        source: dir.display().to_string(),
        channels: 3,
        height: 32,
        width: 32,
        pad: 0,
        class_names,
        train,
        test,
    })
}

/// Writes a data set in CIFAR-10's binary layout (tests and tools make small sets with it).
pub fn write_batch(path: &Path, images: &[u8], labels: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(labels.len() * RECORD_BYTES);
    for (i, &l) in labels.iter().enumerate() {
        out.push(l);
        out.extend_from_slice(&images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]);
    }
    std::fs::write(path, out)
}
