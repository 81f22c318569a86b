// maxpool2d_backward: routes each output grad to the input pixel its argmax names.
// A gather: each invocation owns one input pixel and sums the grads of every window whose
// argmax is that pixel (one window when stride == kernel, as in LeNet), so no atomics.
// With `relu_mask` set it also applies the ReLU below the pool: the grad is zeroed where the
// pooled activation `act` (the ReLU's output) is not positive, PyTorch's relu backward.
// dy, idx [P, OH, OW], act [P, H, W] -> dx [P, H, W].

// The plane shape is given as override constants (divisions by constants are cheap).
override H: u32;
override W: u32;
override K: u32;
override STRIDE: u32;
override RELU_MASK: bool;
override OH: u32 = (H - K) / STRIDE + 1u;
override OW: u32 = (W - K) / STRIDE + 1u;

struct Params { total: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> act: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.total) { return; }
    let ix = i % W;
    let iy = (i / W) % H;
    let plane = i / (W * H);
    let flat = iy * W + ix;
    // Windows oy with oy*STRIDE <= iy < oy*STRIDE + K.
    let oy_lo = select(0u, (iy + 1u - K + STRIDE - 1u) / STRIDE, iy + 1u > K);
    let oy_hi = min(OH, iy / STRIDE + 1u);
    let ox_lo = select(0u, (ix + 1u - K + STRIDE - 1u) / STRIDE, ix + 1u > K);
    let ox_hi = min(OW, ix / STRIDE + 1u);
    var acc = 0.0;
    for (var oy = oy_lo; oy < oy_hi; oy++) {
        for (var ox = ox_lo; ox < ox_hi; ox++) {
            let o = (plane * OH + oy) * OW + ox;
            if (idx[o] == flat) { acc += dy[o]; }
        }
    }
    if (RELU_MASK && !(act[i] > 0.0)) { acc = 0.0; }
    dx[i] = acc;
}

// When the windows tile the plane exactly (stride == kernel, no leftover rows or columns, as in
// LeNet) each input pixel belongs to exactly one window, and one invocation per window can
// write all K*K of its pixels: three loads (dy, the argmax, and the activation at the argmax
// for the ReLU mask) per K*K outputs instead of three per output.
@compute @workgroup_size(64, 1, 1)
fn per_window(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * 64u;
    if (o >= p.total) { return; }   // total counts windows (outputs) here
    let ox = o % OW;
    let oy = (o / OW) % OH;
    let plane = o / (OW * OH);
    let base = plane * H * W;
    let arg = idx[o];
    var g = dy[o];
    if (RELU_MASK && !(act[base + arg] > 0.0)) { g = 0.0; }
    for (var ky = 0u; ky < K; ky++) {
        for (var kx = 0u; kx < K; kx++) {
            let i = (oy * K + ky) * W + ox * K + kx;
            dx[base + i] = select(0.0, g, i == arg);
        }
    }
}
