// sgd_momentum: PyTorch's SGD with momentum over the whole parameter arena in one dispatch:
// v = momentum * v + g; w = w - lr * v (no dampening, no Nesterov, no weight decay).
// Padding words between tensors in the arena hold zeros and stay zero.
// An invocation updates one `elem`: a vec4 of parameters where the arena's length is a multiple
// of 4, as it is on every adapter (tensors start at a multiple of the binding alignment); on
// llvmpipe a load or store costs about the same per lane whatever its width, so vec4 does a
// quarter of them (bench-kernels, same build: 0.81-0.90 ms against 0.93-1.14 ms a step). The
// Rust side rewrites `elem` to f32 for other lengths.

alias elem = vec4<f32>;

struct Params { n: u32, lr: f32, momentum: f32, _p0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<elem>;
@group(0) @binding(2) var<storage, read_write> weight: array<elem>;
@group(0) @binding(3) var<storage, read_write> velocity: array<elem>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }   // n counts elems
    let v = p.momentum * velocity[i] + grad[i];
    velocity[i] = v;
    weight[i] = weight[i] - p.lr * v;
}
