//! The kernels a network needs on this adapter, specialised to each layer's shape, built once
//! and shared by every schedule of the network. Which fused kernels a layer gets is decided
//! here, per adapter (the kernels' own `new` says whether the adapter runs them).

use crate::gpu::Gpu;
use crate::kernels::batchnorm2d::{BatchNorm2d, BnFusion, BnShape};
use crate::kernels::bias_grad::BiasGrad;
use crate::kernels::conv2d_backward_input::{Conv2dBackwardInput, Conv2dBackwardInputPooled};
use crate::kernels::conv2d_backward_weight::{Conv2dBackwardWeight, Conv2dBackwardWeightPooled};
use crate::kernels::conv2d_forward::{Conv2dForward, ConvShape};
use crate::kernels::conv2d_relu_maxpool_forward::Conv2dReluMaxpoolForward;
use crate::kernels::gemm::Gemm;
use crate::kernels::global_avg_pool::GlobalAvgPool;
use crate::kernels::maxpool2d_backward::Maxpool2dBackward;
use crate::kernels::maxpool2d_forward::{Maxpool2dForward, PoolShape};
use crate::kernels::relu::Relu;
use crate::kernels::sgd_momentum::SgdMomentum;
use crate::kernels::shortcut_option_a::ShortcutOptionA;
use crate::kernels::softmax_cross_entropy::SoftmaxCrossEntropy;
use crate::nn::StepRule;
use crate::nn::{Layer, Network, Op, Source};

/// A conv + ReLU + 2x2 max-pool forward as one kernel writing the masked argmax, and the conv's
/// gradients taken from the pool's output grad and that argmax (the pool's backward fused in),
/// so the conv's output and its grad are never stored. Where the adapter runs the fused kernels.
pub struct PooledConv {
    pub forward: Conv2dReluMaxpoolForward,
    pub backward_weight: Conv2dBackwardWeightPooled,
    /// None for the network's first layer (no input grad is needed there).
    pub backward_input: Option<Conv2dBackwardInputPooled>,
}

/// A convolution's kernels.
pub struct ConvKernels {
    pub forward: Conv2dForward,
    pub backward_weight: Conv2dBackwardWeight,
    pub backward_input: Option<Conv2dBackwardInput>,
    /// This conv, the ReLU and the max-pool after it as fused kernels, where they run.
    pub pooled: Option<PooledConv>,
}

/// One layer's kernels (the ReLU, Flatten, Add and Linear layers have none of their own: ReLUs
/// and Adds are fused into their neighbours, the GEMM serves every Linear).
pub enum LayerKernels {
    Conv(Box<ConvKernels>),
    /// With what it is fused with (a ReLU, a residual add).
    BatchNorm(BatchNorm2d, BnFusion),
    Pool {
        forward: Maxpool2dForward,
        backward: Maxpool2dBackward,
    },
    Shortcut(ShortcutOptionA),
    GlobalAvgPool(GlobalAvgPool),
    None,
}

/// Every pipeline a network needs (pipelines are created at their first bind).
pub struct NetKernels {
    pub layers: Vec<LayerKernels>,
    pub gemm: Gemm,
    pub bias_grad: BiasGrad,
    pub softmax: SoftmaxCrossEntropy,
    pub sgd: SgdMomentum,
    /// The ReLU's backward where its mask is not applied inside another kernel (a residual
    /// block's last ReLU, whose masked grad both branches read).
    pub relu: Relu,
}

/// The op of layer `i`, if there is one.
pub(crate) fn op_at(net: &Network, i: usize) -> Option<&Op> {
    net.layers.get(i).map(|l| &l.op)
}

/// What BatchNorm layer `i` is fused with: the ReLU after it (its mask applied by the backward
/// itself unless the ReLU's reader applies it), or a residual Add and the ReLU after that (whose
/// mask a ReLU backward applies, writing the grad both branches read).
pub fn bn_fusion(net: &Network, i: usize) -> BnFusion {
    let relu_after = |j: usize| net.only_next(j, |op| *op == Op::Relu);
    let add = net.only_next(i, |op| *op == Op::Add) && net.layers[i + 1].inputs[0] == Source::Layer(i);
    if add {
        assert!(relu_after(i + 1), "{}: an Add must be followed by a ReLU", net.layers[i + 1].name);
        BnFusion { relu: true, residual: true, mask: false }
    } else {
        let relu = relu_after(i);
        BnFusion { relu, residual: false, mask: relu && !net.relu_masked_by_reader(i + 1) }
    }
}

/// A conv layer's shape for `batch` images.
pub fn conv_shape(l: &Layer, batch: usize) -> ConvShape {
    l.conv_shape(batch)
}

pub fn pool_shape(l: &Layer, batch: usize) -> PoolShape {
    let Op::MaxPool2d { kernel, stride } = l.op else { panic!("{} is not a MaxPool2d", l.name) };
    PoolShape { planes: batch * l.input.c, h: l.input.h, w: l.input.w, k: kernel, stride }
}

pub fn bn_shape(l: &Layer) -> BnShape {
    BnShape { channels: l.input.c, plane: l.input.h * l.input.w }
}

impl NetKernels {
    /// The kernels of `net`'s layers, and the loss and optimizer as `rule` asks.
    pub fn new(gpu: &Gpu, net: &Network, rule: StepRule) -> NetKernels {
        let layers = net
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match l.op {
                Op::Conv2d { bias, .. } => {
                    let s = conv_shape(l, 0);
                    let first = l.inputs[0] == Source::Image;
                    let relu_next = net.only_next(i, |op| *op == Op::Relu);
                    let pool_after_relu = matches!(op_at(net, i + 2), Some(Op::MaxPool2d { kernel: 2, stride: 2 }));
                    let pooled = (relu_next && pool_after_relu && s.is_plain())
                        .then(|| {
                            let backward_weight = Conv2dBackwardWeightPooled::new(gpu, s)?;
                            let backward_input =
                                if first { None } else { Some(Conv2dBackwardInputPooled::new(gpu, s)?) };
                            Some(PooledConv {
                                forward: Conv2dReluMaxpoolForward::new(gpu, s),
                                backward_weight,
                                backward_input,
                            })
                        })
                        .flatten();
                    let forward = if bias {
                        Conv2dForward::new(gpu, s, relu_next)
                    } else {
                        Conv2dForward::without_bias(gpu, s, relu_next)
                    };
                    let backward_input = (!first).then(|| {
                        if net.grad_accumulates(i) {
                            Conv2dBackwardInput::accumulating(gpu, s)
                        } else {
                            Conv2dBackwardInput::new(gpu, s)
                        }
                    });
                    LayerKernels::Conv(Box::new(ConvKernels {
                        forward,
                        backward_weight: Conv2dBackwardWeight::new(gpu, s),
                        backward_input,
                        pooled,
                    }))
                }
                Op::BatchNorm2d => {
                    let f = bn_fusion(net, i);
                    LayerKernels::BatchNorm(BatchNorm2d::fused(gpu, bn_shape(l), f), f)
                }
                Op::ShortcutA { .. } => {
                    let s = crate::nn::reference::shortcut_shape(l);
                    LayerKernels::Shortcut(if net.grad_accumulates(i) {
                        ShortcutOptionA::accumulating(gpu, s)
                    } else {
                        ShortcutOptionA::new(gpu, s)
                    })
                }
                Op::GlobalAvgPool => LayerKernels::GlobalAvgPool(GlobalAvgPool::new(gpu, l.input.h, l.input.w)),
                Op::MaxPool2d { .. } => {
                    let s = pool_shape(l, 0);
                    // The ReLU before the pool is applied to the pool's backward (its mask).
                    let relu_before = i > 0 && op_at(net, i - 1) == Some(&Op::Relu);
                    LayerKernels::Pool {
                        forward: Maxpool2dForward::new(gpu, s),
                        backward: Maxpool2dBackward::new(gpu, s, relu_before),
                    }
                }
                Op::Relu | Op::Flatten | Op::Linear { .. } | Op::Add => LayerKernels::None,
            })
            .collect();
        NetKernels {
            layers,
            gemm: Gemm::new(gpu),
            bias_grad: BiasGrad::new(gpu),
            softmax: SoftmaxCrossEntropy::new(gpu, rule.label_smoothing),
            sgd: SgdMomentum::new(gpu, rule.sgd),
            relu: Relu::new(gpu),
        }
    }

    /// The largest per-image scratch of the conv weight gradients (their partial sums).
    pub fn max_scratch_bytes_per_image(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|k| match k {
                LayerKernels::Conv(c) => Some(c.backward_weight.scratch_bytes_per_image()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}
