//! What a run reports: the epoch line's numbers and their `--metrics` JSON lines, the progress
//! bar, the per-class accuracy table, and the `eval` command with its confusion matrix.

use super::confusion::Confusion;
use super::resume::{check_channels, check_model};
use super::Engine;
use crate::checkpoint;
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::model::CLASSES;
use std::io::Write;
use std::path::Path;

/// Per-class accuracy from predictions and labels.
pub fn per_class(preds: &[u32], labels: &[u8]) -> Vec<(usize, usize)> {
    let mut c = vec![(0usize, 0usize); CLASSES];
    for (&p, &l) in preds.iter().zip(labels) {
        c[l as usize].1 += 1;
        if p == l as u32 {
            c[l as usize].0 += 1;
        }
    }
    c
}

pub fn print_per_class(ds: &Dataset, preds: &[u32]) {
    for (i, (hit, total)) in per_class(preds, &ds.test.labels).iter().enumerate() {
        let name = ds.class_names.get(i).map(String::as_str).unwrap_or("?");
        if *total == 0 {
            println!("Accuracy for class: {name:<11} has no test images");
        } else {
            println!("Accuracy for class: {name:<11} is {:.1} %", 100.0 * *hit as f64 / *total as f64);
        }
    }
}

/// One epoch's numbers, as printed and as written to `--metrics`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
}

/// What `eval` measures, as `eval --json` writes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    pub checkpoint: String,
    pub dataset: String,
    pub adapter: String,
    pub test_loss: f64,
    /// The label smoothing the test loss was computed with (the checkpoint's training loss).
    pub label_smoothing: f64,
    pub test_accuracy: f64,
    pub correct: u64,
    pub count: u64,
    pub classes: Vec<String>,
    /// Per true class: correct / images (null for a class without test images).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][predicted]`: test images.
    pub confusion: Vec<Vec<u64>>,
}

/// The whole `eval` command: prints the report (or with `json` the JSON) and returns it. The
/// test loss is the training criterion's: `label_smoothing` is the one the checkpoint records.
pub fn evaluate_checkpoint(
    gpu: &Gpu,
    ds: Dataset,
    model: crate::nn::Model,
    checkpoint_path: &Path,
    batch_size: usize,
    label_smoothing: f32,
    json: bool,
) -> Result<Evaluation, String> {
    let l = checkpoint::load(checkpoint_path, gpu.storage_alignment())?;
    check_channels(checkpoint_path, &l, &ds)?;
    check_model(checkpoint_path, &l, model)?;
    let rule = crate::nn::StepRule { label_smoothing, ..Default::default() };
    let engine = Engine::new(gpu, ds, model, batch_size, &super::Setup { rule, ..Default::default() }, false)?;
    engine.upload_weights(&l.weights, None);
    engine.net.upload_state(gpu, &l.state);
    let (t, preds) = engine.evaluate(true)?;
    let ds = &engine.dataset;
    let confusion = Confusion::new(CLASSES, &preds, &ds.test.labels);
    let e = Evaluation {
        checkpoint: checkpoint_path.display().to_string(),
        dataset: ds.name.clone(),
        adapter: gpu.describe(),
        test_loss: t.mean_loss(),
        label_smoothing: decimal(label_smoothing),
        test_accuracy: t.accuracy(),
        correct: t.correct as u64,
        count: t.count as u64,
        classes: (0..CLASSES).map(|i| ds.class_names.get(i).cloned().unwrap_or_else(|| "?".into())).collect(),
        per_class_accuracy: confusion
            .per_class()
            .iter()
            .map(|&(hit, total)| (total > 0).then(|| hit as f64 / total as f64))
            .collect(),
        confusion: (0..CLASSES).map(|c| confusion.row(c).to_vec()).collect(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&e).map_err(|e| e.to_string())?);
        return Ok(e);
    }
    let smoothing = if label_smoothing > 0.0 { format!(" (label smoothing {label_smoothing})") } else { String::new() };
    println!(
        "Test loss{smoothing}: {:.4}, Test accuracy: {:.2}% ({} of {} images) on {}",
        e.test_loss,
        100.0 * e.test_accuracy,
        e.correct,
        e.count,
        e.adapter
    );
    print_per_class(ds, &preds);
    print!("{}", confusion.render(&e.classes));
    Ok(e)
}

/// `x` as the decimal it prints as (0.1, not 0.10000000149011612): what the user typed.
pub fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Appends one epoch's report to the `--metrics` file as a JSON line.
/// One JSON object per epoch: the report, then the run's options.
pub(super) fn append_metrics(path: &Path, report: &EpochReport, cfg: &super::TrainConfig) -> Result<(), String> {
    let mut row = serde_json::to_value(report).map_err(|e| e.to_string())?;
    if let Some(obj) = row.as_object_mut() {
        let mut put = |k: &str, v: serde_json::Value| obj.insert(k.to_string(), v);
        put("model", cfg.model.name().into());
        put("batch_size", cfg.batch_size.into());
        put("base_lr", cfg.lr.into());
        put("momentum", cfg.momentum.into());
        put("seed", cfg.seed.into());
        put("weight_decay", decimal(cfg.recipe.weight_decay).into());
        put("nesterov", cfg.recipe.nesterov.into());
        put("label_smoothing", decimal(cfg.recipe.label_smoothing).into());
        put("lr_schedule", cfg.recipe.lr_schedule.to_string().into());
        put("augment", cfg.recipe.augment.to_string().into());
    }
    let line = serde_json::to_string(&row).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("--metrics {}: cannot open for appending: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("--metrics {}: cannot write: {e}", path.display()))
}

/// The bar an epoch shows while it trains (hidden unless `show`: stdout is a terminal).
pub(super) fn epoch_bar(show: bool, epoch: usize, steps: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(steps as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("Epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_prefix(epoch.to_string());
    b
}
