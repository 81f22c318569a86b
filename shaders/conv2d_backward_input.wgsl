// conv2d_backward_input: dx = full correlation of dy with the flipped kernel (for a stride S,
// of dy with zeros between its pixels), zero padding PAD removed.
// dy [B, COUT, OH, OW], w [COUT, CIN, KH, KW] -> dx [B, CIN, H, W], or dx += that (ACCUMULATE:
// the second branch of a residual block adding its grad to the first's).
//
// A gather, not a scatter: each invocation owns PXQ quads (4 * PXQ horizontally adjacent
// input pixels) of CI_TILE input channels and sums every (co, ky, kx) term that reaches them in
// a fixed order, so there are no atomics and the result is bit-reproducible. Per (co, ky) it
// loads the dy row segment those pixels see (4 * PXQ + KW - 1 values, zero outside the output)
// once, and reuses it for CI_TILE * KW * PXQ vec4 multiply-adds. Input channels come from the
// workgroup id, so every lane needs the same weights; they come through a uniform binding
// (about ten times cheaper per float than a storage load on llvmpipe; the constant cache on
// GPUs) and, where subgroups allow it, SHARE = 8 lanes load 8 different weights and pass them
// round with subgroupShuffle (see conv2d_forward.wgsl). Shapes are override constants: constant
// loops, unrolled, arrays in registers.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override CI_TILE: u32;   // input channels per invocation
override PXQ: u32;       // quads of 4 input pixels per invocation; CI_TILE * PXQ <= 32
override STRIDE: u32 = 1u;   // 1, 2 or 4: a divisor of the 4 pixels of a quad
override PAD: u32 = 0u;      // less than KW
override OH: u32 = (H + 2u * PAD - KH) / STRIDE + 1u;
override OW: u32 = (W + 2u * PAD - KW) / STRIDE + 1u;
override ACCUMULATE: bool = false;
// Stride > 1 and the lanes sharing weight loads all on rows of one parity (set by the Rust side):
// only every STRIDE-th kernel row reaches a dy row, so the ky loop steps over the others.
override ROW_PARITY: bool = false;
// Output channels one dispatch sums: all, or a block whose weights fit a uniform binding (the
// blocks after the first add to dx).
override CO_BLOCK: u32 = COUT;
// A row segment holds dy[oy, ix0 / STRIDE - SEG0 + j], j < SEGN: every dy column a quad of
// input pixels from ix0 on reaches.
override SEG0: u32 = (KW - 1u - PAD + STRIDE - 1u) / STRIDE;
override SEGN: u32 = (4u * PXQ - 1u + PAD + STRIDE * SEG0) / STRIDE + 1u;
// POOLED: dy comes as the grad of the 2x2/2 max-pool after this layer's ReLU (see POOLED in
// conv2d_backward_weight_subgroup.wgsl): `dy` holds the pooled grads [B, COUT, OH/2, OW/2] and
// `pidx` their masked argmax; an output pixel's dy is its window's grad where it is the argmax.
override POOLED: bool = false;
override PH: u32 = OH / 2u;
override PW: u32 = OW / 2u;
override QUADS: u32 = (W + 3u) / 4u;
override GROUPS: u32 = (QUADS + PXQ - 1u) / PXQ;   // invocations per input row

const MAX_SEG: u32 = 44u;
const MAX_ACC: u32 = 32u;
const MAX_WL: u32 = 13u;    // CI_TILE * KW / SHARE: 8 channels x width 13 / 8

// The dispatch covers images b0 .. b0 + images; `dy` is bound from image b0 on (the whole batch,
// or a 64 KiB uniform window of it: see `dy_at`).
// Output channels from co_base on (their weights bound from there on).
struct Params { batch: u32, b0: u32, images: u32, co_base: u32 }

@group(0) @binding(0) var<uniform> p: Params;
// Rewritten into a uniform window where uniform loads are cheap (see conv2d_forward.wgsl).
@group(0) @binding(1) var<storage, read> dy: array<f32>;
fn dy_at(i: u32) -> f32 { return dy[i]; }
// Only the POOLED variant binds the argmax (the Rust side swaps this line for the binding).
fn pidx_at(i: u32) -> f32 { return 0.0; }
const WEIGHT_VEC4S: u32 = 1u;  // written in when the pipeline is built (see `with_const`)
@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, WEIGHT_VEC4S>;

fn weight(i: u32) -> f32 { return wt[i >> 2u][i & 3u]; }
// Lanes that share their weight loads; `share(v, l)` is lane l's `v` (rewritten together).
const SHARE: u32 = 1u;
fn share(v: f32, lane: u32) -> f32 { return v; }
// The least and greatest `v` among the lanes sharing loads with this one (rewritten to
// subgroupMin / subgroupMax with `share`: lanes that share loads run the same loop trips, so
// every shuffle reads a lane that is still in the loop).
fn lanes_min(v: u32) -> u32 { return v; }
fn lanes_max(v: u32) -> u32 { return v; }
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lane_id: u32,
) {
    // Invocations run over (image, input row, group of quads); with SHARE > 1 idle lanes of the
    // last workgroup compute a clamped duplicate and write nothing (shuffles need them running).
    let live = gid.x < p.images * H * GROUPS;
    if (SHARE == 1u && !live) { return; }
    let flat = min(gid.x, p.images * H * GROUPS - 1u);
    let lane = lane_id % SHARE;
    let ci0 = wid.y * CI_TILE;
    let co_base = p.co_base;   // read once: llvmpipe does not hoist uniform loads out of loops
    let b = flat / (H * GROUPS);   // image within the bound dy
    let bo = p.b0 + b;             // image within the batch (the output)
    let tile = flat % (H * GROUPS);
    let iy = i32(tile / GROUPS);
    let ix0 = i32((tile % GROUPS) * PXQ * 4u);

    // Only the kernel rows that reach input row iy from inside dy (0 <= iy + PAD - ky <=
    // (OH - 1) * STRIDE): for LeNet's conv2, 50 of the 70 (row, ky) pairs; the others would read
    // only the zeros outside dy. A loop bound, not a branch: llvmpipe runs both sides of an `if`
    // with lanes masked off but leaves a loop once no lane is left in it.
    var ky_lo = lanes_min(u32(max(iy + i32(PAD) - i32((OH - 1u) * STRIDE), 0)));
    let ky_hi = lanes_max(min(u32(iy) + PAD + 1u, KH));
    var ky_step = 1u;
    if (ROW_PARITY) {
        // The first kernel row with iy + PAD - ky a multiple of STRIDE, then every STRIDE-th.
        ky_lo += (u32(iy) + PAD - ky_lo) % STRIDE;
        ky_step = STRIDE;
    }
    var acc: array<vec4<f32>, MAX_ACC>;   // [t][q]
    for (var cl = 0u; cl < CO_BLOCK; cl++) {
        let co = co_base + cl;
        for (var ky = ky_lo; ky < ky_hi; ky += ky_step) {
            let num = iy + i32(PAD) - i32(ky);   // oy * STRIDE where this tap reaches a dy row
            let oy = num / i32(STRIDE);
            let row_ok = num >= 0 && num % i32(STRIDE) == 0 && oy < i32(OH);
            let row = i32((b * COUT + co) * OH * OW) + select(0, oy, row_ok) * i32(OW);
            // seg[j] = dy[oy, ix0 + j - (KW - 1)], zero outside the output.
            var seg: array<f32, MAX_SEG>;
            if (POOLED && (KW - 1u) % 2u == 0u) {
                // ix0 and KW - 1 even: seg[2h] and seg[2h + 1] lie in one pool window, whose
                // grad and argmax are loaded once for both.
                let py = u32(max(oy, 0)) / 2u;
                let prow = ((b * COUT + co) * PH + min(py, PH - 1u)) * PW;
                for (var h = 0u; h < (4u * PXQ + KW) / 2u; h++) {
                    let ox = ix0 + i32(2u * h) - i32(KW - 1u);
                    let px = u32(max(ox, 0)) / 2u;
                    let ok = row_ok && py < PH && ox >= 0 && px < PW;
                    let at = prow + min(px, PW - 1u);
                    let arg = bitcast<u32>(pidx_at(at));
                    let g = select(0.0, dy_at(at), ok);
                    let first = u32(max(oy, 0)) * OW + u32(max(ox, 0));
                    seg[2u * h] = select(0.0, g, arg == first);
                    if (2u * h + 1u < 4u * PXQ + KW - 1u) {
                        seg[2u * h + 1u] = select(0.0, g, arg == first + 1u);
                    }
                }
            } else if (POOLED) {
                let py = u32(max(oy, 0)) / 2u;
                let prow = ((b * COUT + co) * PH + min(py, PH - 1u)) * PW;
                for (var j = 0u; j < 4u * PXQ + KW - 1u; j++) {
                    let ox = ix0 + i32(j) - i32(KW - 1u);
                    let px = u32(max(ox, 0)) / 2u;
                    let ok = row_ok && py < PH && ox >= 0 && px < PW;
                    let at = prow + min(px, PW - 1u);
                    let here = bitcast<u32>(pidx_at(at)) == u32(max(oy, 0)) * OW + u32(max(ox, 0));
                    seg[j] = select(0.0, dy_at(at), ok && here);
                }
            } else {
                for (var j = 0u; j < SEGN; j++) {
                    let ox = ix0 / i32(STRIDE) - i32(SEG0) + i32(j);
                    let ok = row_ok && ox >= 0 && ox < i32(OW);
                    seg[j] = select(0.0, dy_at(u32(row + clamp(ox, 0, i32(OW) - 1))), ok);
                }
            }
            // Shared: this (co, ky)'s weights, element e = t * KW + kx, lane l loading e = j * 8 + l.
            var wl: array<f32, MAX_WL>;
            for (var j = 0u; j < select(0u, (CI_TILE * KW + SHARE - 1u) / SHARE, SHARE > 1u); j++) {
                let e = min(j * SHARE + lane, CI_TILE * KW - 1u);
                wl[j] = weight(((cl * CIN + min(ci0 + e / KW, CIN - 1u)) * KH + ky) * KW + e % KW);
            }
            for (var t = 0u; t < CI_TILE; t++) {
                for (var kx = 0u; kx < KW; kx++) {
                    var wv: f32;
                    if (SHARE > 1u) {
                        let e = t * KW + kx;
                        wv = share(wl[e / SHARE], e % SHARE);
                    } else {
                        wv = weight(((cl * CIN + min(ci0 + t, CIN - 1u)) * KH + ky) * KW + kx);
                    }
                    for (var q = 0u; q < PXQ; q++) {
                        if (STRIDE == 1u) {
                            // Pixel ix0 + 4q + i reads dy at ox = ix0 + 4q + i + PAD - kx:
                            // seg[4q + i + KW - 1 - kx].
                            let s0 = 4u * q + KW - 1u - kx;
                            acc[t * PXQ + q] += wv * vec4<f32>(seg[s0], seg[s0 + 1u], seg[s0 + 2u], seg[s0 + 3u]);
                        } else {
                            // Pixel ix0 + 4q + i reaches a dy column through tap kx only where
                            // 4q + i + PAD - kx is a multiple of STRIDE (constants, once unrolled).
                            var v = vec4<f32>(0.0);
                            for (var i = 0u; i < 4u; i++) {
                                let n = 4u * q + i + PAD + STRIDE * SEG0 - kx;
                                if (n % STRIDE == 0u) { v[i] = seg[n / STRIDE]; }
                            }
                            acc[t * PXQ + q] += wv * v;
                        }
                    }
                }
            }
        }
    }
    for (var t = 0u; t < CI_TILE; t++) {
        let ci = ci0 + t;
        if (ci >= CIN || !live) { break; }
        let out = ((bo * CIN + ci) * H + u32(iy)) * W;
        for (var q = 0u; q < PXQ; q++) {
            for (var j = 0u; j < 4u; j++) {
                let ix = u32(ix0) + 4u * q + j;
                if (ix < W) {
                    if (ACCUMULATE || co_base > 0u) {
                        dx[out + ix] = dx[out + ix] + acc[t * PXQ + q][j];
                    } else {
                        dx[out + ix] = acc[t * PXQ + q][j];
                    }
                }
            }
        }
    }
}
