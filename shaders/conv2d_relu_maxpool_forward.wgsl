// conv2d_relu_maxpool_forward: p = maxpool2x2(relu(conv(x, w) + b)) with the argmax, in one pass.
// x [B, CIN, H, W], w [COUT, CIN, KH, KW], b [COUT] -> p, idx [B, COUT, OH / 2, OW / 2]; idx is
// PyTorch's, the flat index oy * OW + ox of the window's maximum inside the conv output plane,
// masked: 0xffffffff where the maximum is not positive (the ReLU passes no grad there), the
// argmax that conv2d_backward_weight_subgroup.wgsl's POOLED variant reads. Used where that
// variant runs, so nothing needs the conv output itself.
//
// The same convolution as conv2d_forward.wgsl (read that first), fused with the ReLU and the 2x2,
// stride 2 max-pool after it, so the conv output never goes to memory: one invocation computes a
// 2 x 4 block of conv outputs (rows 2py and 2py + 1, columns 4q .. 4q + 3) for CO_TILE output
// channels and writes the two pooled values and their argmax. Input rows 2py .. 2py + KH each feed
// both conv rows (as kernel rows iy and iy - 1), so each is loaded once. On lavapipe this saves
// the conv output's stores (a quarter of conv1's forward time), the pool's loads and its dispatch.
//
// Ties and NaN follow maxpool2d_forward.wgsl: the first maximum in row-major window order wins,
// a NaN wins over everything and the first NaN is kept.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override CO_TILE: u32;   // output channels per invocation (2 * CO_TILE vec4 accumulators)
// Stride 1, no padding (the Rust side checks); declared for the constants every conv shares.
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
override OH: u32 = H - KH + 1u;
override OW: u32 = W - KW + 1u;
override PH: u32 = OH / 2u;                 // pooled rows and columns (floor mode)
override PW: u32 = OW / 2u;
override GROUPS: u32 = (PW + 1u) / 2u;      // quads of conv columns (pairs of pooled columns) per row

const MAX_SEG: u32 = 20u;  // 4 outputs + kernel width up to 16 - 1
const MAX_CO: u32 = 8u;
const MAX_WL: u32 = 16u;   // CO_TILE * KW / SHARE: 8 channels x width 16 / 8

// The dispatch covers images b0 .. b0 + images; `x` is bound from image b0 on (the whole batch,
// or a 64 KiB uniform window of it: see `x_at`).
struct Params { batch: u32, b0: u32, images: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
fn x_at(i: u32) -> f32 { return x[i]; }
const WEIGHT_VEC4S: u32 = 1u;  // sizes of the uniform arrays, written in by the Rust side
const BIAS_VEC4S: u32 = 1u;
@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, WEIGHT_VEC4S>;
@group(0) @binding(3) var<uniform> bias: array<vec4<f32>, BIAS_VEC4S>;
fn weight(i: u32) -> f32 { return wt[i >> 2u][i & 3u]; }
fn bias_of(i: u32) -> f32 { return bias[i >> 2u][i & 3u]; }
@group(0) @binding(4) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(5) var<storage, read_write> argmax: array<u32>;
// Stores pool outputs o and, where `both`, o + 1 (o even). Where the pooled width is even, both
// always hold and the Rust side (`paired_stores`) binds the outputs as vec2 arrays and stores
// each pair at once: llvmpipe stores lane by lane, one loop per store whatever its width, so
// this halves conv1's 150k store loops a step.
fn store_pair(o: u32, v: vec2<f32>, arg: vec2<u32>, both: bool) {
    pooled[o] = v.x;
    argmax[o] = arg.x;
    if (both) {
        pooled[o + 1u] = v.y;
        argmax[o + 1u] = arg.y;
    }
}

// Lanes that share their weight loads; `share(v, l)` is lane l's `v` (rewritten together).
const SHARE: u32 = 1u;
fn share(v: f32, lane: u32) -> f32 { return v; }

fn is_nan(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

// The running maximum of a window, starting from its first value: a later value wins if it is
// larger or a NaN, unless the maximum so far is already a NaN. (Written without arrays or loops:
// a loop over the window with `continue` measured 10x slower on llvmpipe, its arrays spilled.)
struct Best { v: f32, i: u32 }
fn consider(b: Best, v: f32, i: u32) -> Best {
    if ((v > b.v || is_nan(v)) && !is_nan(b.v)) { return Best(v, i); }
    return b;
}

// The 4 + KW - 1 inputs of row y that the invocation's 4 columns from ox0 see (past the row's
// end only for conv outputs that are not pooled).
fn input_row(b: u32, ci: u32, y: u32, ox0: u32) -> array<f32, MAX_SEG> {
    let row = ((b * CIN + ci) * H + y) * W;
    var seg: array<f32, MAX_SEG>;
    for (var j = 0u; j < 4u + KW - 1u; j++) {
        seg[j] = x_at(row + min(ox0 + j, W - 1u));
    }
    return seg;
}

// With SHARE > 1: kernel row ky's weights of channels co0 .. co0 + CO_TILE, element
// e = t * KW + kx, lane l loading e = j * 8 + l (a constant trip count, so the loop unrolls and
// the array stays in registers).
fn shared_weights(co0: u32, ci: u32, ky: u32, lane: u32) -> array<f32, MAX_WL> {
    var wl: array<f32, MAX_WL>;
    for (var j = 0u; j < select(0u, (CO_TILE * KW + SHARE - 1u) / SHARE, SHARE > 1u); j++) {
        let e = min(j * SHARE + lane, CO_TILE * KW - 1u);
        wl[j] = weight(((min(co0 + e / KW, COUT - 1u) * CIN + ci) * KH + ky) * KW + e % KW);
    }
    return wl;
}

// Adds kernel row ky's terms, over the inputs `seg`, to conv row oy0 + r of every channel.
fn add_terms(acc: ptr<function, array<vec4<f32>, 16>>, r: u32, seg: array<f32, MAX_SEG>, wl: array<f32, MAX_WL>, co0: u32, ci: u32, ky: u32) {
    for (var t = 0u; t < CO_TILE; t++) {
        let co = min(co0 + t, COUT - 1u);
        for (var kx = 0u; kx < KW; kx++) {
            let xv = vec4<f32>(seg[kx], seg[kx + 1u], seg[kx + 2u], seg[kx + 3u]);
            let e = t * KW + kx;
            var wv: f32;
            if (SHARE > 1u) { wv = share(wl[e / SHARE], e % SHARE); } else { wv = weight(((co * CIN + ci) * KH + ky) * KW + kx); }
            (*acc)[2u * t + r] += wv * xv;
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lane_id: u32,
) {
    // Invocations run over (image, pooled row, quad); with SHARE > 1 idle lanes of the last
    // workgroup compute a clamped duplicate and write nothing (shuffles need them running).
    let live = gid.x < p.images * PH * GROUPS;
    if (SHARE == 1u && !live) { return; }
    let flat = min(gid.x, p.images * PH * GROUPS - 1u);
    let lane = lane_id % SHARE;
    let co0 = wid.y * CO_TILE;
    let b = flat / (PH * GROUPS);   // image within the bound input
    let bo = p.b0 + b;              // image within the batch (the output)
    let tile = flat % (PH * GROUPS);
    let py = tile / GROUPS;
    let ox0 = (tile % GROUPS) * 4u;
    let oy0 = 2u * py;

    var acc: array<vec4<f32>, 16>;   // [t * 2 + r]: conv row oy0 + r
    for (var t = 0u; t < CO_TILE; t++) {
        let bv = vec4<f32>(bias_of(min(co0 + t, COUT - 1u)));
        acc[2u * t] = bv;
        acc[2u * t + 1u] = bv;
    }
    // Input row oy0 + iy feeds conv row oy0 with kernel row iy (iy < KH) and conv row oy0 + 1
    // with kernel row iy - 1 (iy >= 1). The first and last input rows are peeled off the loop, so
    // no multiply-add sits behind an `if`: llvmpipe runs a branch's body with lanes masked off,
    // and a masked update of the accumulators costs a blend per multiply-add. The loop over rows
    // is written out when the pipeline is built (`kernels::unroll`): inside a loop llvmpipe
    // writes every carried variable under the loop's lane mask (a blend, and a stack slot for
    // the accumulators), and Mesa leaves loops this big rolled. (Writing out the channel loop
    // too measured 10% faster for conv1 but tripled its LLVM compile time, 3.7 -> 7.5 s to the
    // first step with a cold cache: llvmpipe compiles a compute shader as a coroutine, whose
    // frame building grows faster than the code.)
    for (var ci = 0u; ci < CIN; ci++) {
        var wl_prev = shared_weights(co0, ci, 0u, lane);
        add_terms(&acc, 0u, input_row(b, ci, oy0, ox0), wl_prev, co0, ci, 0u);
        for (var k = 0u; k < KH - 1u; k++) { // unroll
            let iy = k + 1u;
            let seg = input_row(b, ci, oy0 + iy, ox0);
            let wl = shared_weights(co0, ci, iy, lane);
            add_terms(&acc, 0u, seg, wl, co0, ci, iy);
            add_terms(&acc, 1u, seg, wl_prev, co0, ci, iy - 1u);
            wl_prev = wl;
        }
        add_terms(&acc, 1u, input_row(b, ci, oy0 + KH, ox0), wl_prev, co0, ci, KH - 1u);
    }
    for (var t = 0u; t < CO_TILE; t++) {
        let co = co0 + t;
        if (co >= COUT || !live) { break; }
        let r0 = max(acc[2u * t], vec4<f32>(0.0));
        let r1 = max(acc[2u * t + 1u], vec4<f32>(0.0));
        // The two pool windows of the 4 columns (the second past the edge where PW is odd).
        var best: vec2<f32>;
        var arg: vec2<u32>;
        for (var k = 0u; k < 2u; k++) {
            let pc = ox0 / 2u + k;
            // The window in row-major order: (oy0, 2pc), (oy0, 2pc + 1), (oy0 + 1, 2pc), (oy0 + 1, 2pc + 1).
            let i0 = oy0 * OW + 2u * pc;
            var m = Best(r0[2u * k], i0);
            m = consider(m, r0[2u * k + 1u], i0 + 1u);
            m = consider(m, r1[2u * k], i0 + OW);
            m = consider(m, r1[2u * k + 1u], i0 + OW + 1u);
            best[k] = m.v;
            arg[k] = select(m.i, 0xffffffffu, !(m.v > 0.0));
        }
        store_pair(((bo * COUT + co) * PH + py) * PW + ox0 / 2u, best, arg, ox0 / 2u + 1u < PW);
    }
}
