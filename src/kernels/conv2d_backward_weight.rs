//! conv2d_backward_weight: weight and bias gradients of a convolution, as partial sums over
//! chunks of the batch followed by a fixed-order reduction (no float atomics).

use super::conv2d_forward::ConvShape;
use super::{
    image_windows, pooled_argmax_input, shared_uniform_windows, uniform_input, unroll, with_const, Dispatch, Kernel,
    Slot, View, UNIFORM_SLACK_BYTES,
};
use crate::gpu::Gpu;

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

/// Output pixels per round of the subgroup kernel: the row in equal rounds of at most 16.
fn run_length(ow: usize) -> usize {
    ow.div_ceil(ow.div_ceil(16)).max(1)
}

/// Pixels per round of the pooled variant: even (a round covers whole 2x2 windows), at most 16.
fn pooled_run_length(ow: usize) -> usize {
    let run = run_length(ow);
    run + run % 2
}

/// The subgroup kernel's source with its arrays sized exactly for this shape and round length
/// and its loop over output channels unrolled.
fn subgroup_source(s: ConvShape, run: usize) -> String {
    let src = include_str!("../../shaders/conv2d_backward_weight_subgroup.wgsl");
    let co_tile = Conv2dBackwardWeight::co_tile(s, true);
    let sizes = [("CO_N", co_tile), ("KW_N", s.kw), ("SEG_N", run + s.kw - 1)];
    let src = sizes.iter().fold(src.to_string(), |src, &(name, n)| with_const(&src, name, n));
    unroll(&unroll(&src, "t", "CO_TILE", co_tile), "r", "ROUNDS", s.ow().div_ceil(run))
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

/// The dispatches of one weight-gradient computation (partials, one per uniform window of x
/// where used, then the reduction, unless the partials sum in place), plus the scratch they share.
pub struct BackwardWeightDispatch {
    pub partials: Vec<Dispatch>,
    pub reduce: Option<Dispatch>,
    pub scratch: Option<wgpu::Buffer>,
}

impl BackwardWeightDispatch {
    /// Every dispatch, in order.
    pub fn all(&self) -> Vec<&Dispatch> {
        self.partials.iter().chain(&self.reduce).collect()
    }
}

impl Conv2dBackwardWeight {
    /// `s.batch` is ignored: the batch is chosen per bind.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Self {
        Self::with_options(gpu, s, Self::subgroups_pay(gpu))
    }

    /// Whether `new` picks the subgroup variant: where it is usable, on a CPU adapter (measured
    /// there, see `co_tile`); on a GPU its lanes loop over whole images like the plain kernel
    /// without row blocks. `GPU_LENET_WG_SUBGROUP=1` forces it where usable (for measuring).
    pub fn subgroups_pay(gpu: &Gpu) -> bool {
        Self::subgroups_usable(gpu) && super::per_adapter(gpu, "GPU_LENET_WG_SUBGROUP", |n| n <= 1, 1, 0) == 1
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
        let src = include_str!("../../shaders/conv2d_backward_weight.wgsl");
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

    /// The subgroup variant needs what every load-sharing kernel needs (subgroups of a multiple
    /// of 8 lanes, `GPU_LENET_NO_SUBGROUPS` unset), for its workgroups of up to 32 lanes.
    pub fn subgroups_usable(gpu: &Gpu) -> bool {
        super::subgroup_sharing(gpu, 32)
    }

    /// Workgroup width of the partials pass: 32 for the plain kernel; for the subgroup kernel
    /// CIN*KH lanes rounded up to a multiple of 8 (at most 32), so that few lanes idle.
    fn lanes_per_group(s: ConvShape, subgroup: bool) -> usize {
        if subgroup {
            (s.cin * s.kh).div_ceil(8).clamp(1, 4) * 8
        } else {
            32
        }
    }

    /// Output channels per workgroup of the partials pass (the subgroup kernel shares each
    /// input load between them).
    fn co_tile(s: ConvShape, subgroup: bool) -> usize {
        if subgroup {
            // Measured on lavapipe (PROFILE_STAGE=conv*_backward_weight, same run): conv2 (16
            // channels) 4 a workgroup 2.6 ms, 8 3.2-4.7 ms, 2 3.1-3.4 ms; conv1 (6) 6 and 1
            // 5.0-5.5 ms, 3 5.3-6.2 ms. More channels share each x load but crowd the registers.
            // With one input channel (Fashion-MNIST; 5 lanes, one workgroup wide) conv1 at 1
            // channel a workgroup 2.2-2.3 ms, 3 or 6 2.6-2.7 ms: the workgroups spread over cores.
            if s.cin * s.kh <= 8 {
                1
            } else if s.cout <= 6 {
                s.cout
            } else {
                4
            }
        } else {
            1
        }
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

/// The reduction over the partial sums (shared by both weight-gradient pipelines).
fn reduce_kernel(gpu: &Gpu, s: ConvShape) -> Kernel {
    let src = include_str!("../../shaders/conv2d_backward_weight.wgsl");
    Kernel::with_constants(
        gpu,
        "conv2d_backward_weight.reduce",
        src,
        "reduce",
        &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
        &s.constants(&[]),
    )
}

/// The weight gradient of a convolution whose output goes through ReLU and a 2x2/2 max-pool,
/// computed from the pool's output grad and its masked argmax (written by
/// [`super::conv2d_relu_maxpool_forward::Conv2dReluMaxpoolForward`]): the pool's backward
/// pass fused in (POOLED in conv2d_backward_weight_subgroup.wgsl), so the layer's output grad,
/// the largest grad of the network, is never written, and the uniform windows over the pooled
/// tensors hold more images (conv1: 5 a dispatch instead of 3). Only where the subgroup kernel
/// runs over uniform windows in 8-lane workgroups (llvmpipe); elsewhere the pool's backward runs
/// as its own kernel.
pub struct Conv2dBackwardWeightPooled {
    partials: Kernel,
    /// The same summing into the gradient in place, window after window (IN_PLACE).
    in_place: Kernel,
    per: usize,
    reduce: Kernel,
    shape: ConvShape,
}

impl Conv2dBackwardWeightPooled {
    /// None where this adapter does not run the fused kernel.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Option<Self> {
        assert!(s.kw <= 16, "conv2d_backward_weight supports kernel widths up to 16");
        if !(Conv2dBackwardWeight::subgroups_usable(gpu) && super::subgroup_sharing(gpu, 8)) {
            return None;
        }
        let pooled_bytes = 4 * s.cout * (s.oh() / 2) * (s.ow() / 2);
        let per = shared_uniform_windows(gpu, &[4 * s.cin * s.h * s.w, pooled_bytes])?;
        let run = pooled_run_length(s.ow());
        let src = pooled_argmax_input(&subgroup_source(s, run));
        let src = uniform_input(&uniform_input(&src, "x", 2, UNIFORM_SLACK_BYTES), "dy", 1, UNIFORM_SLACK_BYTES);
        let constants =
            s.constants(&[("WG", 8), ("CO_TILE", Conv2dBackwardWeight::co_tile(s, true)), ("RUN", run), ("POOLED", 1)]);
        let slots = [Slot::Uniform, Slot::Uniform, Slot::Uniform, Slot::ReadWrite, Slot::Uniform];
        let partials = Kernel::with_constants(
            gpu,
            "conv2d_backward_weight.partials_subgroup.uniform_x_dy.per_window.pooled",
            &src,
            "partials",
            &slots,
            &constants,
        );
        let in_place_constants: Vec<_> = constants.iter().copied().chain([("IN_PLACE", 1.0)]).collect();
        let in_place = Kernel::with_constants(
            gpu,
            "conv2d_backward_weight.partials_subgroup.uniform_x_dy.per_window.pooled.in_place",
            &src,
            "partials",
            &slots,
            &in_place_constants,
        );
        Some(Conv2dBackwardWeightPooled { partials, in_place, per, reduce: reduce_kernel(gpu, s), shape: s })
    }

    /// `d_pooled` and `argmax` are the pool's output grad and masked argmax ([B, COUT, OH/2,
    /// OW/2]), `x` the conv's input; `dw` and `db` are overwritten: summed into in place, one
    /// window after another, where db follows dw in the same buffer (the parameter arena), else
    /// through a scratch buffer and a reduction pass. None when a buffer lacks the slack after its
    /// data that a full last uniform window needs.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        batch: usize,
        d_pooled: &View,
        argmax: &View,
        x: &View,
        dw: &View,
        db: &View,
    ) -> Option<BackwardWeightDispatch> {
        let s = self.shape;
        let (x_bytes, p_bytes) = ((4 * s.cin * s.h * s.w) as u64, (4 * s.cout * (s.oh() / 2) * (s.ow() / 2)) as u64);
        let xs = image_windows(x, batch, x_bytes, self.per)?;
        let ds = image_windows(d_pooled, batch, p_bytes, self.per)?;
        let is = image_windows(argmax, batch, p_bytes, self.per)?;
        let chunks = xs.len();
        let grid =
            [(s.cin * s.kh).div_ceil(8) as u32, s.cout.div_ceil(Conv2dBackwardWeight::co_tile(s, true)) as u32, 1];
        // One chunk per window: chunk k is window k's images, k * per onwards.
        let in_place = gradient_range(dw, db).is_some();
        let kernel = if in_place { &self.in_place } else { &self.partials };
        let grids: Vec<Partial> = xs
            .into_iter()
            .zip(ds)
            .zip(is)
            .enumerate()
            .map(|(k, (((b0, _, xw), (_, _, dpw)), (_, _, iw)))| (kernel, grid, k, b0, [dpw, xw], Some(iw)))
            .collect();
        Some(bind_partials(gpu, &self.reduce, s, batch, (self.per, chunks, 1), grids, dw, db, in_place))
    }
}

/// One dispatch of the partials pass: kernel, workgroups, its first chunk, the first image of
/// its bound inputs, the inputs (dy, x) and, for the pooled kernel, the argmax (bound after the
/// partial sums).
type Partial<'a> =
    (&'a Kernel, [u32; 3], usize, usize, [wgpu::BindingResource<'a>; 2], Option<wgpu::BindingResource<'a>>);

/// dw's start to db's end as one view, and db's offset in it in words, where db follows dw in the
/// same buffer (the parameter arena): what the IN_PLACE kernel sums into.
fn gradient_range(dw: &View, db: &View) -> Option<(View, usize)> {
    if dw.buffer != db.buffer || db.offset < dw.offset + 4 * dw.len as u64 || !(db.offset - dw.offset).is_multiple_of(4)
    {
        return None;
    }
    let db_off = ((db.offset - dw.offset) / 4) as usize;
    Some((View { buffer: dw.buffer.clone(), offset: dw.offset, len: db_off + db.len }, db_off))
}

/// Binds the partials dispatches over `chunks` chunks of `chunk` images (or of `row_blocks`
/// blocks of one image's rows) and the reduction into `dw` and `db` (overwritten), with the
/// scratch buffer they share; or, `in_place` (IN_PLACE kernels, db after dw: see
/// `gradient_range`), the partials summing straight into dw and db, chunk after chunk.
#[allow(clippy::too_many_arguments)]
fn bind_partials(
    gpu: &Gpu,
    reduce: &Kernel,
    s: ConvShape,
    batch: usize,
    (chunk, chunks, row_blocks): (usize, usize, usize),
    grids: Vec<Partial>,
    dw: &View,
    db: &View,
    in_place: bool,
) -> BackwardWeightDispatch {
    let nout = s.weight_len() + s.cout;
    // Where the partial sums go: the gradient itself, or a scratch buffer the reduction reads.
    let (sums, db_off, scratch) = match gradient_range(dw, db).filter(|_| in_place) {
        Some((grad, db_off)) => (grad, db_off, None),
        None => {
            let scratch = gpu.storage("conv2d_backward_weight partials", chunks * nout);
            (View::whole(&scratch), 0, Some(scratch))
        }
    };
    let params = |c0: usize, x_b0: usize| {
        let p = Params {
            batch: batch as u32,
            chunk: chunk as u32,
            chunks: chunks as u32,
            c0: c0 as u32,
            x_b0: x_b0 as u32,
            row_blocks: row_blocks as u32,
            db_off: db_off as u32,
            _pad: 0,
        };
        gpu.uniform("conv2d_backward_weight params", &p)
    };
    let partials = grids
        .into_iter()
        .map(|(kernel, grid, c0, x_b0, [dy, x], after)| {
            let p = params(c0, x_b0);
            let mut entries = vec![p.as_entire_binding(), dy, x, sums.resource()];
            entries.extend(after);
            kernel.bind(gpu, &entries, grid)
        })
        .collect();
    let reduce = scratch.is_some().then(|| {
        let p = params(0, 0);
        reduce.bind(
            gpu,
            &[p.as_entire_binding(), sums.resource(), dw.resource(), db.resource()],
            [nout.div_ceil(64) as u32, 1, 1],
        )
    });
    BackwardWeightDispatch { partials, reduce, scratch }
}

/// CPU reference: (dw, db).
pub fn reference(s: ConvShape, dy: &[f32], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dw = vec![0f64; s.weight_len()];
    let mut db = vec![0f64; s.cout];
    for n in 0..s.batch {
        for co in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.cout + co) * oh + oy) * ow + ox] as f64;
                    db[co] += g;
                    for ci in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let xv = x[((n * s.cin + ci) * s.h + oy + ky) * s.w + ox + kx] as f64;
                                dw[((co * s.cin + ci) * s.kh + ky) * s.kw + kx] += g * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    (dw.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
