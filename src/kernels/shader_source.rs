//! Rewrites of a kernel's WGSL source for its variants: storage inputs as uniform windows,
//! constants that size arrays, loops written out, loads shared across a subgroup.

use super::UNIFORM_SLACK_BYTES;

/// Rewrites a kernel's storage input `name` (declared at binding `binding` as
/// `var<storage, read> NAME: array<f32>;` with the accessor `fn NAME_at(i: u32) -> f32`) into a
/// uniform window of `bytes` bytes.
pub fn uniform_input(source: &str, name: &str, binding: u32, bytes: u64) -> String {
    let decl = format!("@group(0) @binding({binding}) var<storage, read> {name}: array<f32>;");
    let access = format!("fn {name}_at(i: u32) -> f32 {{ return {name}[i]; }}");
    assert!(source.contains(&decl) && source.contains(&access), "shader lacks the storage input {name}");
    source
        .replace(
            &decl,
            &format!("@group(0) @binding({binding}) var<uniform> {name}: array<vec4<f32>, {}u>;", bytes / 16),
        )
        .replace(&access, &format!("fn {name}_at(i: u32) -> f32 {{ return {name}[i >> 2u][i & 3u]; }}"))
}

/// Binds, in a kernel written with the stub `fn pidx_at(i: u32) -> f32 { return 0.0; }` (the
/// POOLED variants of the conv gradients), the pool's masked argmax as a uniform window at
/// binding 4, read as `bitcast<u32>(pidx_at(i))`.
pub fn pooled_argmax_input(source: &str) -> String {
    let stub = "fn pidx_at(i: u32) -> f32 { return 0.0; }";
    assert!(source.contains(stub), "shader lacks the argmax stub");
    let src = source.replace(
        stub,
        "@group(0) @binding(4) var<storage, read> pidx: array<f32>;\nfn pidx_at(i: u32) -> f32 { return pidx[i]; }",
    );
    uniform_input(&src, "pidx", 4, UNIFORM_SLACK_BYTES)
}

/// Unrolls, in a WGSL source, every loop written `for (var V = 0u; V < BOUND; V++) { // unroll`
/// into `count` copies of its body, each in its own block after `let V = Ku;` (so the body must
/// not `break` or `continue` that loop). Mesa's NIR unrolls a loop only while its body is small;
/// llvmpipe then keeps an array indexed by a counter that was not unrolled in a stack array
/// read and written lane by lane (the conv kernels' accumulators: most of their time).
/// Unrolled here, every index is a constant and the arrays live in registers.
pub fn unroll(source: &str, var: &str, bound: &str, count: usize) -> String {
    let head = format!("for (var {var} = 0u; {var} < {bound}; {var}++) {{ // unroll");
    assert!(source.contains(&head), "shader lacks `{head}`");
    let mut out = source.to_string();
    while let Some(start) = out.find(&head) {
        let body_start = start + head.len();
        let mut depth = 1;
        let mut end = None;
        for (i, c) in out[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = Some(body_start + i);
                break;
            }
        }
        let end = end.unwrap_or_else(|| panic!("unbalanced braces after `{head}`"));
        let body = &out[body_start..end];
        let copies = (0..count).map(|k| format!("{{ let {var} = {k}u;{body}}}")).collect::<Vec<_>>().join(" ");
        out = format!("{}{}{}", &out[..start], copies, &out[end + 1..]);
    }
    out
}

/// Replaces `const NAME: u32 = 1u;` in a WGSL source with the given value: the size of a
/// uniform array must be a constant, and override constants cannot size one.
pub fn with_const(source: &str, name: &str, value: usize) -> String {
    let from = format!("const {name}: u32 = 1u;");
    assert!(source.contains(&from), "shader lacks `{from}`");
    source.replace(&from, &format!("const {name}: u32 = {value}u;"))
}

/// Rewrites a kernel written with `const SHARE: u32 = 1u;`, `fn share(v: f32, lane: u32) -> f32
/// { return v; }` and a `@builtin(local_invocation_index) lane_id: u32` parameter into the
/// version whose 8 lanes share loads: SHARE = 8, `share` a subgroupShuffle and `lane_id` the
/// subgroup lane. Only where [`subgroup_sharing`](super::subgroup_sharing) holds.
pub fn share_across_subgroup(source: &str) -> String {
    let swaps = [
        ("const SHARE: u32 = 1u;", "const SHARE: u32 = 8u;"),
        (
            "fn share(v: f32, lane: u32) -> f32 { return v; }",
            "fn share(v: f32, lane: u32) -> f32 { return subgroupShuffle(v, lane); }",
        ),
        ("@builtin(local_invocation_index) lane_id: u32", "@builtin(subgroup_invocation_id) lane_id: u32"),
    ];
    rewrite(source, "shader", &swaps)
}

/// `source` with every `(from, to)` of `swaps` replaced, in order; each `from` must be in it
/// (`what` names the shader when one is missing): the per-variant rewrites of a kernel's source.
pub fn rewrite(source: &str, what: &str, swaps: &[(&str, &str)]) -> String {
    swaps.iter().fold(source.to_string(), |out, (from, to)| {
        assert!(out.contains(from), "{what} lacks `{from}`");
        out.replace(from, to)
    })
}

#[cfg(test)]
mod tests {
    use super::unroll;

    #[test]
    fn unroll_copies_the_body_with_the_counter_bound() {
        let src = "a(); for (var t = 0u; t < N; t++) { // unroll\n if (t > 0u) { b(t); }\n} c();";
        let out = unroll(src, "t", "N", 3);
        assert_eq!(
            out,
            "a(); { let t = 0u;\n if (t > 0u) { b(t); }\n} { let t = 1u;\n if (t > 0u) { b(t); }\n} \
                { let t = 2u;\n if (t > 0u) { b(t); }\n} c();"
        );
        assert_eq!(unroll(src, "t", "N", 0), "a();  c();");
        let twice = format!("{src} {src}");
        assert_eq!(unroll(&twice, "t", "N", 3), format!("{out} {out}"));
    }

    #[test]
    #[should_panic(expected = "shader lacks")]
    fn unroll_insists_on_the_marked_loop() {
        unroll("for (var t = 0u; t < N; t++) { }", "t", "N", 2);
    }
}
