// batchnorm2d_forward: nn.BatchNorm2d over x [N, C, H, W], one workgroup per channel.
// Training (p.train = 1): the channel's mean and biased variance over N, H, W (two passes, each
// lane summing a fixed stride of elements and the 64 lane sums reduced in a fixed tree order, so
// a run is reproducible bit for bit), saved as [mean, 1/sqrt(var + eps)] for the backward, and
// the running statistics updated as PyTorch does (running_var from the unbiased variance).
// Evaluation (p.train = 0): the running statistics. Then y = (x - mean) * invstd * gamma + beta,
// with a ReLU on top where RELU. The layer's shape is override constants (a division by a
// constant is a multiply on every adapter); the batch, which differs for the last partial batch,
// and the mode are uniform params.

override CHANNELS: u32;
override PLANE: u32;
override RELU: bool;
// y = BN(x) + res (then the ReLU): a residual block's join, in the same pass. Without it `res`
// is bound to any buffer and not read.
override RESIDUAL: bool = false;

struct Params { batch: u32, train: u32, momentum: f32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> saved: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read> res: array<f32>;

const LANES: u32 = 64u;
var<workgroup> red: array<f32, 64>;

// Element i of the channel's N*H*W values: image i / plane, pixel i % plane.
fn at(c: u32, i: u32) -> u32 {
    return ((i / PLANE) * CHANNELS + c) * PLANE + i % PLANE;
}

// The sum of the 64 lanes' values, in a fixed order; every lane gets it.
fn reduce(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half >>= 1u) {
        if (lid < half) { red[lid] += red[lid + half]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x;
    let count = p.batch * PLANE;
    var mean: f32;
    var invstd: f32;
    if (p.train == 1u) {
        // Summed relative to the channel's first value: exact for a constant channel (whose
        // variance is then exactly 0) and more accurate wherever the mean is large.
        let shift = x[at(c, 0u)];
        var s = 0.0;
        for (var i = lid; i < count; i += LANES) { s += x[at(c, i)] - shift; }
        mean = shift + reduce(lid, s) / f32(count);
        var q = 0.0;
        for (var i = lid; i < count; i += LANES) {
            let d = x[at(c, i)] - mean;
            q += d * d;
        }
        let var_biased = reduce(lid, q) / f32(count);
        invstd = 1.0 / sqrt(var_biased + p.eps);
        if (lid == 0u) {
            saved[2u * c] = mean;
            saved[2u * c + 1u] = invstd;
            let unbiased = var_biased * f32(count) / f32(count - 1u);
            running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
            running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
        }
    } else {
        mean = running_mean[c];
        invstd = 1.0 / sqrt(running_var[c] + p.eps);
    }
    let scale = invstd * gamma[c];
    let shift = beta[c];
    for (var i = lid; i < count; i += LANES) {
        let o = at(c, i);
        var v = (x[o] - mean) * scale + shift;
        if (RESIDUAL) { v += res[o]; }
        if (RELU) { v = max(v, 0.0); }
        y[o] = v;
    }
}

// The same with every image's plane read as vec4s, where PLANE is a multiple of 4 (every plane
// of the networks here): a storage load costs llvmpipe about the same per lane whatever its
// width, so four values a load make the three passes over x about 4x cheaper.
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> res4: array<vec4<f32>>;

override PLANE4: u32 = PLANE / 4u;

fn at4(c: u32, i: u32) -> u32 {
    return ((i / PLANE4) * CHANNELS + c) * PLANE4 + i % PLANE4;
}

@compute @workgroup_size(64, 1, 1)
fn main_vec4(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x;
    let count4 = p.batch * PLANE4;
    let count = 4u * count4;
    let ones = vec4<f32>(1.0);
    var mean: f32;
    var invstd: f32;
    if (p.train == 1u) {
        let shift = x4[at4(c, 0u)].x;
        var s = vec4<f32>(0.0);
        for (var i = lid; i < count4; i += LANES) { s += x4[at4(c, i)] - vec4<f32>(shift); }
        mean = shift + reduce(lid, dot(s, ones)) / f32(count);
        var q = vec4<f32>(0.0);
        for (var i = lid; i < count4; i += LANES) {
            let d = x4[at4(c, i)] - vec4<f32>(mean);
            q += d * d;
        }
        let var_biased = reduce(lid, dot(q, ones)) / f32(count);
        invstd = 1.0 / sqrt(var_biased + p.eps);
        if (lid == 0u) {
            saved[2u * c] = mean;
            saved[2u * c + 1u] = invstd;
            let unbiased = var_biased * f32(count) / f32(count - 1u);
            running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
            running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
        }
    } else {
        mean = running_mean[c];
        invstd = 1.0 / sqrt(running_var[c] + p.eps);
    }
    let scale = invstd * gamma[c];
    let shift = beta[c];
    for (var i = lid; i < count4; i += LANES) {
        let o = at4(c, i);
        var v = (x4[o] - vec4<f32>(mean)) * scale + vec4<f32>(shift);
        if (RESIDUAL) { v += res4[o]; }
        if (RELU) { v = max(v, vec4<f32>(0.0)); }
        y4[o] = v;
    }
}
