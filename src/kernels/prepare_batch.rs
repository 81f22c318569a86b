//! prepare_batch: the data set lives on the GPU as bytes; this kernel gathers a batch through
//! the epoch's permutation, pads, converts and normalises it. Also owns the upload of a split.

use super::{grid_1d, Dispatch, Kernel, Slot, StepTable, View};
use crate::data::augment::{self, Augment};
use crate::data::{Dataset, Split};
use crate::gpu::Gpu;
use crate::model::IMAGE;

pub const MAX_CHUNKS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub total: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub _pad: u32,
}

/// One split of a data set resident on the GPU.
#[derive(Debug)]
pub struct GpuSplit {
    pub chunks: Vec<wgpu::Buffer>,
    pub labels: wgpu::Buffer,
    pub per_chunk: usize,
    pub len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pad: usize,
}

impl GpuSplit {
    /// Uploads the images as raw bytes, split into whole-image chunks that each fit the
    /// adapter's storage binding limit.
    pub fn upload(gpu: &Gpu, ds: &Dataset, split: &Split, what: &str) -> Result<GpuSplit, String> {
        let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size) as usize;
        Self::upload_with_limit(gpu, ds, split, what, limit)
    }

    /// [`GpuSplit::upload`] with an explicit per-buffer byte limit (tests force several chunks).
    pub fn upload_with_limit(
        gpu: &Gpu,
        ds: &Dataset,
        split: &Split,
        what: &str,
        limit: usize,
    ) -> Result<GpuSplit, String> {
        let record = ds.record();
        if !record.is_multiple_of(4) {
            return Err(format!("{what}: image records of {record} bytes are not a multiple of 4"));
        }
        let per_chunk = (limit / record).max(1);
        let n = split.len();
        let nchunks = n.div_ceil(per_chunk).max(1);
        if nchunks > MAX_CHUNKS {
            return Err(format!(
                "{what}: {n} images ({} MiB) need {nchunks} buffers at this adapter's {} MiB binding limit; at most \
                    {MAX_CHUNKS} are supported",
                (n * record) >> 20,
                limit >> 20
            ));
        }
        let chunks = (0..nchunks)
            .map(|c| {
                let lo = c * per_chunk * record;
                let hi = ((c + 1) * per_chunk * record).min(split.images.len());
                let bytes = &split.images[lo..hi];
                let buf = gpu.storage(&format!("{what} images {c}"), bytes.len() / 4);
                gpu.queue.write_buffer(&buf, 0, bytes);
                buf
            })
            .collect();
        let labels: Vec<u32> = split.labels.iter().map(|&l| l as u32).collect();
        Ok(GpuSplit {
            chunks,
            labels: gpu.storage_from(&format!("{what} labels"), &labels),
            per_chunk,
            len: n,
            channels: ds.channels,
            height: ds.height,
            width: ds.width,
            pad: ds.pad,
        })
    }
}

/// The batch-preparation pipeline for one uploaded split's layout.
pub struct PrepareBatch {
    kernel: Kernel,
    channels: usize,
    chunks: usize,
}

impl PrepareBatch {
    /// Without augmentation (evaluation, tests of the plain gather).
    pub fn new(gpu: &Gpu, split: &GpuSplit) -> Self {
        Self::augmented(gpu, split, Augment::default())
    }

    /// With `augment` applied to every sample (a training split).
    pub fn augmented(gpu: &Gpu, split: &GpuSplit, augment: Augment) -> Self {
        let mut slots = vec![Slot::Uniform, Slot::UniformDynamic, Slot::Read, Slot::Read];
        slots.extend([Slot::Read; MAX_CHUNKS]);
        slots.extend([Slot::ReadWrite, Slot::ReadWrite]);
        let kernel = Kernel::with_constants(
            gpu,
            "prepare_batch",
            include_str!("../../shaders/prepare_batch.wgsl"),
            "main",
            &slots,
            &[
                ("CHANNELS", split.channels as f64),
                ("SRC_H", split.height as f64),
                ("SRC_W", split.width as f64),
                ("PAD", split.pad as f64),
                ("DST", IMAGE as f64),
                ("PER_CHUNK", split.per_chunk as f64),
                ("CHUNKS", split.chunks.len() as f64),
                ("CROP", augment.crop as f64),
                ("FLIP", augment.flip as u8 as f64),
            ],
        );
        PrepareBatch { kernel, channels: split.channels, chunks: split.chunks.len() }
    }

    /// Gathers `batch` samples starting at the step table's `start` in `perm` into `x`
    /// ([batch, C, 32, 32], normalised) and `labels`. `split` must have the layout the pipeline
    /// was built for. The augmentation's choices are keyed on `seed`, the step's epoch and the sample.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        split: &GpuSplit,
        perm: &View,
        steps: &StepTable,
        batch: usize,
        seed: u64,
        x: &View,
        labels: &View,
    ) -> Dispatch {
        assert_eq!(
            (split.channels, split.chunks.len()),
            (self.channels, self.chunks),
            "prepare_batch built for another layout"
        );
        let total = batch * split.channels * IMAGE * IMAGE;
        let params = gpu.uniform(
            "prepare_batch params",
            &Params { total: total as u32, seed_lo: seed as u32, seed_hi: (seed >> 32) as u32, _pad: 0 },
        );
        let chunk_views: Vec<View> =
            (0..MAX_CHUNKS).map(|c| View::whole(&split.chunks[c.min(split.chunks.len() - 1)])).collect();
        let lv = View::whole(&split.labels);
        let mut res = vec![params.as_entire_binding(), steps.resource(), perm.resource(), lv.resource()];
        res.extend(chunk_views.iter().map(|v| v.resource()));
        res.push(x.resource());
        res.push(labels.resource());
        // One invocation per 16 outputs (QUADS in the shader; rows are 32 wide).
        self.kernel.bind(gpu, &res, grid_1d(total / 16))
    }
}

/// CPU reference: the normalised, padded batch and its labels for samples perm[start..start+batch].
pub fn reference(ds: &Dataset, split: &Split, perm: &[u32], start: usize, batch: usize) -> (Vec<f32>, Vec<u32>) {
    reference_augmented(ds, split, perm, start, batch, Augment::default(), 0, 0)
}

/// [`reference`] with `augment`'s crop and flip, drawn for (seed, epoch, sample).
#[allow(clippy::too_many_arguments)]
pub fn reference_augmented(
    ds: &Dataset,
    split: &Split,
    perm: &[u32],
    start: usize,
    batch: usize,
    augment: Augment,
    seed: u64,
    epoch: u32,
) -> (Vec<f32>, Vec<u32>) {
    let (c, h, w, pad) = (ds.channels, ds.height as i64, ds.width as i64, ds.pad as i64);
    let mut x = Vec::with_capacity(batch * c * IMAGE * IMAGE);
    let mut labels = Vec::with_capacity(batch);
    for b in 0..batch {
        let s = perm[start + b] as usize;
        let img = &split.images[s * ds.record()..(s + 1) * ds.record()];
        let (dy, dx, flip) = augment::choices(augment, seed, epoch, s as u32);
        let (dy, dx, crop) = (dy as i64, dx as i64, augment.crop as i64);
        for ch in 0..c as i64 {
            for y in 0..IMAGE as i64 {
                for xx in 0..IMAGE as i64 {
                    // The output pixel's column before the flip, then its place in the padded
                    // 32x32 image the crop window sits in, then in the stored image.
                    let fx = if flip { IMAGE as i64 - 1 - xx } else { xx };
                    let (sy, sx) = (y + dy - crop - pad, fx + dx - crop - pad);
                    let inside = sy >= 0 && sx >= 0 && sy < h && sx < w;
                    let raw = if inside { img[((ch * h + sy) * w + sx) as usize] } else { 0 };
                    x.push((raw as f32 / 255.0 - 0.5) / 0.5);
                }
            }
        }
        labels.push(split.labels[s] as u32);
    }
    (x, labels)
}
