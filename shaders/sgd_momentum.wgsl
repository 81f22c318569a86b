// sgd_momentum: torch.optim.SGD (momentum, no dampening) over the whole parameter arena in one
// dispatch: g += weight_decay * w; v = momentum * v + g; w -= lr * v, or with Nesterov
// w -= lr * (g + momentum * v). The step's lr and momentum come from its row of the step table
// (a schedule's); weight decay and Nesterov are constants of the run. Padding words between
// tensors in the arena hold zeros and stay zero.
// An invocation updates PER `elem`s, each a vec4 of parameters where the arena's length is a
// multiple of 4, as it is on every adapter (tensors start at a multiple of the binding alignment); on
// llvmpipe a load or store costs about the same per lane whatever its width, so vec4 does a
// quarter of them (bench-kernels, same build: 0.81-0.90 ms against 0.93-1.14 ms a step), and 4
// elems an invocation read the params once for 4 (0.91 -> 0.86 ms, median of 6). The
// Rust side rewrites `elem` to f32 for other lengths.

alias elem = vec4<f32>;

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }
struct Step { step: u32, start: u32, lr: f32, momentum: f32, epoch: u32, _p0: u32, _p1: u32, _p2: u32 }

override WEIGHT_DECAY: f32 = 0.0;
override NESTEROV: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> grad: array<elem>;
@group(0) @binding(3) var<storage, read_write> weight: array<elem>;
@group(0) @binding(4) var<storage, read_write> velocity: array<elem>;

// Elems an invocation updates, written in by the Rust side: the params are read once for PER of
// them (llvmpipe gathers a uniform load lane by lane even at a constant address).
const PER: u32 = 1u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i0 = (gid.x + gid.y * nwg.x * 64u) * PER;
    let n = p.n;   // counts elems
    let lr = st.lr;
    let momentum = st.momentum;
    for (var u = 0u; u < PER; u++) {
        let i = i0 + u;
        if (i < n) {
            var g = grad[i];
            if (WEIGHT_DECAY != 0.0) { g = g + WEIGHT_DECAY * weight[i]; }
            let v = momentum * velocity[i] + g;
            velocity[i] = v;
            var d = v;
            if (NESTEROV) { d = g + momentum * v; }
            weight[i] = weight[i] - lr * d;
        }
    }
}
