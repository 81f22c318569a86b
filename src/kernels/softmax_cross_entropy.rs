//! softmax_cross_entropy: fused, numerically stable softmax + cross-entropy (with PyTorch's
//! label smoothing) with the logit grads and the batch's metrics written on the GPU.

use super::{Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

/// Words per step in the metrics buffer: summed loss, correct count, batch size, non-finite.
pub const METRICS_WORDS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub classes: u32,
    pub _pad: [u32; 2],
}

pub struct SoftmaxCrossEntropy {
    kernel: Kernel,
}

impl SoftmaxCrossEntropy {
    /// `label_smoothing` as `nn.CrossEntropyLoss(label_smoothing=...)`: the target is
    /// (1 - e) one-hot + e / classes.
    pub fn new(gpu: &Gpu, label_smoothing: f32) -> Self {
        let kernel = Kernel::with_constants(
            gpu,
            "softmax_cross_entropy",
            include_str!("../../shaders/softmax_cross_entropy.wgsl"),
            "main",
            &[
                Slot::Uniform,
                Slot::UniformDynamic,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::ReadWrite,
            ],
            &[("SMOOTHING", label_smoothing as f64)],
        );
        SoftmaxCrossEntropy { kernel }
    }

    /// `steps` is the step table (see [`super::StepTable`]); the metrics row is chosen by the
    /// dynamic offset given when the dispatch is recorded; `preds` gets the predicted class of
    /// each row at the step's `start` offset (it must hold every sample of the split).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        batch: usize,
        classes: usize,
        steps: &super::StepTable,
        logits: &View,
        labels: &View,
        dlogits: &View,
        metrics: &View,
        preds: &View,
    ) -> Dispatch {
        let params = gpu.uniform(
            "softmax_cross_entropy params",
            &Params { batch: batch as u32, classes: classes as u32, _pad: [0; 2] },
        );
        self.kernel.bind(
            gpu,
            &[
                params.as_entire_binding(),
                steps.resource(),
                logits.resource(),
                labels.resource(),
                dlogits.resource(),
                metrics.resource(),
                preds.resource(),
            ],
            [1, 1, 1],
        )
    }
}

/// CPU reference: (logit grads, summed loss, correct count), without label smoothing.
pub fn reference(batch: usize, classes: usize, logits: &[f32], labels: &[u32]) -> (Vec<f32>, f64, u32) {
    reference_smoothed(batch, classes, 0.0, logits, labels)
}

/// CPU reference with label smoothing `e`: each row's loss is (1 - e) * -log p[label] +
/// e / classes * sum_k -log p[k], its grad p - (1 - e) * onehot - e / classes, over the batch.
pub fn reference_smoothed(
    batch: usize,
    classes: usize,
    e: f32,
    logits: &[f32],
    labels: &[u32],
) -> (Vec<f32>, f64, u32) {
    let e = e as f64;
    let mut grad = vec![0f32; batch * classes];
    let mut loss = 0f64;
    let mut correct = 0;
    for r in 0..batch {
        let row = &logits[r * classes..(r + 1) * classes];
        let (mut arg, mut mx) = (0, row[0] as f64);
        for (c, &l) in row.iter().enumerate().skip(1) {
            if (l as f64) > mx {
                mx = l as f64;
                arg = c;
            }
        }
        let s: f64 = row.iter().map(|&l| (l as f64 - mx).exp()).sum();
        let label = labels[r] as usize;
        let nll = s.ln() - (row[label] as f64 - mx);
        let all: f64 = row.iter().map(|&l| s.ln() - (l as f64 - mx)).sum();
        loss += (1.0 - e) * nll + e / classes as f64 * all;
        if arg == label {
            correct += 1;
        }
        for c in 0..classes {
            let mut g = (row[c] as f64 - mx).exp() / s - e / classes as f64;
            if c == label {
                g -= 1.0 - e;
            }
            grad[r * classes + c] = (g / batch as f64) as f32;
        }
    }
    (grad, loss, correct)
}
