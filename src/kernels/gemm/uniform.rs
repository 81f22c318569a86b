//! The uniform-window GEMM variants (gemm_uniform_a.wgsl): A, and B where it fits, read through
//! uniform-buffer windows, split over rows, columns or the reduction, several windows a dispatch.

use super::uniform_source::{more_windows, vec4_output};
use super::{Epilogue, Gemm, Product};
use crate::gpu::Gpu;
use crate::kernels::{gcd, Dispatch, Kernel, Slot, View};

/// Params of the uniform-A variant (gemm_uniform_a.wgsl): a dispatch's first window over the
/// reduction (k, a_k0, b_k0) and the others in `more`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WindowParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ldc: u32,
    pub a_rs: u32,
    pub a_cs: u32,
    pub b_rs: u32,
    pub b_cs: u32,
    pub c_row0: u32,
    pub b_k0: u32,
    pub c_col0: u32,
    pub a_k0: u32,
    /// The windows after the first that this dispatch also sums over: (k, a_k0, b_k0, 0) each.
    pub more: [[u32; 4]; MAX_WINDOWS - 1],
}

/// The most windows of B one dispatch of the uniform-window kernel reads (its source repeats the
/// reduction loop for each; `Params.more` in gemm_uniform_a.wgsl has room for 3 after the first).
pub const MAX_WINDOWS: usize = 4;

/// What the uniform-window kernel's epilogue does (override constants: one pipeline each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct WindowEpilogue {
    bias: bool,
    relu: bool,
    mask: bool,
    accumulate: bool,
    /// The weight grad also writes the bias grad (BIAS_GRAD).
    bias_grad: bool,
    /// C and aux bound as vec4 arrays (`vec4_output`).
    vec4: bool,
    /// The windows of B are over output columns (COLUMN_WINDOWS), not over the reduction.
    columns: bool,
}

impl Gemm {
    /// Splits A into uniform windows: over output rows for the forward and input-grad products
    /// (A's rows are output rows), over the reduction for the weight grad (A's rows are the
    /// batch). With `uniform_b`, B is a uniform window too: bound whole where it fits, else
    /// split over output columns (forward: B's columns are W's rows) or over the reduction
    /// (input grad: B's rows are W's rows; weight grad: the same rows as A's windows). Up to
    /// `max_windows` windows share a dispatch; past that, windows over the reduction accumulate
    /// into C in a fixed order and apply the epilogue with the last one. None when no aligned
    /// window fits or a buffer lacks the slack for a full last window.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bind_windows(
        &self,
        gpu: &Gpu,
        uniform_b: bool,
        product: Product,
        (rows, cols, red): (usize, usize, usize),
        (a_rs, a_cs, b_rs, b_cs): (usize, usize, usize, usize),
        epi: Epilogue,
        a: &View,
        b: &View,
        bias: &View,
        aux: &View,
        c: &View,
        db: Option<&View>,
    ) -> Option<Vec<Dispatch>> {
        let src = &self.uniform_src.as_ref()?[uniform_b as usize];
        let mut kernels = self.uniform_kernels.lock().unwrap_or_else(|e| e.into_inner());
        let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
        let window = self.window_bytes as usize;
        let over_reduction = product == Product::WeightGrad;
        // Bytes of one "row" of A along the windowed dimension (for the weight grad,
        // A(i, k) = dy[k, i], so a window is a run of dy's rows, a_cs words each).
        let row_bytes = 4 * if over_reduction { a_cs } else { a_rs };
        let tile = if over_reduction { 1 } else { 8 };
        let step = lcm(tile, align / gcd(row_bytes, align));
        let total = if over_reduction { red } else { rows };
        let mut per = (window / row_bytes) / step * step;
        // How B is bound: (the split, B's bytes per unit of the split, units per window).
        #[derive(PartialEq)]
        enum Split {
            Storage,
            Whole,
            Columns,
            Reduction,
            FollowA,
        }
        let fits = |offset: u64, last_start: usize, unit: usize| {
            offset.is_multiple_of(align as u64) && offset + (last_start * unit + window) as u64 <= b.buffer.size()
        };
        let (split, b_unit, b_per) = if !uniform_b {
            (Split::Storage, 0, 0)
        } else if over_reduction {
            // B's rows follow A's window over the reduction: both must fit and align.
            let b_row = 4 * b_rs;
            let b_step = lcm(step, align / gcd(b_row, align));
            per = per.min(window / b_row) / b_step * b_step;
            if per == 0 || !fits(b.offset, (total.div_ceil(per) - 1) * per, b_row) {
                return None;
            }
            (Split::FollowA, b_row, per)
        } else if 4 * red * cols <= window {
            if !fits(b.offset, 0, 0) {
                return None;
            }
            (Split::Whole, 0, 0)
        } else if product == Product::Forward && b_rs == 1 {
            let unit = 4 * b_cs; // one output column of B is one row of W
                                 // Whole workgroups of columns (8 lanes x 4) where a window holds that many.
            let c_step = lcm(if window / unit >= 32 { 32 } else { 4 }, align / gcd(unit, align));
            let b_per = (window / unit) / c_step * c_step;
            if b_per == 0 || !fits(b.offset, (cols.div_ceil(b_per) - 1) * b_per, unit) {
                return None;
            }
            (Split::Columns, unit, b_per)
        } else if product == Product::InputGrad && b_cs == 1 {
            let unit = 4 * b_rs; // one reduction index of B is one row of W
            let k_step = align / gcd(unit, align);
            let b_per = (window / unit) / k_step * k_step;
            if b_per == 0 || !fits(b.offset, (red.div_ceil(b_per) - 1) * b_per, unit) {
                return None;
            }
            (Split::Reduction, unit, b_per)
        } else {
            return None;
        };
        if per == 0 || !a.offset.is_multiple_of(align as u64) {
            return None;
        }
        if a.offset + ((total.div_ceil(per) - 1) * per * row_bytes) as u64 + self.window_bytes > a.buffer.size() {
            return None; // the A buffer lacks the slack for a full last window
        }
        // B's windows: (first unit, units); one pass over everything when B is not split.
        let b_windows: Vec<(usize, usize)> = match split {
            Split::Columns => (0..cols).step_by(b_per).map(|j| (j, b_per.min(cols - j))).collect(),
            Split::Reduction => (0..red).step_by(b_per).map(|k| (k, b_per.min(red - k))).collect(),
            _ => vec![(0, 0)],
        };
        // The output blocks, each with its windows over the reduction in order.
        let mut jobs: Vec<Job> = Vec::new();
        let mut start = 0;
        while start < total {
            let len = per.min(total - start);
            let a_offset = a.offset + (start * row_bytes) as u64;
            if over_reduction {
                // The weight grad: A's windows run over the reduction (B's rows follow them).
                let (b_k0, b_offset) =
                    if split == Split::FollowA { (0, b.offset + (start * b_unit) as u64) } else { (start, b.offset) };
                let win = Window { k: len, a_k0: 0, b_k0, a_offset, b_offset, col0: 0, cols };
                match jobs.first_mut() {
                    Some(job) => job.windows.push(win),
                    None => {
                        jobs.push(Job { m: rows, n: cols, c_row0: 0, c_col0: 0, windows: vec![win], columns: false })
                    }
                }
            } else {
                for &(b0, b_len) in &b_windows {
                    let b_offset = b.offset + (b0 * b_unit) as u64;
                    match split {
                        Split::Columns => {
                            // All of B's column windows in one job (and, where each is whole
                            // workgroups, in one dispatch: COLUMN_WINDOWS).
                            let win = Window { k: red, a_k0: 0, b_k0: 0, a_offset, b_offset, col0: b0, cols: b_len };
                            match jobs.last_mut() {
                                Some(job) if b0 > 0 => job.windows.push(win),
                                _ => jobs.push(Job {
                                    m: len,
                                    n: cols,
                                    c_row0: start,
                                    c_col0: 0,
                                    windows: vec![win],
                                    columns: true,
                                }),
                            }
                        }
                        Split::Reduction => {
                            let win = Window { k: b_len, a_k0: b0, b_k0: 0, a_offset, b_offset, col0: 0, cols };
                            match jobs.last_mut() {
                                Some(job) if b0 > 0 => job.windows.push(win),
                                _ => jobs.push(Job {
                                    m: len,
                                    n: cols,
                                    c_row0: start,
                                    c_col0: 0,
                                    windows: vec![win],
                                    columns: false,
                                }),
                            }
                        }
                        _ => {
                            let win = Window { k: red, a_k0: 0, b_k0: 0, a_offset, b_offset: b.offset, col0: 0, cols };
                            jobs.push(Job {
                                m: len,
                                n: cols,
                                c_row0: start,
                                c_col0: 0,
                                windows: vec![win],
                                columns: false,
                            });
                        }
                    }
                }
            }
            start += len;
        }
        let window_bytes = self.window_bytes;
        fn binding(buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(size) })
        }
        // C (and aux) as vec4 arrays where every lane's 4 columns of a block lie in C at a
        // multiple of 4 (see `vec4_output`); each block checks its own columns below.
        let vec4_views = cols % 4 == 0 && [c, aux].iter().all(|v| v.offset % 16 == 0 && v.len % 4 == 0 && v.len >= 4);
        let mut out = Vec::new();
        for job in &jobs {
            // Up to max_windows windows a dispatch. Over the reduction, later dispatches add to C
            // in order and the last applies the epilogue; over columns, each dispatch has its own
            // columns (and windows narrower than a workgroup get a dispatch each).
            let per_dispatch = if job.columns && job.windows.iter().any(|w| w.cols % 32 != 0 && w.col0 + w.cols < job.n)
            {
                1
            } else {
                self.max_windows
            };
            let chunks: Vec<&[Window]> = job.windows.chunks(per_dispatch).collect();
            for (ci, wins) in chunks.iter().enumerate() {
                let (accumulate, last) = if job.columns { (false, true) } else { (ci > 0, ci + 1 == chunks.len()) };
                // This dispatch's columns: the job's, or (column windows) its windows'.
                let (c_col0, n) = if job.columns {
                    let lastw = &wins[wins.len() - 1];
                    (job.c_col0 + wins[0].col0, lastw.col0 + lastw.cols - wins[0].col0)
                } else {
                    (job.c_col0, job.n)
                };
                let vec4 = vec4_views && c_col0 % 4 == 0 && n % 4 == 0;
                let columns = job.columns && wins.len() > 1;
                let mut more = [[0u32; 4]; MAX_WINDOWS - 1];
                for (slot, w) in more.iter_mut().zip(&wins[1..]) {
                    let col0 = if columns { w.col0 - wins[0].col0 } else { 0 };
                    *slot = [w.k as u32, w.a_k0 as u32, w.b_k0 as u32, col0 as u32];
                }
                let p = WindowParams {
                    m: job.m as u32,
                    n: n as u32,
                    k: wins[0].k as u32,
                    ldc: cols as u32,
                    a_rs: a_rs as u32,
                    a_cs: a_cs as u32,
                    b_rs: b_rs as u32,
                    b_cs: b_cs as u32,
                    c_row0: job.c_row0 as u32,
                    b_k0: wins[0].b_k0 as u32,
                    c_col0: c_col0 as u32,
                    a_k0: wins[0].a_k0 as u32,
                    more,
                };
                let params = gpu.uniform("gemm_uniform_a params", &p);
                let b_res =
                    |w: &Window| if uniform_b { binding(&b.buffer, w.b_offset, window_bytes) } else { b.resource() };
                let db_res = match db {
                    Some(db) => db.resource(),
                    None => self.no_bias_grad.as_entire_binding(),
                };
                let mut resources = vec![
                    params.as_entire_binding(),
                    binding(&a.buffer, wins[0].a_offset, window_bytes),
                    b_res(&wins[0]),
                    bias.resource(),
                    aux.resource(),
                    c.resource(),
                    db_res,
                ];
                for w in &wins[1..] {
                    resources.push(binding(&a.buffer, w.a_offset, window_bytes));
                    if uniform_b {
                        resources.push(binding(&b.buffer, w.b_offset, window_bytes));
                    }
                }
                let we = WindowEpilogue {
                    bias: epi.bias && last,
                    relu: epi.relu && last,
                    mask: epi.mask && last,
                    accumulate,
                    bias_grad: db.is_some(),
                    vec4,
                    columns,
                };
                let kernel = kernels.entry((uniform_b, wins.len(), we)).or_insert_with(|| {
                    let (name, b_slot) =
                        if uniform_b { ("gemm_uniform_ab", Slot::Uniform) } else { ("gemm_uniform_a", Slot::Read) };
                    let mut slots = vec![
                        Slot::Uniform,
                        Slot::Uniform,
                        b_slot,
                        Slot::Read,
                        Slot::Read,
                        Slot::ReadWrite,
                        Slot::ReadWrite,
                    ];
                    for _ in 1..wins.len() {
                        slots.push(Slot::Uniform);
                        if uniform_b {
                            slots.push(Slot::Uniform);
                        }
                    }
                    let flag = |on: bool| on as u32 as f64;
                    let constants = [
                        ("HAS_BIAS", flag(we.bias)),
                        ("RELU", flag(we.relu)),
                        ("MASK", flag(we.mask)),
                        ("ACCUMULATE", flag(we.accumulate)),
                        ("BIAS_GRAD", flag(we.bias_grad)),
                        ("COLUMN_WINDOWS", flag(we.columns)),
                    ];
                    let src = more_windows(src, wins.len(), uniform_b);
                    let src = if vec4 { vec4_output(&src) } else { src };
                    Kernel::with_constants(gpu, name, &src, "main", &slots, &constants)
                });
                out.push(kernel.bind(gpu, &resources, [n.div_ceil(4).div_ceil(8) as u32, job.m.div_ceil(8) as u32, 1]));
            }
        }
        Some(out)
    }
}

/// One window: its reduction length, first reduction index in A's and in B's window, where A's
/// and B's windows start, and (windows of B over output columns) its columns in the job.
struct Window {
    k: usize,
    a_k0: usize,
    b_k0: usize,
    a_offset: u64,
    b_offset: u64,
    col0: usize,
    cols: usize,
}

/// One block of the output (m x n from row c_row0, column c_col0) and its windows: over the
/// reduction, or (`columns`) over its columns.
struct Job {
    m: usize,
    n: usize,
    c_row0: usize,
    c_col0: usize,
    windows: Vec<Window>,
    columns: bool,
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}
