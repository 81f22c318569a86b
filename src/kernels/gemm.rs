//! gemm: the three products of a linear layer (forward with fused bias/ReLU, input grad with the
//! fused ReLU-backward mask, weight grad) as one strided, register-tiled kernel.

use super::{gcd, Dispatch, Kernel, Slot, View, UNIFORM_SLACK_BYTES};
use crate::gpu::Gpu;

/// Which product of a linear layer y = x·Wᵀ + b (x [M,K], W [N,K], y [M,N]) to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// y = x·Wᵀ (+ b) (ReLU): A = x, B = W; output [M, N].
    Forward,
    /// dx = dy·W (masked): A = dy [M,N], B = W [N,K]; output [M, K].
    InputGrad,
    /// dW = dyᵀ·x: A = dy [M,N], B = x [M,K]; output [N, K].
    WeightGrad,
}

/// Epilogue applied to each output element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    pub bias: bool,
    pub relu: bool,
    /// Zero the element where `aux` (same shape as the output) is not positive.
    pub mask: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ldc: u32,
    pub a_rs: u32,
    pub a_cs: u32,
    pub b_rs: u32,
    pub b_cs: u32,
    pub has_bias: u32,
    pub relu: u32,
    pub mask: u32,
    pub _pad: u32,
}

/// The output shape (rows, cols) and reduction length of a product, given the layer's M, N, K.
pub fn dims(product: Product, m: usize, n: usize, k: usize) -> (usize, usize, usize) {
    match product {
        Product::Forward => (m, n, k),
        Product::InputGrad => (m, k, n),
        Product::WeightGrad => (n, k, m),
    }
}

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

/// Which GEMM kernel to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Both operands from storage buffers (gemm.wgsl): any adapter, any size.
    Storage,
    /// A through uniform-buffer windows (gemm_uniform_a.wgsl).
    UniformA,
    /// A and B through uniform windows, where B fits (falls back to `UniformA`).
    UniformAB,
}

/// What the uniform-window kernel's epilogue does (override constants: one pipeline each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct WindowEpilogue {
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

pub struct Gemm {
    storage: Kernel,
    /// The uniform-window kernel's sources: A a uniform window, B from storage; both windows.
    uniform_src: Option<[String; 2]>,
    /// Its pipelines, by (B a window, windows over the reduction, epilogue), each built when a
    /// bind first needs it.
    uniform_kernels: std::sync::Mutex<std::collections::HashMap<(bool, usize, WindowEpilogue), Kernel>>,
    window_bytes: u64,
    /// Windows over the reduction one dispatch may sum: MAX_WINDOWS where the adapter allows
    /// that many uniform bindings (`GPU_LENET_GEMM_WINDOWS`, 1-4, sets it, for measuring).
    max_windows: usize,
    /// Bound as the bias grad where a kernel does not write one (binding 6 is in every layout).
    no_bias_grad: wgpu::Buffer,
    default_variant: Variant,
    /// Rows of C per invocation of the storage kernel (TILE_M in gemm.wgsl).
    tile_rows: usize,
}

impl Gemm {
    pub fn new(gpu: &Gpu) -> Self {
        Self::with_sharing(gpu, super::subgroup_sharing(gpu, 8))
    }

    /// With the choice whether the 8 lanes of a uniform-A workgroup share their loads of A
    /// through subgroup shuffles (tests run both; it needs [`super::subgroup_sharing`]).
    pub fn with_sharing(gpu: &Gpu, share_a: bool) -> Self {
        Self::with_options(gpu, share_a, Self::tile_rows_for(gpu))
    }

    /// Rows of C per invocation of the storage kernel on this adapter: 4 on a CPU adapter (each
    /// B load feeds 4 rows), 1 on a GPU (4 times the lanes; LeNet's products are too small to
    /// fill a GPU otherwise). `GPU_LENET_GEMM_ROWS` (1-4) overrides it, for measuring.
    fn tile_rows_for(gpu: &Gpu) -> usize {
        super::per_adapter(gpu, "GPU_LENET_GEMM_ROWS", |r| (1..=4).contains(&r), 4, 1)
    }

    /// With the sharing choice and `tile_rows` (1-4) rows per invocation of the storage kernel.
    pub fn with_options(gpu: &Gpu, share_a: bool, tile_rows: usize) -> Self {
        assert!(!share_a || super::subgroup_sharing(gpu, 8), "this adapter cannot share loads across subgroups");
        assert!((1..=4).contains(&tile_rows), "the GEMM tile has 1 to 4 rows");
        let storage = Kernel::with_constants(
            gpu,
            "gemm",
            include_str!("../../shaders/gemm.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::ReadWrite],
            &[("TILE_M", tile_rows as f64)],
        );
        let window_bytes = gpu.limits.max_uniform_buffer_binding_size.min(UNIFORM_SLACK_BYTES) / 16 * 16;
        let src = super::with_const(
            include_str!("../../shaders/gemm_uniform_a.wgsl"),
            "A_VEC4S",
            (window_bytes / 16) as usize,
        );
        let src = if share_a { super::share_across_subgroup(&src) } else { src };
        let uniform_src = (window_bytes >= 4096).then(|| {
            let ab = super::uniform_input(&src, "b", 2, window_bytes);
            [src, ab]
        });
        let forced = std::env::var("GPU_LENET_GEMM").ok();
        if let Some(v) = forced.as_deref().filter(|v| !["storage", "uniform-a", "uniform-ab"].contains(v)) {
            eprintln!("warning: GPU_LENET_GEMM={v:?} ignored: expected storage, uniform-a or uniform-ab");
        }
        let default_variant = match (forced.as_deref(), &uniform_src) {
            (Some("storage"), _) | (_, None) => Variant::Storage,
            (Some("uniform-a"), _) => Variant::UniformA,
            (Some("uniform-ab"), _) => Variant::UniformAB,
            _ if !super::uniform_inputs_pay(gpu) => Variant::Storage,
            _ => Variant::UniformAB,
        };
        let uniform_kernels = Default::default();
        // params, A and B, then A and B again for each further window
        let bindable = (gpu.limits.max_uniform_buffers_per_shader_stage as usize).saturating_sub(3) / 2 + 1;
        let max_windows = super::env_knob("GPU_LENET_GEMM_WINDOWS", |w| (1..=MAX_WINDOWS).contains(&w))
            .unwrap_or(MAX_WINDOWS)
            .min(bindable)
            .max(1);
        let no_bias_grad = gpu.storage("gemm: no bias grad", 4);
        Gemm {
            storage,
            uniform_src,
            uniform_kernels,
            window_bytes,
            max_windows,
            no_bias_grad,
            default_variant,
            tile_rows,
        }
    }

    /// This GEMM with at most `windows` (1 to MAX_WINDOWS) windows of B in one dispatch (tests
    /// check that the shared dispatches and the dispatch-per-window ones agree).
    pub fn with_max_windows(mut self, windows: usize) -> Self {
        assert!((1..=MAX_WINDOWS).contains(&windows), "1 to {MAX_WINDOWS} windows a dispatch");
        self.max_windows = windows.min(self.max_windows);
        self
    }

    /// Binds one product for a layer with batch `m`, `n` outputs and `k` inputs, with the
    /// variant this adapter prefers. `bias` and `aux` are only read when the epilogue asks for
    /// them (pass any buffer otherwise). May take several dispatches, run in order.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        product: Product,
        mnk: (usize, usize, usize),
        epi: Epilogue,
        a: &View,
        b: &View,
        bias: &View,
        aux: &View,
        c: &View,
    ) -> Vec<Dispatch> {
        self.bind_variant(gpu, self.default_variant, product, mnk, epi, a, b, bias, aux, c)
    }

    /// [`Gemm::bind`] with an explicit variant (tests check both). The uniform-A variant
    /// falls back to the storage one when no window of A can be aligned for binding.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_variant(
        &self,
        gpu: &Gpu,
        variant: Variant,
        product: Product,
        (m, n, k): (usize, usize, usize),
        epi: Epilogue,
        a: &View,
        b: &View,
        bias: &View,
        aux: &View,
        c: &View,
    ) -> Vec<Dispatch> {
        let (rows, cols, red) = dims(product, m, n, k);
        let (a_rs, a_cs, b_rs, b_cs) = match product {
            Product::Forward => (k, 1, 1, k),
            Product::InputGrad => (n, 1, k, 1),
            Product::WeightGrad => (1, n, k, 1),
        };
        if variant != Variant::Storage {
            let dims = (rows, cols, red);
            let strides = (a_rs, a_cs, b_rs, b_cs);
            if variant == Variant::UniformAB {
                if let Some(d) = self.bind_windows(gpu, true, product, dims, strides, epi, a, b, bias, aux, c, None) {
                    return d;
                }
            }
            if let Some(d) = self.bind_windows(gpu, false, product, dims, strides, epi, a, b, bias, aux, c, None) {
                return d;
            }
        }
        let p = Params {
            m: rows as u32,
            n: cols as u32,
            k: red as u32,
            ldc: cols as u32,
            a_rs: a_rs as u32,
            a_cs: a_cs as u32,
            b_rs: b_rs as u32,
            b_cs: b_cs as u32,
            has_bias: epi.bias as u32,
            relu: epi.relu as u32,
            mask: epi.mask as u32,
            _pad: 0,
        };
        let params = gpu.uniform("gemm params", &p);
        vec![self.storage.bind(
            gpu,
            &[params.as_entire_binding(), a.resource(), b.resource(), bias.resource(), aux.resource(), c.resource()],
            [cols.div_ceil(4).div_ceil(8) as u32, rows.div_ceil(self.tile_rows).div_ceil(8) as u32, 1],
        )]
    }

    /// The adapter's default variant.
    pub fn default_variant(&self) -> Variant {
        self.default_variant
    }

    /// The weight grad dW = dyᵀ·x of a layer with batch `m`, `n` outputs and `k` inputs (`a` = dy,
    /// `b` = x, `c` = dW) that also writes its bias grad `db` (sums of dy's columns) in the same
    /// dispatches. None where `variant` has no such kernel (the storage GEMM) or cannot bind these
    /// buffers: then bind the weight grad and a `bias_grad` dispatch instead.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_weight_grad_and_bias(
        &self,
        gpu: &Gpu,
        variant: Variant,
        (m, n, k): (usize, usize, usize),
        a: &View,
        b: &View,
        c: &View,
        db: &View,
    ) -> Option<Vec<Dispatch>> {
        let dims = dims(Product::WeightGrad, m, n, k);
        let strides = (1, n, k, 1);
        let none = Epilogue::default();
        let uniform_b = match variant {
            Variant::Storage => return None,
            Variant::UniformA => false,
            Variant::UniformAB => true,
        };
        // The variant's own fallback order: B a window where it can be, else from storage.
        if uniform_b {
            if let Some(d) =
                self.bind_windows(gpu, true, Product::WeightGrad, dims, strides, none, a, b, a, a, c, Some(db))
            {
                return Some(d);
            }
        }
        self.bind_windows(gpu, false, Product::WeightGrad, dims, strides, none, a, b, a, a, c, Some(db))
    }

    /// Splits A into uniform windows: over output rows for the forward and input-grad products
    /// (A's rows are output rows), over the reduction for the weight grad (A's rows are the
    /// batch). With `uniform_b`, B is a uniform window too: bound whole where it fits, else
    /// split over output columns (forward: B's columns are W's rows) or over the reduction
    /// (input grad: B's rows are W's rows; weight grad: the same rows as A's windows). Up to
    /// `max_windows` windows share a dispatch; past that, windows over the reduction accumulate
    /// into C in a fixed order and apply the epilogue with the last one. None when no aligned
    /// window fits or a buffer lacks the slack for a full last window.
    #[allow(clippy::too_many_arguments)]
    fn bind_windows(
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

/// gemm_uniform_a.wgsl with C and aux bound as vec4 arrays: each lane's loads and stores of its 4
/// columns one vec4 access (for blocks whose columns start at a multiple of 4 in a C whose rows
/// are multiples of 4 long, bound at multiples of 16 bytes).
pub fn vec4_output(source: &str) -> String {
    let swaps = [
        ("var<storage, read> aux: array<f32>;", "var<storage, read> aux: array<vec4<f32>>;"),
        ("var<storage, read_write> c: array<f32>;", "var<storage, read_write> c: array<vec4<f32>>;"),
        ("    var r = vec4<f32>(0.0);\n    for (var u = 0u; u < 4u; u++) { if (u < live) { r[u] = c[o + u]; } }\n    \
            return r;", "    return c[o / 4u];"),
        ("    var r = vec4<f32>(0.0);\n    for (var u = 0u; u < 4u; u++) \
            { if (u < live) { r[u] = aux[o + u]; } }\n    return r;", "    return aux[o / 4u];"),
        ("    for (var u = 0u; u < 4u; u++) { if (u < live) { c[o + u] = v[u]; } }", "    c[o / 4u] = v;"),
    ];
    super::rewrite(source, "gemm_uniform_a.wgsl", &swaps)
}

/// gemm_uniform_a.wgsl for a dispatch that sums over `windows` windows of the reduction: the
/// block between `// window {` and `// } window` repeated for each window after the first, reading
/// its own A window (and B window where B is uniform) at the next bindings after db, and its
/// entry of `p.more`.
pub fn more_windows(source: &str, windows: usize, uniform_b: bool) -> String {
    assert!((1..=MAX_WINDOWS).contains(&windows), "1 to {MAX_WINDOWS} windows a dispatch");
    let (open, close) = ("    // window {\n", "    // } window\n");
    let (Some(start), Some(end)) = (source.find(open), source.find(close)) else {
        panic!("shader lacks the `// window` block");
    };
    let block = &source[start + open.len()..end];
    let a_access = "fn a_at(i: u32) -> f32 { return a[i >> 2u][i & 3u]; }";
    assert!(source.contains(a_access), "shader lacks `{a_access}`");
    let mut decls = String::new();
    let mut copies = String::new();
    let mut binding = 7; // after C (5) and the bias grad (6)
    for w in 1..windows {
        let e = w - 1;
        decls += &format!(
            "\n@group(0) @binding({binding}) var<uniform> a{w}: array<vec4<f32>, A_VEC4S>;\nfn \
            a{w}_at(i: u32) -> f32 {{ return a{w}[i >> 2u][i & 3u]; }}"
        );
        binding += 1;
        let mut copy = block
            .replace("p.k,", &format!("p.more[{e}].x,"))
            .replace("p.a_k0", &format!("p.more[{e}].y"))
            .replace("p.b_k0", &format!("p.more[{e}].z"))
            .replace("in_window(j0, 0u)", &format!("in_window(j0, {w}u)"))
            .replace("col_start(0u)", &format!("col_start({w}u)"))
            .replace("a_at(", &format!("a{w}_at("));
        if uniform_b {
            decls += &format!(
                "\n@group(0) @binding({binding}) var<uniform> b{w}: array<vec4<f32>, A_VEC4S>;\nfn \
                b{w}_at(i: u32) -> f32 {{ return b{w}[i >> 2u][i & 3u]; }}"
            );
            binding += 1;
            copy = copy.replace("b_at(", &format!("b{w}_at("));
        }
        copies += &copy;
    }
    let mut out = source.to_string();
    out.insert_str(end, &copies);
    let out = super::with_const(&out, "WINDOWS", windows);
    out.replace(a_access, &format!("{a_access}{decls}"))
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// CPU reference for one product of a linear layer (x [M,K], W [N,K], dy [M,N]).
pub fn reference(
    product: Product,
    (m, n, k): (usize, usize, usize),
    epi: Epilogue,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    aux: &[f32],
) -> Vec<f32> {
    let (rows, cols, red) = dims(product, m, n, k);
    let a_at = |i: usize, r: usize| match product {
        Product::Forward => a[i * k + r],
        Product::InputGrad => a[i * n + r],
        Product::WeightGrad => a[r * n + i],
    };
    let b_at = |r: usize, j: usize| match product {
        Product::Forward => b[j * k + r],
        Product::InputGrad => b[r * k + j],
        Product::WeightGrad => b[r * k + j],
    };
    let mut c = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = 0f64;
            for r in 0..red {
                acc += a_at(i, r) as f64 * b_at(r, j) as f64;
            }
            if epi.bias {
                acc += bias[j] as f64;
            }
            if epi.relu && acc < 0.0 {
                acc = 0.0;
            }
            if epi.mask && (aux[i * cols + j] <= 0.0 || aux[i * cols + j].is_nan()) {
                acc = 0.0;
            }
            c[i * cols + j] = acc as f32;
        }
    }
    c
}
