//! Data sets: CIFAR-10 (binary format, with download), Fashion-MNIST (IDX files) and a
//! built-in synthetic set. Every one ends up as raw u8 images plus labels; the GPU gathers,
//! converts and normalises batches itself (see `prepare_batch`).

pub mod augment;
pub mod cifar;
pub mod download;
pub mod fashion;
pub mod synthetic;

use std::path::Path;

/// One split (train or test): `count` images of `record` bytes each, and their labels.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A data set as the engine consumes it.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// "cifar10", "fashion-mnist" or "synthetic".
    pub name: String,
    /// Where it came from, for the log.
    pub source: String,
    pub channels: usize,
    /// Stored image size (before padding).
    pub height: usize,
    pub width: usize,
    /// Pixels of raw value 0 added on every side (Fashion-MNIST: 2, to reach 32x32).
    pub pad: usize,
    pub class_names: Vec<String>,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    /// Bytes per stored image.
    pub fn record(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Which data set the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetKind {
    #[value(name = "cifar10")]
    Cifar10,
    FashionMnist,
    Synthetic,
}

impl DatasetKind {
    /// The name `--dataset` takes and checkpoints record.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Synthetic => "synthetic",
        }
    }
}

/// The class names of each data set (CIFAR-10's as its batches.meta.txt lists them).
pub fn class_names(kind: DatasetKind) -> Vec<String> {
    match kind {
        DatasetKind::Cifar10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        DatasetKind::FashionMnist => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        DatasetKind::Synthetic => (0..10).map(|c| format!("pattern-{c}")).collect(),
    }
}

/// The default folder of each data set.
pub fn default_dir(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Cifar10 => "data/cifar-10-batches-bin",
        DatasetKind::FashionMnist => "/usr/share/datasets/fashion-mnist",
        DatasetKind::Synthetic => "",
    }
}

/// Options that decide where data comes from.
#[derive(Clone, Debug)]
pub struct DataOptions {
    pub kind: DatasetKind,
    pub dir: Option<std::path::PathBuf>,
    pub download: bool,
    pub seed: u64,
}

/// Loads the data set, downloading CIFAR-10 when its folder is missing and that is allowed.
pub fn load(opts: &DataOptions) -> Result<Dataset, String> {
    match opts.kind {
        DatasetKind::Cifar10 => {
            let dir = opts.dir.clone().unwrap_or_else(|| default_dir(DatasetKind::Cifar10).into());
            if !dir.exists() {
                if !opts.download {
                    return Err(format!(
                        "CIFAR-10 folder {} does not exist (and --no-download is set); point --data at a \
                            cifar-10-batches-bin folder, or use --dataset fashion-mnist or --dataset synthetic",
                        dir.display()
                    ));
                }
                download::fetch_cifar10(&dir)?;
            }
            cifar::load(&dir)
        }
        DatasetKind::FashionMnist => {
            let dir = opts.dir.clone().unwrap_or_else(|| default_dir(DatasetKind::FashionMnist).into());
            fashion::load(&dir)
        }
        DatasetKind::Synthetic => Ok(synthetic::generate(opts.seed, synthetic::TRAIN, synthetic::TEST)),
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
