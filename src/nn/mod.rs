//! Networks as data: a network is a list of layers with PyTorch's module names and
//! hyperparameters (Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear, and for residual
//! networks Add, the option-A shortcut and global average pooling), each reading the outputs of
//! earlier layers (a chain, or a small graph where a residual block branches and joins), built
//! the way the PyTorch module is written. From it follow the `state_dict` (names, shapes, and which entries
//! are trained, running statistics or counters), the initialisation, and the CPU reference of a
//! training step (`reference`). Names are scoped as candle's `vb.pp` does, so a residual block's
//! parameters come out as `layer1.0.bn1.weight`.

pub mod reference;

use crate::kernels::sgd_momentum::SgdOptions;
use crate::model::{CLASSES, IMAGE};

/// How a training step turns a batch into an update, beside the network and the step's lr and
/// momentum: `nn.CrossEntropyLoss(label_smoothing=...)` and `torch.optim.SGD`'s weight decay and
/// Nesterov. The default is the tutorial's: none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepRule {
    pub label_smoothing: f32,
    pub sgd: SgdOptions,
}

/// A tensor's shape without the batch: channels, height, width (a flattened vector is C x 1 x 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer, with PyTorch's hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv2d {
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    BatchNorm2d,
    Relu,
    MaxPool2d {
        kernel: usize,
        stride: usize,
    },
    Flatten,
    Linear {
        out: usize,
        bias: bool,
    },
    /// The sum of its two inputs (a residual block's join).
    Add,
    /// ResNet's option-A shortcut: `F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad))`.
    ShortcutA {
        stride: usize,
        pad: usize,
    },
    /// `F.adaptive_avg_pool2d(x, 1)`: C x 1 x 1.
    GlobalAvgPool,
}

/// Where a layer's input comes from: the network's input image, or an earlier layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Image,
    Layer(usize),
}

/// A layer of a network: its module name (the prefix of its `state_dict` entries), what it
/// does, the shapes it takes and gives, and where its inputs come from (one, two for an Add).
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    pub op: Op,
    pub input: Shape,
    pub output: Shape,
    pub inputs: Vec<Source>,
}

impl Layer {
    /// A Conv2d layer's shape for `batch` images.
    pub fn conv_shape(&self, batch: usize) -> crate::kernels::conv2d_forward::ConvShape {
        let Op::Conv2d { cout, kernel, stride, padding, .. } = self.op else { panic!("{} is not a Conv2d", self.name) };
        let i = self.input;
        crate::kernels::conv2d_forward::ConvShape {
            batch,
            cin: i.c,
            h: i.h,
            w: i.w,
            cout,
            kh: kernel,
            kw: kernel,
            stride,
            pad: padding,
        }
    }
}

/// What a `state_dict` entry is to training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Updated by the optimizer (lives in the parameter arena).
    Trainable,
    /// BatchNorm's running mean and variance: updated by training steps, used by evaluation.
    RunningStat,
    /// BatchNorm's num_batches_tracked: an I64 scalar.
    Counter,
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Conv2d and Linear weights and
    /// biases.
    Uniform {
        fan_in: usize,
    },
    /// N(0, 2/fan_in): `nn.init.kaiming_normal_`, which ResNet-20 applies to its conv and linear
    /// weights.
    KaimingNormal {
        fan_in: usize,
    },
    Constant(f32),
}

/// One `state_dict` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    pub init: Init,
}

/// A network: its name as `--model` spells it, its input, its layers in order (each reading
/// only earlier ones; the last gives the logits), and whether its weights start Kaiming-normal.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub model: &'static str,
    pub input: Shape,
    pub layers: Vec<Layer>,
    pub kaiming: bool,
}

impl Network {
    /// Every `state_dict` entry, in PyTorch's order (module registration order).
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut v = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, kind, init| v.push(ParamSpec { name, shape, kind, init });
        for l in &self.layers {
            let n = &l.name;
            match l.op {
                Op::Conv2d { cout, kernel, bias, .. } => {
                    let fan_in = l.input.c * kernel * kernel;
                    let init = Init::Uniform { fan_in };
                    let winit = if self.kaiming { Init::KaimingNormal { fan_in } } else { init };
                    add(format!("{n}.weight"), vec![cout, l.input.c, kernel, kernel], ParamKind::Trainable, winit);
                    if bias {
                        add(format!("{n}.bias"), vec![cout], ParamKind::Trainable, init);
                    }
                }
                Op::BatchNorm2d => {
                    let c = l.input.c;
                    add(format!("{n}.weight"), vec![c], ParamKind::Trainable, Init::Constant(1.0));
                    add(format!("{n}.bias"), vec![c], ParamKind::Trainable, Init::Constant(0.0));
                    add(format!("{n}.running_mean"), vec![c], ParamKind::RunningStat, Init::Constant(0.0));
                    add(format!("{n}.running_var"), vec![c], ParamKind::RunningStat, Init::Constant(1.0));
                    add(format!("{n}.num_batches_tracked"), vec![], ParamKind::Counter, Init::Constant(0.0));
                }
                Op::Linear { out, bias } => {
                    let fan_in = l.input.len();
                    let init = Init::Uniform { fan_in };
                    let winit = if self.kaiming { Init::KaimingNormal { fan_in } } else { init };
                    add(format!("{n}.weight"), vec![out, fan_in], ParamKind::Trainable, winit);
                    if bias {
                        add(format!("{n}.bias"), vec![out], ParamKind::Trainable, init);
                    }
                }
                Op::Relu | Op::MaxPool2d { .. } | Op::Flatten | Op::Add | Op::ShortcutA { .. } | Op::GlobalAvgPool => {}
            }
        }
        v
    }

    /// The entries of one kind, as (name, shape): the layout of an arena.
    pub fn specs(&self, kind: ParamKind) -> Vec<(String, Vec<usize>)> {
        self.params().into_iter().filter(|p| p.kind == kind).map(|p| (p.name, p.shape)).collect()
    }

    /// The layers holding BatchNorm's running statistics, by module name.
    pub fn batch_norms(&self) -> Vec<&Layer> {
        self.layers.iter().filter(|l| l.op == Op::BatchNorm2d).collect()
    }

    /// PyTorch refuses a BatchNorm training batch with one value per channel.
    pub fn check_training_batch(&self, batch: usize) -> Result<(), String> {
        for l in self.batch_norms() {
            crate::kernels::batchnorm2d::BnShape { channels: l.input.c, plane: l.input.h * l.input.w }
                .check_training_batch(batch)
                .map_err(|e| format!("{}: {e}", l.name))?;
        }
        Ok(())
    }

    pub fn output(&self) -> Shape {
        self.layers.last().map(|l| l.output).unwrap_or(self.input)
    }

    /// The layers reading layer `i`'s output, in order.
    pub fn consumers(&self, i: usize) -> Vec<usize> {
        (0..self.layers.len()).filter(|&j| self.layers[j].inputs.contains(&Source::Layer(i))).collect()
    }

    /// Whether layer `i + 1` exists, does `op` and is the only reader of layer `i`'s output (so
    /// the two can run as one kernel).
    pub fn only_next(&self, i: usize, op: impl Fn(&Op) -> bool) -> bool {
        self.layers.get(i + 1).is_some_and(|l| op(&l.op)) && self.consumers(i) == [i + 1]
    }

    /// Whether the grad layer `i` sends to its (first) input adds to one already there: a later
    /// layer reads the same tensor, and the backward pass, running in reverse, reached it first.
    pub fn grad_accumulates(&self, i: usize) -> bool {
        let s = self.layers[i].inputs[0];
        s != Source::Image && self.layers[i + 1..].iter().any(|l| l.inputs.contains(&s))
    }

    /// Whether the ReLU at layer `r` has its mask applied by the layer reading it (a max-pool's
    /// backward, a Linear's input grad) rather than by the kernel it is fused into.
    pub fn relu_masked_by_reader(&self, r: usize) -> bool {
        self.only_next(r, |op| matches!(op, Op::MaxPool2d { .. } | Op::Linear { .. }))
    }
}

/// A point of the network being built that a later layer can read (a residual block's input).
#[derive(Clone, Copy, Debug)]
pub struct Tap {
    source: Source,
    shape: Shape,
}

/// Builds a network layer by layer, each layer's input the previous one's output, with names
/// scoped by `pp` (`b.pp("layer1").pp("0")` names its conv `layer1.0.conv1`).
pub struct Builder {
    model: &'static str,
    input: Shape,
    shape: Shape,
    current: Source,
    prefix: String,
    layers: Vec<Layer>,
    kaiming: bool,
}

impl Builder {
    pub fn new(model: &'static str, input: Shape) -> Builder {
        let (prefix, layers) = (String::new(), Vec::new());
        Builder { model, input, shape: input, current: Source::Image, prefix, layers, kaiming: false }
    }

    /// Conv and linear weights start Kaiming-normal (biases and BatchNorm as PyTorch's default).
    pub fn kaiming(mut self) -> Builder {
        self.kaiming = true;
        self
    }

    /// The tensor the next layer would read.
    pub fn tap(&self) -> Tap {
        Tap { source: self.current, shape: self.shape }
    }

    /// The next layer reads `t` instead (a residual block's second branch).
    pub fn from(mut self, t: Tap) -> Builder {
        (self.current, self.shape) = (t.source, t.shape);
        self
    }

    /// The same builder with `name.` added to the names of the layers it adds next, until `up`.
    pub fn pp(mut self, name: &str) -> Builder {
        self.prefix = format!("{}{name}.", self.prefix);
        self
    }

    /// Leaves the innermost scope.
    pub fn up(mut self) -> Builder {
        let trimmed = self.prefix.trim_end_matches('.');
        self.prefix = match trimmed.rfind('.') {
            Some(i) => trimmed[..=i].to_string(),
            None => String::new(),
        };
        self
    }

    fn push(self, name: &str, op: Op, output: Shape) -> Builder {
        let input = vec![self.current];
        self.push_with(name, op, output, input)
    }

    fn push_with(mut self, name: &str, op: Op, output: Shape, inputs: Vec<Source>) -> Builder {
        let name = format!("{}{name}", self.prefix);
        self.layers.push(Layer { name, op, input: self.shape, output, inputs });
        self.shape = output;
        self.current = Source::Layer(self.layers.len() - 1);
        self
    }

    /// nn.Conv2d(in, cout, kernel, stride, padding, bias).
    pub fn conv2d(self, name: &str, cout: usize, kernel: usize, stride: usize, padding: usize, bias: bool) -> Builder {
        let s = self.shape;
        let side = |x: usize| (x + 2 * padding - kernel) / stride + 1;
        let out = Shape { c: cout, h: side(s.h), w: side(s.w) };
        self.push(name, Op::Conv2d { cout, kernel, stride, padding, bias }, out)
    }
    pub fn batch_norm2d(self, name: &str) -> Builder {
        let s = self.shape;
        self.push(name, Op::BatchNorm2d, s)
    }
    pub fn relu(self, name: &str) -> Builder {
        let s = self.shape;
        self.push(name, Op::Relu, s)
    }
    /// nn.MaxPool2d(kernel, stride), floor mode.
    pub fn max_pool2d(self, name: &str, kernel: usize, stride: usize) -> Builder {
        let s = self.shape;
        let out = Shape { c: s.c, h: (s.h - kernel) / stride + 1, w: (s.w - kernel) / stride + 1 };
        self.push(name, Op::MaxPool2d { kernel, stride }, out)
    }
    /// torch.flatten(x, 1): C, H, W in that order.
    pub fn flatten(self, name: &str) -> Builder {
        let n = self.shape.len();
        self.push(name, Op::Flatten, Shape { c: n, h: 1, w: 1 })
    }
    pub fn linear(self, name: &str, out: usize, bias: bool) -> Builder {
        self.push(name, Op::Linear { out, bias }, Shape { c: out, h: 1, w: 1 })
    }

    /// The sum of the current tensor and `other` (of the same shape).
    pub fn add(self, name: &str, other: Tap) -> Builder {
        assert_eq!(self.shape, other.shape, "{name}: an Add of two shapes");
        let (s, inputs) = (self.shape, vec![self.current, other.source]);
        self.push_with(name, Op::Add, s, inputs)
    }
    /// The option-A shortcut to `cout` channels at `stride`.
    pub fn shortcut_a(self, name: &str, cout: usize, stride: usize) -> Builder {
        let s = self.shape;
        assert!(cout >= s.c && (cout - s.c).is_multiple_of(2), "{name}: option A pads channels evenly on both sides");
        let out = Shape { c: cout, h: s.h.div_ceil(stride), w: s.w.div_ceil(stride) };
        self.push(name, Op::ShortcutA { stride, pad: (cout - s.c) / 2 }, out)
    }
    pub fn global_avg_pool(self, name: &str) -> Builder {
        let s = self.shape;
        self.push(name, Op::GlobalAvgPool, Shape { c: s.c, h: 1, w: 1 })
    }

    pub fn build(self) -> Network {
        Network { model: self.model, input: self.input, layers: self.layers, kaiming: self.kaiming }
    }
}

/// The networks `--model` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// LeNet-5 exactly as the PyTorch CIFAR-10 tutorial defines it.
    #[value(name = "lenet5")]
    Lenet5,
    /// LeNet-5 with a BatchNorm2d after each convolution.
    #[value(name = "lenet5-bn")]
    Lenet5Bn,
    /// ResNet-20 (He et al., option-A shortcuts), as PyTorch's CIFAR-10 ResNets define it.
    #[value(name = "resnet20")]
    Resnet20,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Lenet5 => "lenet5",
            Model::Lenet5Bn => "lenet5-bn",
            Model::Resnet20 => "resnet20",
        }
    }
    /// The name the log prints.
    pub fn title(self) -> &'static str {
        match self {
            Model::Lenet5 => "LeNet-5",
            Model::Lenet5Bn => "LeNet-5-BN",
            Model::Resnet20 => "ResNet-20",
        }
    }
    pub fn network(self, in_channels: usize) -> Network {
        match self {
            Model::Lenet5 => lenet5(in_channels),
            Model::Lenet5Bn => lenet5_bn(in_channels),
            Model::Resnet20 => resnet20(in_channels),
        }
    }
}

fn image(in_channels: usize) -> Shape {
    Shape { c: in_channels, h: IMAGE, w: IMAGE }
}

/// LeNet's feature extractor: conv (5x5) -> [BatchNorm] -> ReLU -> max-pool 2x2, twice. (PyTorch's
/// one `pool` module, used twice, is two layers here: a layer without parameters has no
/// `state_dict` entries, so its name is only the stages' name.)
fn lenet_features(mut b: Builder, batch_norm: bool) -> Builder {
    for (i, cout) in [(1, 6), (2, 16)] {
        b = b.conv2d(&format!("conv{i}"), cout, 5, 1, 0, true);
        if batch_norm {
            b = b.batch_norm2d(&format!("bn{i}"));
        }
        b = b.relu(&format!("relu{i}")).max_pool2d(&format!("pool{i}"), 2, 2);
    }
    b
}

/// LeNet's classifier: flatten, fc1, ReLU, fc2, ReLU, fc3.
fn lenet_classifier(b: Builder) -> Builder {
    b.flatten("flatten")
        .linear("fc1", 120, true)
        .relu("relu3")
        .linear("fc2", 84, true)
        .relu("relu4")
        .linear("fc3", CLASSES, true)
}

/// The tutorial's `Net`: pool(relu(conv1(x))), pool(relu(conv2(x))), flatten, fc1, relu, fc2,
/// relu, fc3.
pub fn lenet5(in_channels: usize) -> Network {
    lenet_classifier(lenet_features(Builder::new("lenet5", image(in_channels)), false)).build()
}

/// `NetBN`: pool(relu(bn1(conv1(x)))), pool(relu(bn2(conv2(x)))), then LeNet's classifier.
pub fn lenet5_bn(in_channels: usize) -> Network {
    lenet_classifier(lenet_features(Builder::new("lenet5-bn", image(in_channels)), true)).build()
}

/// ResNet's BasicBlock: conv1 (3x3, stride), bn1, ReLU, conv2 (3x3), bn2, plus the shortcut
/// (the block's input, or option A where the stride or the channels change), ReLU. The layers
/// hold no parameters beyond PyTorch's, so the state_dict is the same.
pub fn basic_block(b: Builder, cout: usize, stride: usize) -> Builder {
    let x = b.tap();
    // The shortcut first, so that bn2, the add and the last ReLU run as one kernel.
    let (b, shortcut) = if stride != 1 || x.shape.c != cout {
        let b = b.shortcut_a("shortcut", cout, stride);
        let t = b.tap();
        (b.from(x), t)
    } else {
        (b, x)
    };
    b.conv2d("conv1", cout, 3, stride, 1, false)
        .batch_norm2d("bn1")
        .relu("relu1")
        .conv2d("conv2", cout, 3, 1, 1, false)
        .batch_norm2d("bn2")
        .add("add", shortcut)
        .relu("relu2")
}

/// `ResNet20`: conv1, bn1, ReLU, three stages of three BasicBlocks (16, 32, 64 channels; the
/// second and third start at stride 2), global average pooling, fc. The state_dict names are
/// PyTorch's: `layer2.0.conv1.weight`, `layer3.2.bn2.running_var`, `fc.bias`.
pub fn resnet20(in_channels: usize) -> Network {
    let mut b = Builder::new("resnet20", image(in_channels))
        .kaiming()
        .conv2d("conv1", 16, 3, 1, 1, false)
        .batch_norm2d("bn1")
        .relu("relu");
    for (stage, cout, stride) in [(1, 16, 1), (2, 32, 2), (3, 64, 2)] {
        b = b.pp(&format!("layer{stage}"));
        for block in 0..3 {
            b = basic_block(b.pp(&block.to_string()), cout, if block == 0 { stride } else { 1 }).up();
        }
        b = b.up();
    }
    b.global_avg_pool("avgpool").flatten("flatten").linear("fc", CLASSES, true).build()
}
