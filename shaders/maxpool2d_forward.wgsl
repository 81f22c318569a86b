// maxpool2d_forward: y = max over each KxK window (stride S, floor mode), and the argmax as
// PyTorch stores it: the flat index iy*W + ix inside the input plane. The first maximum in
// row-major window order wins ties; a NaN wins over everything (PyTorch propagates NaN).
// x [P, H, W] (P = batch * channels planes) -> y, idx [P, OH, OW].

// The plane shape is given as override constants: the index arithmetic then divides by
// constants (a multiply and shift) instead of by runtime values, which llvmpipe scalarises.
override H: u32;
override W: u32;
override K: u32;
override STRIDE: u32;
override OH: u32 = (H - K) / STRIDE + 1u;
override OW: u32 = (W - K) / STRIDE + 1u;

struct Params { total: u32, _p0: u32, _p1: u32, _p2: u32 }

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
    let ox = o % OW;
    let oy = (o / OW) % OH;
    let plane = o / (OW * OH);
    let base = plane * H * W;
    var best = -3.402823e38;
    var best_i = (oy * STRIDE) * W + ox * STRIDE;
    var first = true;
    for (var ky = 0u; ky < K; ky++) {
        for (var kx = 0u; kx < K; kx++) {
            let i = (oy * STRIDE + ky) * W + ox * STRIDE + kx;
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
