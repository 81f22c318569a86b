// batchnorm2d_backward: the grads of nn.BatchNorm2d in training mode, one workgroup per
// channel, from dy (already masked by any ReLU after it), x, gamma and the forward's saved
// [mean, invstd]:
//   x_hat = (x - mean) * invstd,  dbeta = sum dy,  dgamma = sum dy * x_hat,
//   dx = gamma * invstd * (dy - dbeta / n - x_hat * dgamma / n),  n = N*H*W,
// the gradient through the batch statistics. Sums as in the forward: a fixed stride per lane,
// then a fixed tree, so a run is reproducible bit for bit.

override CHANNELS: u32;
override PLANE: u32;
// dy is the grad at the ReLU after the layer, not yet masked: dy counts where y (that ReLU's
// output) is positive. Without it `y` is bound to any buffer and not read.
override MASK: bool = false;

struct Params { batch: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read> y: array<f32>;

fn grad(o: u32) -> f32 {
    if (MASK) { return select(0.0, dy[o], y[o] > 0.0); }
    return dy[o];
}

const LANES: u32 = 64u;
var<workgroup> red_g: array<f32, 64>;
var<workgroup> red_b: array<f32, 64>;

fn at(c: u32, i: u32) -> u32 {
    return ((i / PLANE) * CHANNELS + c) * PLANE + i % PLANE;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x;
    let count = p.batch * PLANE;
    let mean = saved[2u * c];
    let invstd = saved[2u * c + 1u];
    var sg = 0.0;
    var sb = 0.0;
    for (var i = lid; i < count; i += LANES) {
        let o = at(c, i);
        let g = grad(o);
        sb += g;
        sg += g * (x[o] - mean) * invstd;
    }
    red_g[lid] = sg;
    red_b[lid] = sb;
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            red_g[lid] += red_g[lid + half];
            red_b[lid] += red_b[lid + half];
        }
        workgroupBarrier();
    }
    let dg = red_g[0];
    let db = red_b[0];
    if (lid == 0u) {
        dgamma[c] = dg;
        dbeta[c] = db;
    }
    let inv_n = 1.0 / f32(count);
    let k = gamma[c] * invstd;
    for (var i = lid; i < count; i += LANES) {
        let o = at(c, i);
        let x_hat = (x[o] - mean) * invstd;
        dx[o] = k * (grad(o) - db * inv_n - x_hat * dg * inv_n);
    }
}

// The same with every image's plane read as vec4s, where PLANE is a multiple of 4 (see
// batchnorm2d_forward.wgsl's main_vec4).
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> y4: array<vec4<f32>>;

override PLANE4: u32 = PLANE / 4u;

fn at4(c: u32, i: u32) -> u32 {
    return ((i / PLANE4) * CHANNELS + c) * PLANE4 + i % PLANE4;
}

fn grad4(o: u32) -> vec4<f32> {
    if (MASK) { return select(vec4<f32>(0.0), dy4[o], y4[o] > vec4<f32>(0.0)); }
    return dy4[o];
}

@compute @workgroup_size(64, 1, 1)
fn main_vec4(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x;
    let count4 = p.batch * PLANE4;
    let mean = saved[2u * c];
    let invstd = saved[2u * c + 1u];
    var sg = vec4<f32>(0.0);
    var sb = vec4<f32>(0.0);
    for (var i = lid; i < count4; i += LANES) {
        let o = at4(c, i);
        let g = grad4(o);
        sb += g;
        sg += g * (x4[o] - vec4<f32>(mean)) * invstd;
    }
    let ones = vec4<f32>(1.0);
    red_g[lid] = dot(sg, ones);
    red_b[lid] = dot(sb, ones);
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            red_g[lid] += red_g[lid + half];
            red_b[lid] += red_b[lid + half];
        }
        workgroupBarrier();
    }
    let dg = red_g[0];
    let db = red_b[0];
    if (lid == 0u) {
        dgamma[c] = dg;
        dbeta[c] = db;
    }
    let inv_n = 1.0 / f32(4u * count4);
    let k = gamma[c] * invstd;
    for (var i = lid; i < count4; i += LANES) {
        let o = at4(c, i);
        let x_hat = (x4[o] - vec4<f32>(mean)) * invstd;
        dx4[o] = k * (grad4(o) - vec4<f32>(db * inv_n) - x_hat * (dg * inv_n));
    }
}
