// gemm_uniform_a: the GEMM of gemm.wgsl with its A operand read through a uniform binding.
// C[i, j] (+)= sum_k A(i, k) * B(k, j), then + bias[j], ReLU, or the ReLU-backward mask
// (override constants: see the epilogue below).
//
// Why: on llvmpipe a storage load costs ~5 ns per lane whatever its address, a uniform load
// with the same address in every lane ~0.5 ns per float (examples/loadcost.rs). Here the 8
// lanes of a workgroup share their 8 rows of A, so A comes from a uniform buffer and only B
// is read from storage: per k, 4 storage loads feed 32 multiply-adds (gemm.wgsl: 8 for 16).
// A uniform binding holds at most 64 KiB, so the Rust side splits A into windows: over output
// rows (forward, input grad; one dispatch each) or over the reduction (weight grad). Where B is
// a uniform window too but does not fit one (fc1's weights), B is split as well: over output
// columns (forward) or over the reduction (input grad). Up to 4 windows share a dispatch, each
// with its own bindings (`// window` below): summed in turn over the reduction (a C load and
// store per element cost fc1's gradients more than their multiply-adds: 0.45 ms of ~1.3 each),
// or each workgroup running its own column window's loop (COLUMN_WINDOWS). Past 4 windows over
// the reduction, later dispatches accumulate into C in a fixed order, keeping results
// reproducible.

struct Params {
    m: u32, n: u32, k: u32, ldc: u32,          // this dispatch: rows, cols, reduction length
    a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32, // strides of A (in the window) and B
    c_row0: u32, b_k0: u32,                     // first output row; first reduction index in B
    c_col0: u32, a_k0: u32,                     // first output column; first reduction index in A
    // Up to 3 windows after the first when one dispatch covers several (see `// window` below):
    // (k, a_k0, b_k0, first column) each.
    more: array<vec4<u32>, 3>,
}

// The epilogue, one pipeline per combination: llvmpipe runs both sides of an `if` with lanes
// masked off, so a C or aux load behind a flag read at run time cost a (masked) gather per
// element even when the flag was off (fc1's weight grad: 1.20 -> 1.08 ms as constants).
override HAS_BIAS: bool = false;
override RELU: bool = false;
override MASK: bool = false;       // zero where aux (same shape as C) is not positive
override ACCUMULATE: bool = false; // add to C (windows over the reduction after the first)
// The weight grad's epilogue also writes the layer's bias grad, db[i] = sum over k of A(i, k)
// (A = dyᵀ), from the A values the multiply-adds already hold: one dispatch fewer per layer, and
// a lone bias-grad dispatch cost ~50-100 µs on llvmpipe for a few hundred adds.
override BIAS_GRAD: bool = false;
// The dispatch's windows of B are over output columns (fc1's forward: W's rows), not over the
// reduction: window w holds columns [start_w, start_w+1) of this dispatch (the last to its end),
// each a whole number of workgroups, and a workgroup runs only its own window's loop. llvmpipe
// runs a loop until no lane is left in it, so the others cost a test each: one dispatch instead
// of one per window (each a hand-off of the cores and a few workgroups to share between them).
override COLUMN_WINDOWS: bool = false;
const WINDOWS: u32 = 1u;   // windows this pipeline reads (see `more_windows`)
fn col_start(w: u32) -> u32 {
    if (w == 0u) { return 0u; }
    return p.more[w - 1u].w;
}
fn in_window(j0: u32, w: u32) -> bool {
    if (!COLUMN_WINDOWS) { return true; }
    let end = select(col_start(min(w + 1u, 3u)), 0xffffffffu, w + 1u >= WINDOWS);
    return j0 >= col_start(w) && j0 < end;
}

const A_VEC4S: u32 = 1u;  // the window's size in vec4s, written in when the pipeline is built

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> a: array<vec4<f32>, A_VEC4S>;
// B: a storage buffer, or (rewritten by the Rust side, see `uniform_input`) a uniform window
// too, when B fits one (the weights of fc2 and fc3) or windows of it follow A's windows over
// the reduction (the weight grads).
@group(0) @binding(2) var<storage, read> b: array<f32>;
fn b_at(i: u32) -> f32 { return b[i]; }
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
// The `live` (1 to 4) elements of C or aux from o on, and a lane's store of them. Where every
// lane's 4 columns lie in C and start at a multiple of 4 (all of LeNet's products but fc3's
// forward), the Rust side (`vec4_output`) binds C and aux as vec4 arrays and these become one
// vec4 access each: llvmpipe loads and stores lane by lane, a loop per access whatever its
// width, so a quarter of the loops (and of the code LLVM compiles).
fn load_c4(o: u32, live: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) { if (u < live) { r[u] = c[o + u]; } }
    return r;
}
fn load_aux4(o: u32, live: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) { if (u < live) { r[u] = aux[o + u]; } }
    return r;
}
fn store_c4(o: u32, v: vec4<f32>, live: u32) {
    for (var u = 0u; u < 4u; u++) { if (u < live) { c[o + u] = v[u]; } }
}
@group(0) @binding(6) var<storage, read_write> db: array<f32>;   // BIAS_GRAD only

fn a_at(i: u32) -> f32 { return a[i >> 2u][i & 3u]; }

// Lanes that share their loads of A; `share(v, l)` is lane l's `v` (rewritten together by the
// Rust side where subgroups allow it, see `kernels::share_across_subgroup`). The 8 lanes need the
// same A values, and llvmpipe loads a uniform address once per lane anyway: with SHARE = 8 lane l
// loads A at k = k0 + l for the 8 rows and the lanes pass them round with subgroupShuffle.
const SHARE: u32 = 1u;
fn share(v: f32, lane: u32) -> f32 { return v; }

@compute @workgroup_size(8, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lane_id: u32,
) {
    let j0 = gid.x * 4u;
    let i0 = wid.y * 8u;
    // With SHARE > 1 lanes past the last column keep running (shuffles read from them) and
    // compute clamped duplicates that are not written.
    if (SHARE == 1u && j0 >= p.n) { return; }
    let lane = lane_id % SHARE;
    var bc: vec4<u32>;
    for (var u = 0u; u < 4u; u++) {
        bc[u] = min(j0 + u, p.n - 1u) * p.b_cs;
    }
    var ar: array<u32, 8>;
    for (var t = 0u; t < 8u; t++) {
        ar[t] = min(i0 + t, p.m - 1u) * p.a_rs;
    }
    // The params the loop needs, read once: llvmpipe does not hoist uniform loads out of a loop,
    // and each costs a gather across the lanes (measured: hoisting made fc1's products ~2x faster).
    let b_rs = p.b_rs;
    let a_cs = p.a_cs;
    let b_cs = p.b_cs;
    var acc: array<vec4<f32>, 8>;
    var a_sum: array<f32, 8>;   // BIAS_GRAD: row sums of A, in the order the products are summed
    // One window. Where one dispatch covers several (fc1: W or x spans several 64 KiB windows),
    // the Rust side (`more_windows`) repeats this block once per extra window, reading that
    // window's bindings and its entry of `p.more`: over the reduction the sum never makes a
    // round trip through C between windows; over columns only the workgroup's own window has
    // a non-zero trip count.
    // window {
    {
    let k = select(0u, p.k, in_window(j0, 0u));
    let bcw = bc - vec4<u32>(col_start(0u) * b_cs);   // B's window starts at its first column
    var bk = p.b_k0 * b_rs;
    var ak = p.a_k0 * a_cs;
    for (var k0 = 0u; k0 < k; k0 += SHARE) {
        // This lane's A values at k0 + lane for the 8 rows (zero past the end).
        let ka = min(k0 + lane, k - 1u);
        var av: array<f32, 8>;
        for (var t = 0u; t < 8u; t++) {
            av[t] = select(0.0, a_at(ar[t] + ak + (ka - k0) * a_cs), k0 + lane < k);
        }
        for (var u = 0u; u < SHARE; u++) {
            let live = k0 + u < k;
            let bv = select(vec4<f32>(0.0), vec4<f32>(b_at(bk + bcw.x), b_at(bk + bcw.y), b_at(bk + bcw.z), b_at(bk + bcw.w)), live);
            for (var t = 0u; t < 8u; t++) {
                let at = share(av[t], u);
                acc[t] += at * bv;
                if (BIAS_GRAD) { a_sum[t] += at; }
            }
            if (live) { bk += b_rs; }
        }
        ak += SHARE * a_cs;
    }
    }
    // } window
    // The epilogue's params read once and the bias once per column (each uniform read in the
    // unrolled loop below was a gather of its own on llvmpipe, each bias read a storage load).
    let m = p.m;
    let n = p.n;
    let c_row0 = p.c_row0;
    let c_col0 = p.c_col0;
    let ldc = p.ldc;
    var bias4 = vec4<f32>(0.0);
    if (HAS_BIAS) {
        for (var u = 0u; u < 4u; u++) {
            bias4[u] = bias[c_col0 + min(j0 + u, n - 1u)];
        }
    }
    // The bias grad of these 8 rows, once: by the lane holding the first columns.
    if (BIAS_GRAD && j0 == 0u) {
        for (var t = 0u; t < 8u; t++) {
            let i = c_row0 + i0 + t;
            if (i0 + t >= m) { break; }
            var v = a_sum[t];
            if (ACCUMULATE) { v += db[i]; }
            db[i] = v;
        }
    }
    let live = min(n - min(j0, n), 4u);   // this lane's columns inside C
    for (var t = 0u; t < 8u; t++) {
        let i = i0 + t;
        if (i >= m || live == 0u) { break; }
        let o = (c_row0 + i) * ldc + c_col0 + j0;
        var v = acc[t] + bias4;
        if (ACCUMULATE) { v += load_c4(o, live); }
        if (RELU) { v = max(v, vec4<f32>(0.0)); }
        if (MASK) { v = select(vec4<f32>(0.0), v, load_aux4(o, live) > vec4<f32>(0.0)); }
        store_c4(o, v, live);
    }
}
