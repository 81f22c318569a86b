//! `predict`: what a checkpoint makes of pictures. Each PNG or JPEG (any size) is prepared as
//! torchvision would prepare it for that network: `convert("RGB")` (or `convert("L")` for a
//! one-channel Fashion-MNIST network), `Resize((H, W))` with Pillow's antialiased bilinear
//! filter, the training images' zero padding; then the batch kernel normalises it and the
//! network's forward pass gives the logits, whose softmax is the answer.

pub mod resize;

use crate::checkpoint;
use crate::data::{Dataset, DatasetKind, Split};
use crate::gpu::Gpu;
use crate::model::CLASSES;
use crate::train::{Engine, Recorded, Setup};
use std::path::{Path, PathBuf};

/// One picture's answer: the classes, most probable first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Prediction {
    pub file: String,
    pub top: Vec<ClassProbability>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub index: usize,
    pub probability: f64,
}

/// The stored image a network of this data set takes: channels, height, width, padding.
fn input_of(kind: DatasetKind) -> (usize, usize, usize, usize) {
    match kind {
        DatasetKind::FashionMnist => (1, 28, 28, 2),
        DatasetKind::Cifar10 | DatasetKind::Synthetic => (3, 32, 32, 0),
    }
}

/// Reads `path` and prepares it as one stored record of `channels` x `h` x `w` bytes.
pub fn load_picture(path: &Path, channels: usize, h: usize, w: usize) -> Result<Vec<u8>, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let format = image::guess_format(&bytes)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or_else(|| format!("{name}: not a PNG or JPEG picture"))?;
    let picture = image::load_from_memory_with_format(&bytes, format)
        .map_err(|e| format!("{name}: cannot decode the {format:?} picture: {e}"))?;
    // Pillow's convert("RGB") drops the alpha channel; grayscale pictures repeat their value.
    let rgb = picture.to_rgb8();
    let (pw, ph) = (rgb.width() as usize, rgb.height() as usize);
    let (pixels, c) = if channels == 1 { (resize::luma(rgb.as_raw()), 1) } else { (rgb.into_raw(), 3) };
    let resized = resize::bilinear(&pixels, c, pw, ph, w, h);
    // Interleaved (H, W, C) to planar (C, H, W), as the data sets store images.
    let mut record = vec![0u8; c * h * w];
    for (i, px) in resized.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            record[ch * h * w + i] = v;
        }
    }
    Ok(record)
}

/// The data set a checkpoint was trained on: what it records, else its input channels.
fn dataset_of(recorded: &Recorded, in_channels: usize) -> DatasetKind {
    recorded.dataset.unwrap_or(if in_channels == 1 { DatasetKind::FashionMnist } else { DatasetKind::Cifar10 })
}

/// Classifies `pictures` with the network in `checkpoint_path`; `top` classes each.
pub fn predict(gpu: &Gpu, checkpoint_path: &Path, pictures: &[PathBuf], top: usize) -> Result<Vec<Prediction>, String> {
    let l = checkpoint::load(checkpoint_path, gpu.storage_alignment())?;
    let recorded = Recorded::from_metadata(&checkpoint_path.display().to_string(), &l.metadata)?;
    let kind = dataset_of(&recorded, l.in_channels);
    let (channels, h, w, pad) = input_of(kind);
    if channels != l.in_channels {
        return Err(format!(
            "{}: the network takes {} input channel(s) but records the data set {}, whose images have {channels}",
            checkpoint_path.display(),
            l.in_channels,
            kind.name()
        ));
    }
    let class_names = crate::data::class_names(kind);
    let mut records = Vec::with_capacity(pictures.len());
    for p in pictures {
        records.push(load_picture(p, channels, h, w)?);
    }
    let mut answers = Vec::with_capacity(pictures.len());
    // One engine per batch of pictures: its test split is the batch, its one step the forward pass.
    const BATCH: usize = 64;
    for (chunk, names) in records.chunks(BATCH).zip(pictures.chunks(BATCH)) {
        let ds = Dataset {
            name: kind.name().into(),
            source: "the pictures given to predict".into(),
            channels,
            height: h,
            width: w,
            pad,
            class_names: class_names.clone(),
            train: Split { images: Vec::new(), labels: Vec::new() },
            test: Split { images: chunk.concat(), labels: vec![0; chunk.len()] },
        };
        let engine = Engine::new(gpu, ds, l.model, chunk.len(), &Setup::default(), false)?;
        engine.upload_weights(&l.weights, None);
        engine.net.upload_state(gpu, &l.state);
        engine.evaluate(false)?;
        let logits = engine.last_test_logits()?;
        for (row, file) in logits.chunks_exact(CLASSES).zip(names) {
            answers.push(Prediction { file: file.display().to_string(), top: ranked(row, &class_names, top) });
        }
    }
    Ok(answers)
}

/// The softmax of `logits` (in f64), the `top` largest first (ties: the lower index).
pub fn ranked(logits: &[f32], names: &[String], top: usize) -> Vec<ClassProbability> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let exp: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(top)
        .map(|i| ClassProbability {
            class: names.get(i).cloned().unwrap_or_else(|| format!("class {i}")),
            index: i,
            probability: exp[i] / total,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_is_the_softmax_largest_first() {
        let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        let r = ranked(&[1.0, 3.0, 3.0, -2.0], &names, 3);
        assert_eq!(r.iter().map(|c| c.index).collect::<Vec<_>>(), vec![1, 2, 0]);
        let z = 1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp();
        assert!((r[0].probability - 3f64.exp() / z).abs() < 1e-12);
        assert!((r[2].probability - 1f64.exp() / z).abs() < 1e-12);
    }
}
