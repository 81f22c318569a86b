// maxpool2d_forward: y = max over each KxK window (stride S, floor mode), and the argmax as
// PyTorch stores it: the flat index iy*W + ix inside the input plane. The first maximum in
// row-major window order wins ties; a NaN wins over everything (PyTorch propagates NaN).
// x [P, H, W] (P = batch * channels planes) -> y, idx [P, OH, OW].

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, k: u32, stride: u32, total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx: array<u32>;

// A bit test: `v != v` may be folded away by fast-math shader compilers (llvmpipe does).
fn is_nan(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * 64u;
    if (o >= p.total) { return; }
    let ox = o % p.ow;
    let oy = (o / p.ow) % p.oh;
    let plane = o / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    var best = -3.402823e38;
    var best_i = (oy * p.stride) * p.w + ox * p.stride;
    var first = true;
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let i = (oy * p.stride + ky) * p.w + ox * p.stride + kx;
            let v = x[base + i];
            if (first || v > best || is_nan(v)) {
                if (is_nan(best)) { continue; } // keep the first NaN
                best = v;
                best_i = i;
                first = false;
            }
        }
    }
    y[o] = best;
    idx[o] = best_i;
}
