//! `show-batch`: training images exactly as the network receives them (the batch-preparation
//! kernel's output, augmentation included), de-normalised for display, in a grid with each
//! image's class name under it.

use super::{register_font, FONT_FAMILY};
use crate::data::augment::Augment;
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::kernels::prepare_batch::{GpuSplit, PrepareBatch};
use crate::kernels::{StepInfo, StepTable, View};
use crate::model::IMAGE;
use plotters::prelude::*;

/// Runs the batch-preparation kernel once: the first `count` samples of `order` in epoch
/// `epoch` (0-based), as the training step sees them: normalised pixels [count x C x 32 x 32]
/// and labels.
pub fn prepare_on_gpu(
    gpu: &Gpu,
    ds: &Dataset,
    augment: Augment,
    seed: u64,
    epoch: u32,
    order: &[u32],
    count: usize,
) -> Result<(Vec<f32>, Vec<u32>), String> {
    let split = GpuSplit::upload(gpu, ds, &ds.train, "training set")?;
    let kernel = PrepareBatch::augmented(gpu, &split, augment);
    let perm = gpu.storage_from("show-batch order", order);
    let table = StepTable::new(gpu, &[StepInfo { step: 0, start: 0, epoch, ..Default::default() }]);
    let x = gpu.storage("show-batch pixels", count * ds.channels * IMAGE * IMAGE);
    let labels = gpu.storage("show-batch labels", count);
    let d = kernel.bind(gpu, &split, &View::whole(&perm), &table, count, seed, &View::whole(&x), &View::whole(&labels));
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass, table.offset(0));
    }
    gpu.queue.submit([enc.finish()]);
    gpu.check()?;
    Ok((gpu.read_words(&x, 0, count * ds.channels * IMAGE * IMAGE)?, gpu.read_words(&labels, 0, count)?))
}

pub const SCALE: usize = 3;
const TILE: usize = IMAGE * SCALE;
const GAP: usize = 8;
const CAPTION: usize = 22;

/// Where image `i` of a grid of `columns` sits: its top-left pixel; each pixel of the 32x32
/// image is a `SCALE` x `SCALE` block, its class name under it.
pub fn tile_origin(i: usize, columns: usize) -> (usize, usize) {
    (GAP + (i % columns) * (TILE + GAP), GAP + (i / columns) * (TILE + CAPTION + GAP))
}

/// The grid picture of `images` (normalised, [n x channels x 32 x 32]): width, height, RGB.
pub fn render(
    images: &[f32],
    labels: &[u32],
    channels: usize,
    names: &[String],
    columns: usize,
) -> Result<(u32, u32, Vec<u8>), String> {
    register_font()?;
    let n = labels.len();
    let cols = columns.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (w, h) = (GAP + cols * (TILE + GAP), GAP + rows * (TILE + CAPTION + GAP));
    let mut rgb = vec![255u8; w * h * 3];
    for i in 0..n {
        let (x0, y0) = tile_origin(i, cols);
        let img = &images[i * channels * IMAGE * IMAGE..(i + 1) * channels * IMAGE * IMAGE];
        for y in 0..TILE {
            for x in 0..TILE {
                let p = (y / SCALE) * IMAGE + x / SCALE;
                let at = ((y0 + y) * w + x0 + x) * 3;
                for c in 0..3 {
                    // Normalize((0.5,), (0.5,)) undone: v * 0.5 + 0.5, in [0, 1].
                    let v = img[(c % channels) * IMAGE * IMAGE + p];
                    rgb[at + c] = ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w as u32, h as u32)).into_drawing_area();
        let style = TextStyle::from((FONT_FAMILY, 14).into_font()).color(&BLACK);
        for (i, &label) in labels.iter().enumerate() {
            let (x0, y0) = tile_origin(i, cols);
            let name = names.get(label as usize).map(String::as_str).unwrap_or("?");
            root.draw(&Text::new(name.to_string(), (x0 as i32, (y0 + TILE + 6) as i32), style.clone()))
                .map_err(|e| format!("drawing the labels: {e}"))?;
        }
        root.present().map_err(|e| format!("drawing the labels: {e}"))?;
    }
    Ok((w as u32, h as u32, rgb))
}
