//! What both weight-gradient pipelines share: the dispatches of one computation, the binding of
//! the partials pass (into scratch, or in place into the gradient) and the reduction after it.

use super::Params;
use crate::gpu::Gpu;
use crate::kernels::conv2d_forward::ConvShape;
use crate::kernels::{Dispatch, Kernel, Slot, View};

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

/// The reduction over the partial sums (shared by both weight-gradient pipelines).
pub(super) fn reduce_kernel(gpu: &Gpu, s: ConvShape) -> Kernel {
    let src = include_str!("../../../shaders/conv2d_backward_weight.wgsl");
    Kernel::with_constants(
        gpu,
        "conv2d_backward_weight.reduce",
        src,
        "reduce",
        &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
        &s.constants(&[]),
    )
}

/// One dispatch of the partials pass: kernel, workgroups, its first chunk, the first image of
/// its bound inputs, the inputs (dy, x) and, for the pooled kernel, the argmax (bound after the
/// partial sums).
pub(super) type Partial<'a> =
    (&'a Kernel, [u32; 3], usize, usize, [wgpu::BindingResource<'a>; 2], Option<wgpu::BindingResource<'a>>);

/// dw's start to db's end as one view, and db's offset in it in words, where db follows dw in the
/// same buffer (the parameter arena): what the IN_PLACE kernel sums into.
pub(super) fn gradient_range(dw: &View, db: &View) -> Option<(View, usize)> {
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
pub(super) fn bind_partials(
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
