//! conv2d_backward_weight: weight and bias gradients of a convolution, as partial sums over
//! chunks of the batch followed by a fixed-order reduction (no float atomics).
//!
//! This module holds the pipeline pair of one layer and its plain partials kernel; subgroup.rs the
//! subgroup variant's choices and source, pooled.rs the variant with the max-pool's backward fused
//! in, partials.rs the binding of the partials and the reduction both share, reference.rs the CPU
//! reference.

mod partials;
mod pooled;
mod reference;
mod subgroup;

pub use partials::BackwardWeightDispatch;
pub use pooled::Conv2dBackwardWeightPooled;
pub use reference::reference;

use super::conv2d_forward::ConvShape;
use super::{image_windows, shared_uniform_windows, uniform_input, Kernel, Slot, View, UNIFORM_SLACK_BYTES};
use crate::gpu::Gpu;
use partials::{bind_partials, reduce_kernel, Partial};
use subgroup::{run_length, subgroup_source};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub chunk: u32,
    pub chunks: u32,
    /// First chunk of this dispatch of the partials pass.
    pub c0: u32,
    /// First image of the bound range of x.
    pub x_b0: u32,
    /// Blocks of output rows per image (plain kernel; chunk c is block c % row_blocks of
    /// image c / row_blocks when > 1, and `chunk` is then 1).
    pub row_blocks: u32,
    /// Where db starts, in words from dw's start, when the partials sum in place (IN_PLACE).
    pub db_off: u32,
    pub _pad: u32,
}

/// Images per partial sum, and the number of partials. One image per workgroup keeps every
/// core busy at LeNet's channel counts; depends only on the batch size.
pub fn chunking(batch: usize) -> (usize, usize) {
    (1, batch.max(1))
}

/// At most this many output rows per chunk of the plain kernel (the blocks are then evened out:
/// conv2's 10 rows at 7 make 2 blocks of 5). On a GPU a chunk of a whole image leaves a few
/// hundred lanes each looping over every pixel (conv1: 784); blocks of rows give it thousands of
/// short loops (H200: 7 rows 0.052 + 0.025 ms for conv1 + conv2, whole images 0.064 + 0.021, 4
/// rows 0.062 + 0.029, `scripts/gpu_tune.sh`). On a CPU adapter (llvmpipe, a few cores) whole
/// images. `GPU_LENET_WG_ROWS` overrides it (for measuring).
fn rows_per_chunk(gpu: &Gpu, s: ConvShape) -> usize {
    super::per_adapter(gpu, "GPU_LENET_WG_ROWS", |r| r > 0, s.oh(), 7).min(s.oh())
}

/// A weight-gradient pipeline pair specialised to one layer's shape (any batch size).
pub struct Conv2dBackwardWeight {
    partials: Kernel,
    /// The partials kernel reading x and dy through uniform windows, with the images per window
    /// (llvmpipe: a storage load of dy in the inner loop was half of the kernel's time).
    windowed: Option<(Kernel, usize)>,
    /// Output-row blocks per image of the plain kernel (see [`rows_per_chunk`]).
    row_blocks: usize,
    /// Whether the windowed kernel sums a whole window per workgroup (one partial per window,
    /// lanes spread over workgroups of one 8-lane subgroup) rather than one image per workgroup:
    /// far fewer partials for the reduction to read (on llvmpipe the reduction, a storage load
    /// per partial and lane, was 30% of conv2's weight gradient).
    window_chunks: bool,
    reduce: Kernel,
    shape: ConvShape,
}

impl Conv2dBackwardWeight {
    /// `s.batch` is ignored: the batch is chosen per bind.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Self {
        Self::with_options(gpu, s, Self::subgroups_pay(gpu))
    }

    /// With the choice of the subgroup variant of the partials pass (tests run both; it needs
    /// [`Conv2dBackwardWeight::subgroups_usable`]).
    pub fn with_options(gpu: &Gpu, s: ConvShape, subgroup: bool) -> Self {
        Self::build(gpu, s, subgroup, rows_per_chunk(gpu, s))
    }

    /// The plain variant with `rows` output rows per chunk (tests check awkward blocks on any
    /// adapter; where uniform windows are used, they take whole images).
    pub fn with_rows(gpu: &Gpu, s: ConvShape, rows: usize) -> Self {
        Self::build(gpu, s, false, rows.clamp(1, s.oh()))
    }

    fn build(gpu: &Gpu, s: ConvShape, subgroup: bool, rows: usize) -> Self {
        assert!(s.kw <= 16, "conv2d_backward_weight supports kernel widths up to 16");
        assert!(!subgroup || Self::subgroups_usable(gpu), "this adapter cannot run the subgroup variant");
        let src = include_str!("../../../shaders/conv2d_backward_weight.wgsl");
        let constants = s.constants(&[]);
        let window_chunks = subgroup && super::subgroup_sharing(gpu, 8);
        let (name, windowed_name, psrc, pconsts, wconsts) = if subgroup {
            let with_wg =
                |wg| s.constants(&[("WG", wg), ("CO_TILE", Self::co_tile(s, true)), ("RUN", run_length(s.ow()))]);
            (
                "conv2d_backward_weight.partials_subgroup",
                if window_chunks {
                    "conv2d_backward_weight.partials_subgroup.uniform_x_dy.per_window"
                } else {
                    "conv2d_backward_weight.partials_subgroup.uniform_x_dy"
                },
                subgroup_source(s, run_length(s.ow())),
                with_wg(Self::lanes_per_group(s, true)),
                with_wg(if window_chunks { 8 } else { Self::lanes_per_group(s, true) }),
            )
        } else {
            (
                "conv2d_backward_weight.partials",
                "conv2d_backward_weight.partials.uniform_x_dy",
                src.to_string(),
                constants.clone(),
                constants.clone(),
            )
        };
        let partials = Kernel::with_constants(
            gpu,
            name,
            &psrc,
            "partials",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
            &pconsts,
        );
        let windowed = shared_uniform_windows(gpu, &[4 * s.cin * s.h * s.w, 4 * s.cout * s.oh() * s.ow()]).map(|per| {
            let wsrc = uniform_input(&uniform_input(&psrc, "x", 2, UNIFORM_SLACK_BYTES), "dy", 1, UNIFORM_SLACK_BYTES);
            (
                Kernel::with_constants(
                    gpu,
                    windowed_name,
                    &wsrc,
                    "partials",
                    &[Slot::Uniform, Slot::Uniform, Slot::Uniform, Slot::ReadWrite],
                    &wconsts,
                ),
                per,
            )
        });
        let reduce = reduce_kernel(gpu, s);
        let row_blocks = if subgroup { 1 } else { s.oh().div_ceil(rows) };
        Conv2dBackwardWeight { partials, windowed, window_chunks, row_blocks, reduce, shape: s }
    }

    /// Bytes of partial sums per image (the scratch `bind` allocates is this times the batch, or
    /// less with uniform windows).
    pub fn scratch_bytes_per_image(&self) -> usize {
        4 * self.row_blocks * (self.shape.weight_len() + self.shape.cout)
    }

    /// Which variant of the partials pass this pipeline uses.
    pub fn variant(&self) -> &'static str {
        self.partials.name
    }

    /// `dw` and `db` are overwritten (not accumulated into).
    pub fn bind(&self, gpu: &Gpu, batch: usize, dy: &View, x: &View, dw: &View, db: &View) -> BackwardWeightDispatch {
        let s = self.shape;
        // The plain kernel has a lane for the bias; the subgroup kernel sums it in every lane.
        let subgroup = self.partials.name.contains("subgroup");
        let lanes = s.cin * s.kh + (!subgroup) as usize;
        let co_groups = s.cout.div_ceil(Self::co_tile(s, subgroup)) as u32;
        let (x_bytes, dy_bytes) = ((4 * s.cin * s.h * s.w) as u64, (4 * s.cout * s.oh() * s.ow()) as u64);
        // x's and dy's windows cover the same images.
        let windows = self.windowed.as_ref().and_then(|(k, per)| {
            Some((k, *per, image_windows(x, batch, x_bytes, *per)?, image_windows(dy, batch, dy_bytes, *per)?))
        });
        // (images a chunk, chunks, row blocks an image, the partials dispatches)
        let (chunk, chunks, row_blocks, grids): (usize, usize, usize, Vec<Partial>) = match windows {
            // One chunk per window: chunk k is window k's images, k * per onwards.
            Some((kernel, per, xs, dys)) if self.window_chunks => {
                let n = xs.len();
                let grid = [lanes.div_ceil(8) as u32, co_groups, 1];
                (
                    per,
                    n,
                    1,
                    xs.into_iter()
                        .zip(dys)
                        .enumerate()
                        .map(|(k, ((b0, _, xw), (_, _, dyw)))| (kernel, grid, k, b0, [dyw, xw], None))
                        .collect(),
                )
            }
            // One image per chunk, so a window of images is a run of chunks.
            Some((kernel, _, xs, dys)) => {
                let grid = |n: usize| [lanes.div_ceil(Self::lanes_per_group(s, subgroup)) as u32, co_groups, n as u32];
                (
                    1,
                    batch.max(1),
                    1,
                    xs.into_iter()
                        .zip(dys)
                        .map(|((b0, n, xw), (_, _, dyw))| (kernel, grid(n), b0, b0, [dyw, xw], None))
                        .collect(),
                )
            }
            None => {
                let (chunk, chunks) = chunking(batch);
                // Chunks (images times row blocks) on the z dimension, several dispatches where
                // they outnumber the adapter's limit per dimension.
                let chunks = chunks * self.row_blocks;
                let lane_groups = lanes.div_ceil(Self::lanes_per_group(s, subgroup)) as u32;
                let max_z = (gpu.limits.max_compute_workgroups_per_dimension as usize).max(1);
                let grids = (0..chunks)
                    .step_by(max_z)
                    .map(|c0| {
                        (
                            &self.partials,
                            [lane_groups, co_groups, (chunks - c0).min(max_z) as u32],
                            c0,
                            0,
                            [dy.resource(), x.resource()],
                            None,
                        )
                    })
                    .collect();
                (chunk, chunks, self.row_blocks, grids)
            }
        };
        bind_partials(gpu, &self.reduce, s, batch, (chunk, chunks, row_blocks), grids, dw, db, false)
    }

    /// The input variant `bind` uses on this adapter.
    pub fn input(&self) -> super::conv2d_forward::Input {
        super::conv2d_forward::Input::used(self.windowed.is_some())
    }
}
