//! Networks as data: a network is a list of layers with PyTorch's module names and
//! hyperparameters (Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear), built the way the
//! PyTorch module is written. From it follow the `state_dict` (names, shapes, and which entries
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
    Conv2d { cout: usize, kernel: usize, stride: usize, padding: usize, bias: bool },
    BatchNorm2d,
    Relu,
    MaxPool2d { kernel: usize, stride: usize },
    Flatten,
    Linear { out: usize, bias: bool },
}

/// A layer of a network: its module name (the prefix of its `state_dict` entries), what it
/// does, and the shapes it takes and gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    pub op: Op,
    pub input: Shape,
    pub output: Shape,
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

/// How a parameter starts (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): Conv2d and Linear weights and biases.
    Uniform {
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

/// A network: its name as `--model` spells it, its input, and its layers in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub model: &'static str,
    pub input: Shape,
    pub layers: Vec<Layer>,
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
                    add(format!("{n}.weight"), vec![cout, l.input.c, kernel, kernel], ParamKind::Trainable, init);
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
                    let init = Init::Uniform { fan_in: l.input.len() };
                    add(format!("{n}.weight"), vec![out, l.input.len()], ParamKind::Trainable, init);
                    if bias {
                        add(format!("{n}.bias"), vec![out], ParamKind::Trainable, init);
                    }
                }
                Op::Relu | Op::MaxPool2d { .. } | Op::Flatten => {}
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
}

/// Builds a network layer by layer, each layer's input the previous one's output, with names
/// scoped by `pp` (`b.pp("layer1").pp("0")` names its conv `layer1.0.conv1`).
pub struct Builder {
    model: &'static str,
    input: Shape,
    shape: Shape,
    prefix: String,
    layers: Vec<Layer>,
}

impl Builder {
    pub fn new(model: &'static str, input: Shape) -> Builder {
        Builder { model, input, shape: input, prefix: String::new(), layers: Vec::new() }
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

    fn push(mut self, name: &str, op: Op, output: Shape) -> Builder {
        let name = format!("{}{name}", self.prefix);
        self.layers.push(Layer { name, op, input: self.shape, output });
        self.shape = output;
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

    pub fn build(self) -> Network {
        Network { model: self.model, input: self.input, layers: self.layers }
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
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Lenet5 => "lenet5",
            Model::Lenet5Bn => "lenet5-bn",
        }
    }
    /// The name the log prints.
    pub fn title(self) -> &'static str {
        match self {
            Model::Lenet5 => "LeNet-5",
            Model::Lenet5Bn => "LeNet-5-BN",
        }
    }
    pub fn network(self, in_channels: usize) -> Network {
        match self {
            Model::Lenet5 => lenet5(in_channels),
            Model::Lenet5Bn => lenet5_bn(in_channels),
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
