//! How kernels see buffers: views of one tensor, uniform windows over a batch of images in one,
//! and the per-step table a recorded step selects its row of.

use super::{Dispatch, Kernel};
use crate::gpu::Gpu;

/// A range of a buffer, in 32-bit words, as a kernel sees one tensor.
#[derive(Clone, Debug)]
pub struct View {
    pub buffer: wgpu::Buffer,
    /// Byte offset; must be a multiple of the device's storage offset alignment.
    pub offset: u64,
    /// Length in 32-bit words.
    pub len: usize,
}

impl View {
    pub fn whole(buffer: &wgpu::Buffer) -> View {
        View { buffer: buffer.clone(), offset: 0, len: (buffer.size() / 4) as usize }
    }
    /// `len` words from word `start` of this view.
    pub fn slice(&self, start: usize, len: usize) -> View {
        assert!(start + len <= self.len, "a slice of {len} words from {start} of a {}-word view", self.len);
        View { buffer: self.buffer.clone(), offset: self.offset + 4 * start as u64, len }
    }
    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new((self.len.max(1) * 4) as u64),
        })
    }

    /// The same tensor bound as a uniform `array<vec4<f32>, N>`: the range rounds up to whole
    /// vec4s (the arena's alignment padding, or [`Gpu::storage_from`]'s, provides the room).
    pub fn uniform_vec4s(&self) -> View {
        let len = self.len.div_ceil(4) * 4;
        assert!(
            self.offset + (len * 4) as u64 <= self.buffer.size(),
            "a {}-word tensor bound as uniform vec4s needs its buffer padded to {} words",
            self.len,
            len
        );
        View { buffer: self.buffer.clone(), offset: self.offset, len }
    }
}

/// Bytes of slack a buffer needs after its data to be read through uniform windows (the last
/// window is bound at full size).
pub const UNIFORM_SLACK_BYTES: u64 = 65_536;

/// Uniform windows over `batch` images of `image_bytes` each, `per` images a window, starting
/// at `view`: (first image, images in the window, the binding). None when the buffer lacks the
/// room a full-size last window needs (then the caller uses its storage kernel).
pub fn image_windows(
    view: &View,
    batch: usize,
    image_bytes: u64,
    per: usize,
) -> Option<Vec<(usize, usize, wgpu::BindingResource<'_>)>> {
    if view.offset + batch as u64 * image_bytes + UNIFORM_SLACK_BYTES > view.buffer.size() {
        return None;
    }
    let windows = (0..batch)
        .step_by(per)
        .map(|b0| {
            let binding = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &view.buffer,
                offset: view.offset + b0 as u64 * image_bytes,
                size: wgpu::BufferSize::new(UNIFORM_SLACK_BYTES),
            });
            (b0, per.min(batch - b0), binding)
        })
        .collect();
    Some(windows)
}

/// The dispatches of a kernel over a batch whose per-image input `input` (`image_bytes` an image)
/// is read through uniform windows where the kernel has a windowed pipeline (`windowed`: it and
/// its images per window) and the buffer has the slack: one dispatch per window; otherwise one
/// dispatch of the storage pipeline `storage` over the whole batch. `dispatch(kernel, first
/// image, images, input binding)` makes one.
pub fn window_dispatches<'a>(
    windowed: Option<&(Kernel, usize)>,
    storage: &Kernel,
    input: &'a View,
    batch: usize,
    image_bytes: u64,
    dispatch: impl Fn(&Kernel, usize, usize, wgpu::BindingResource<'a>) -> Dispatch,
) -> Vec<Dispatch> {
    match windowed.and_then(|(k, per)| Some((k, image_windows(input, batch, image_bytes, *per)?))) {
        Some((kernel, ws)) => ws.into_iter().map(|(b0, n, window)| dispatch(kernel, b0, n, window)).collect(),
        None => vec![dispatch(storage, 0, batch, input.resource())],
    }
}

/// One row of the step table: which step this is (its metrics row), where its batch starts in
/// the epoch's permutation, the step's learning rate and momentum (a schedule's, computed on the
/// host once per epoch) and the epoch (the augmentation's random choices are keyed on it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepInfo {
    pub step: u32,
    pub start: u32,
    pub lr: f32,
    pub momentum: f32,
    pub epoch: u32,
    pub _pad: [u32; 3],
}

/// Bytes of a step table row.
const ROW: usize = std::mem::size_of::<StepInfo>();

/// The per-step values kernels read, one row per step at the device's uniform offset alignment.
/// Built once per run; a recorded step selects its row with a dynamic offset, so many steps fit
/// in one command buffer without any buffer writes between them.
pub struct StepTable {
    pub buffer: wgpu::Buffer,
    pub stride: u32,
    pub rows: usize,
}

impl StepTable {
    pub fn new(gpu: &Gpu, rows: &[StepInfo]) -> StepTable {
        let stride = gpu.limits.min_uniform_buffer_offset_alignment.max(ROW as u32);
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step table"),
            size: (rows.len().max(1) * stride as usize) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let table = StepTable { buffer, stride, rows: rows.len() };
        table.write(gpu, rows);
        table
    }

    /// Rewrites the rows (an epoch's rates); ordered before any later submit.
    pub fn write(&self, gpu: &Gpu, rows: &[StepInfo]) {
        assert!(rows.len() <= self.rows.max(1), "{} rows for a table of {}", rows.len(), self.rows);
        let mut bytes = vec![0u8; rows.len().max(1) * self.stride as usize];
        for (i, r) in rows.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + ROW].copy_from_slice(bytemuck::bytes_of(r));
        }
        gpu.queue.write_buffer(&self.buffer, 0, &bytes);
    }

    /// The rows of `steps` consecutive steps of `batch` samples each, at a constant rate.
    pub fn sequential_rows(steps: usize, batch: usize, lr: f32, momentum: f32) -> Vec<StepInfo> {
        (0..steps)
            .map(|s| StepInfo { step: s as u32, start: (s * batch) as u32, lr, momentum, ..Default::default() })
            .collect()
    }

    /// A table for `steps` consecutive steps of `batch` samples each, at a constant rate.
    pub fn sequential(gpu: &Gpu, steps: usize, batch: usize, lr: f32, momentum: f32) -> StepTable {
        StepTable::new(gpu, &Self::sequential_rows(steps, batch, lr, momentum))
    }

    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: 0,
            size: wgpu::BufferSize::new(ROW as u64),
        })
    }

    /// The dynamic offset that selects row `step`.
    pub fn offset(&self, step: usize) -> u32 {
        step as u32 * self.stride
    }
}
