//! Checkpoints of a run and resuming one: the metadata every checkpoint records (in a fixed
//! order, so the same run writes the same bytes), `last.safetensors` with the momentum and the
//! progress, and the flags a resume or an `eval` takes from the file when they are left out.

use super::{Engine, LrSchedule, Recipe, TrainConfig};
use crate::checkpoint;
use crate::data::augment::Augment;
use crate::data::{Dataset, DatasetKind};
use crate::nn::Model;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Refuses a checkpoint whose first convolution does not take the data set's channels.
pub(super) fn check_channels(path: &Path, l: &checkpoint::Loaded, ds: &Dataset) -> Result<(), String> {
    if l.in_channels != ds.channels {
        return Err(format!(
            "{}: conv1.weight has {} input channel(s) but the {} data set has {}",
            path.display(),
            l.in_channels,
            ds.name,
            ds.channels
        ));
    }
    Ok(())
}

/// The metadata of every checkpoint a run writes. A BTreeMap: written in key order, so two runs
/// with the same flags write byte-identical files.
pub(super) fn checkpoint_metadata(cfg: &TrainConfig, ds: &Dataset, epoch: usize) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::from([
        ("format".to_string(), "gpu-lenet".to_string()),
        ("epoch".to_string(), epoch.to_string()),
        ("dataset".to_string(), ds.name.clone()),
        ("lr".to_string(), cfg.lr.to_string()),
        ("momentum".to_string(), cfg.momentum.to_string()),
        ("batch_size".to_string(), cfg.batch_size.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        ("shuffle".to_string(), cfg.shuffle.to_string()),
        ("epochs".to_string(), cfg.epochs.to_string()),
        ("model".to_string(), cfg.model.name().to_string()),
    ]);
    for (key, _, value) in cfg.recipe.fields() {
        meta.insert(key.to_string(), value);
    }
    if let Some(d) = &cfg.data {
        meta.insert("data".to_string(), d.display().to_string());
    }
    meta
}

/// Where training stands, as `last.safetensors` records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Whole epochs done.
    pub epochs_done: usize,
    /// Steps done of epoch `epochs_done + 1` (an interrupt mid-epoch), else 0.
    pub step: usize,
    /// The shuffle generator's state before drawing epoch `epochs_done + 1`'s order.
    pub shuffle_rng: u64,
    pub best_test_accuracy: f64,
    /// Training batches so far (BatchNorm's num_batches_tracked; kept in its tensors).
    pub batches_tracked: u64,
}

/// The hyperparameters a resume must keep, as (metadata key, flag, value); the recipe's last.
fn hyperparameters(cfg: &TrainConfig, ds: &Dataset) -> Vec<(&'static str, &'static str, String)> {
    let mut h = vec![
        ("lr", "--lr", cfg.lr.to_string()),
        ("momentum", "--momentum", cfg.momentum.to_string()),
        ("batch_size", "--batch-size", cfg.batch_size.to_string()),
        ("seed", "--seed", cfg.seed.to_string()),
        ("shuffle", "--no-shuffle", cfg.shuffle.to_string()),
        ("dataset", "--dataset", ds.name.clone()),
    ];
    h.extend(cfg.recipe.fields());
    if cfg.recipe.lr_schedule.spans_the_run() {
        h.push(("epochs", "--epochs (which the cosine and onecycle schedules span)", cfg.epochs.to_string()));
    }
    h
}

pub(super) fn write_resumable(dir: &Path, engine: &Engine, cfg: &TrainConfig, p: &Progress) -> Result<(), String> {
    let mut meta = checkpoint_metadata(cfg, &engine.dataset, p.epochs_done);
    meta.insert("step".into(), p.step.to_string());
    meta.insert("shuffle_rng".into(), p.shuffle_rng.to_string());
    meta.insert("best_test_accuracy".into(), p.best_test_accuracy.to_string());
    save_checkpoint(&dir.join("last.safetensors"), engine, true, p.batches_tracked, meta)
}

/// Writes the network's state_dict (and with `momentum` the momentum buffers) as they are on the
/// GPU now, with `batches_tracked` as BatchNorm's num_batches_tracked.
pub(super) fn save_checkpoint(
    path: &Path,
    engine: &Engine,
    momentum: bool,
    batches_tracked: u64,
    meta: BTreeMap<String, String>,
) -> Result<(), String> {
    let (net, gpu) = (&engine.net, engine.gpu);
    let w = net.download_weights(gpu)?;
    let v = if momentum { Some(net.download_velocity(gpu)?) } else { None };
    let state = net.download_state(gpu)?;
    let c = checkpoint::Contents {
        network: &net.network,
        arena: &net.arena,
        weights: &w,
        momentum: v.as_deref(),
        state_arena: &net.state_arena,
        state: &state,
        batches_tracked,
    };
    checkpoint::save(path, &c, meta)
}

/// Parses a resumable checkpoint's metadata (`name` is the file, for errors): the progress
/// fields, and the presence of every hyperparameter a resume compares.
pub fn progress_from_metadata(name: &str, meta: &HashMap<String, String>) -> Result<Progress, String> {
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| format!("{name}: metadata field {k} is missing; not a resumable gpu-lenet checkpoint"))
    };
    let num = |k: &str| -> Result<u64, String> {
        get(k)?.trim().parse::<u64>().map_err(|_| format!("{name}: metadata field {k} is not a whole number"))
    };
    for k in ["lr", "momentum", "batch_size", "seed", "shuffle", "dataset"] {
        get(k)?;
    }
    let best = get("best_test_accuracy")?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{name}: metadata field best_test_accuracy is not a number"))?;
    let epochs_done =
        usize::try_from(num("epoch")?).map_err(|_| format!("{name}: metadata field epoch is too large"))?;
    let step = usize::try_from(num("step")?).map_err(|_| format!("{name}: metadata field step is too large"))?;
    Ok(Progress { epochs_done, step, shuffle_rng: num("shuffle_rng")?, best_test_accuracy: best, batches_tracked: 0 })
}

/// Loads `DIR/last.safetensors` for `--resume`, checking it against the flags.
pub(super) fn load_resumable(
    dir: &Path,
    cfg: &TrainConfig,
    ds: &Dataset,
    align: u64,
) -> Result<(checkpoint::Loaded, Progress), String> {
    let path = last_checkpoint(dir)?;
    let l = checkpoint::load(&path, align)?;
    let name = path.display().to_string();
    if l.momentum.is_none() {
        return Err(format!(
            "{name}: holds no momentum.* tensors; not a resumable checkpoint (use --init to start from its weights)"
        ));
    }
    let progress = progress_from_metadata(&name, &l.metadata)?;
    let mut differ = Vec::new();
    // A checkpoint written before the recipe's options were recorded used their defaults.
    let defaults = Recipe::default().fields();
    for (key, flag, now) in hyperparameters(cfg, ds) {
        let default = defaults.iter().find(|d| d.0 == key).map(|d| &d.2);
        let Some(then) = l.metadata.get(key).or(default) else { unreachable!("checked by progress_from_metadata") };
        if *then != now {
            differ.push(format!("{flag}: checkpoint {key}={then}, now {now}"));
        }
    }
    if !differ.is_empty() && !cfg.allow_changed_hyperparameters {
        return Err(format!(
            "--resume {}: hyperparameters differ from the checkpoint's ({}); pass the same flags, or \
                --allow-changed-hyperparameters to continue with the new ones",
            dir.display(),
            differ.join("; ")
        ));
    }
    check_channels(&path, &l, ds)?;
    check_model(&path, &l, cfg.model)?;
    Ok((l, progress))
}

/// What a checkpoint records of the run that wrote it: the flags `--resume` and `eval` take from
/// it when they are left out. None where the file does not say (a PyTorch export, say).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    pub model: Option<Model>,
    pub dataset: Option<DatasetKind>,
    pub data: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub seed: Option<u64>,
    pub shuffle: Option<bool>,
    pub weight_decay: Option<f32>,
    pub nesterov: Option<bool>,
    pub label_smoothing: Option<f32>,
    pub lr_schedule: Option<LrSchedule>,
    pub augment: Option<Augment>,
}

impl Recorded {
    /// Parses the fields that are present; one that does not parse is an error naming the file
    /// (`name`) and the field.
    pub fn from_metadata(name: &str, meta: &HashMap<String, String>) -> Result<Recorded, String> {
        fn field<T: std::str::FromStr>(
            name: &str,
            meta: &HashMap<String, String>,
            key: &str,
            expected: &str,
        ) -> Result<Option<T>, String> {
            meta.get(key)
                .map(|v| {
                    v.trim()
                        .parse::<T>()
                        .map_err(|_| format!("{name}: metadata field {key} is {v:?}, expected {expected}"))
                })
                .transpose()
        }
        let dataset = match meta.get("dataset") {
            None => None,
            Some(v) => Some(<DatasetKind as clap::ValueEnum>::from_str(v, false).map_err(|_| {
                format!("{name}: metadata field dataset is {v:?}, expected cifar10, fashion-mnist or synthetic")
            })?),
        };
        let model = match meta.get("model") {
            None => None,
            Some(v) => Some(<Model as clap::ValueEnum>::from_str(v, false).map_err(|_| {
                format!("{name}: metadata field model is {v:?}, expected lenet5, lenet5-bn or resnet20")
            })?),
        };
        Ok(Recorded {
            model,
            dataset,
            data: meta.get("data").map(PathBuf::from),
            epochs: field(name, meta, "epochs", "a whole number")?,
            batch_size: field(name, meta, "batch_size", "a whole number")?,
            lr: field(name, meta, "lr", "a number")?,
            momentum: field(name, meta, "momentum", "a number")?,
            seed: field(name, meta, "seed", "a whole number")?,
            shuffle: field(name, meta, "shuffle", "true or false")?,
            weight_decay: field(name, meta, "weight_decay", "a number")?,
            nesterov: field(name, meta, "nesterov", "true or false")?,
            label_smoothing: field(name, meta, "label_smoothing", "a number")?,
            lr_schedule: parsed(name, meta, "lr_schedule", LrSchedule::parse)?,
            augment: parsed(name, meta, "augment", Augment::parse)?,
        })
    }

    /// The recipe the file records, each option the default where it says nothing.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            weight_decay: self.weight_decay.unwrap_or(0.0),
            nesterov: self.nesterov.unwrap_or(false),
            label_smoothing: self.label_smoothing.unwrap_or(0.0),
            lr_schedule: self.lr_schedule.clone().unwrap_or_default(),
            augment: self.augment.unwrap_or_default(),
        }
    }

    /// The `--data` folder recorded for `kind`: only when the file was written on that data set.
    pub fn data_for(&self, kind: DatasetKind) -> Option<PathBuf> {
        (self.dataset == Some(kind)).then(|| self.data.clone()).flatten()
    }
}

/// A metadata field parsed by one of the flag parsers; its error names the file and the field.
fn parsed<T>(
    name: &str,
    meta: &HashMap<String, String>,
    key: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    meta.get(key).map(|v| parse(v).map_err(|e| format!("{name}: metadata field {key}: {e}"))).transpose()
}

/// `DIR/last.safetensors` for `--resume DIR`, or why there is none.
fn last_checkpoint(dir: &Path) -> Result<PathBuf, String> {
    if dir.is_file() {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        return Err(format!(
            "--resume {}: is a file; --resume takes the folder given to --checkpoint-dir, the one holding \
                last.safetensors (here: --resume {})",
            dir.display(),
            shell_word(&parent.display().to_string())
        ));
    }
    let path = dir.join("last.safetensors");
    if !path.exists() {
        return Err(format!(
            "--resume {}: no last.safetensors there (written by --checkpoint-dir after each epoch)",
            dir.display()
        ));
    }
    Ok(path)
}

/// What `DIR/last.safetensors` records, for `train --resume DIR` (before any data or GPU work).
pub fn recorded_for_resume(dir: &Path) -> Result<Recorded, String> {
    let path = last_checkpoint(dir)?;
    Recorded::from_metadata(&path.display().to_string(), &checkpoint::read_metadata(&path)?)
}

/// What a checkpoint records, for `eval --checkpoint FILE`; without a recorded data set, a
/// one-channel network is taken to be Fashion-MNIST's.
pub fn recorded_for_eval(path: &Path) -> Result<Recorded, String> {
    let l = checkpoint::load(path, 4)?;
    let mut r = Recorded::from_metadata(&path.display().to_string(), &l.metadata)?;
    r.model = Some(l.model);
    if r.dataset.is_none() && l.in_channels == 1 {
        r.dataset = Some(DatasetKind::FashionMnist);
    }
    Ok(r)
}

/// The command that continues an interrupted run, exactly as it can be typed: the hyperparameters
/// and the data come from the checkpoint, the outputs (`--save`, `--metrics`) from this run.
pub(super) fn resume_command(dir: &Path, cfg: &TrainConfig) -> String {
    let mut cmd = format!("gpu-lenet train --resume {}", shell_word(&dir.display().to_string()));
    for (flag, path) in [("--save", &cfg.save), ("--metrics", &cfg.metrics)] {
        if let Some(p) = path {
            cmd += &format!(" {flag} {}", shell_word(&p.display().to_string()));
        }
    }
    cmd
}

/// `s` quoted for a POSIX shell where it needs to be.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Refuses a checkpoint of another network than the one asked for, in one line naming both.
pub(super) fn check_model(path: &Path, l: &checkpoint::Loaded, model: Model) -> Result<(), String> {
    if l.model != model {
        return Err(format!(
            "{}: holds a {} network, but --model is {}; pass --model {} (or leave the flag out) to use this file",
            path.display(),
            l.model.name(),
            model.name(),
            l.model.name()
        ));
    }
    Ok(())
}
