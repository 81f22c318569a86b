//! Checkpoints as safetensors, f32, with PyTorch's `state_dict` names and shapes, so
//! `Net().load_state_dict(safetensors.torch.load_file(path))` works unchanged. Writes are
//! atomic: a temporary file in the same folder, fsync, rename. A crash mid-write leaves the
//! previous file intact. The same tensors and metadata always give the same bytes: tensors in
//! the order safetensors sorts them, metadata in key order.

use crate::model::Arena;
use crate::nn::{Model, Network, ParamKind};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Prefix of the momentum buffers in resumable checkpoints (not part of a `state_dict`).
pub const MOMENTUM_PREFIX: &str = "momentum.";

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name =
        path.file_name().ok_or_else(|| format!("{}: not a file path", path.display()))?.to_string_lossy().to_string();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", path.display())
    })
}

/// What a checkpoint holds: a network's trainable parameters (in `arena`'s layout), optionally
/// their momentum, and BatchNorm's running statistics (in `state_arena`'s layout) with the count
/// of training batches PyTorch keeps as `num_batches_tracked`.
pub struct Contents<'a> {
    pub network: &'a Network,
    pub arena: &'a Arena,
    pub weights: &'a [f32],
    pub momentum: Option<&'a [f32]>,
    pub state_arena: &'a Arena,
    pub state: &'a [f32],
    pub batches_tracked: u64,
}

/// Serialises `c` with metadata: every `state_dict` entry under its PyTorch name (the counters
/// as I64 scalars), the momentum under `momentum.<name>`.
pub fn to_bytes(c: &Contents, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32s = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    for p in c.network.params() {
        match p.kind {
            ParamKind::Trainable => {
                owned.push((p.name.clone(), Dtype::F32, p.shape.clone(), f32s(c.arena.slice(c.weights, &p.name))));
                if let Some(m) = c.momentum {
                    let bytes = f32s(c.arena.slice(m, &p.name));
                    owned.push((format!("{MOMENTUM_PREFIX}{}", p.name), Dtype::F32, p.shape, bytes));
                }
            }
            ParamKind::RunningStat => {
                owned.push((p.name.clone(), Dtype::F32, p.shape, f32s(c.state_arena.slice(c.state, &p.name))))
            }
            ParamKind::Counter => {
                owned.push((p.name, Dtype::I64, vec![], (c.batches_tracked as i64).to_le_bytes().to_vec()))
            }
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("consistent tensor view")))
        .collect();
    // safetensors writes its metadata map in hash order, which changes from process to process:
    // serialise without it and put it into the header ourselves, in key order.
    let bytes = safetensors::serialize(views, None).map_err(|e| format!("cannot serialise checkpoint: {e}"))?;
    with_metadata(&bytes, metadata)
}

/// `bytes` (a safetensors file without metadata) with `metadata` as its `__metadata__`, in key
/// order; the tensor entries and data stay as they are.
fn with_metadata(bytes: &[u8], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    if metadata.is_empty() {
        return Ok(bytes.to_vec());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte header length")) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).map_err(|e| format!("cannot serialise checkpoint: {e}"))?;
    let tensors = header.trim_end().strip_prefix('{').ok_or("cannot serialise checkpoint: header is not an object")?;
    let meta = serde_json::to_string(metadata).map_err(|e| format!("cannot serialise checkpoint: {e}"))?;
    let sep = if tensors.starts_with('}') { "" } else { "," };
    let mut new_header = format!("{{\"__metadata__\":{meta}{sep}{tensors}").into_bytes();
    new_header.resize(new_header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + new_header.len() + bytes.len() - 8 - n);
    out.extend((new_header.len() as u64).to_le_bytes());
    out.extend(new_header);
    out.extend(&bytes[8 + n..]);
    Ok(out)
}

/// Saves `c` atomically.
pub fn save(path: &Path, c: &Contents, metadata: BTreeMap<String, String>) -> Result<(), String> {
    write_atomic(path, &to_bytes(c, &metadata)?)
}

/// Only the metadata of a checkpoint (its header), for the flags a resume takes from it.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read checkpoint: {e}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("{}: not a valid safetensors file: {e}", path.display()))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// A loaded checkpoint, in the arena layouts of its network.
#[derive(Debug)]
pub struct Loaded {
    /// The network it holds: the `model` its metadata names, else the one its tensors fit
    /// (BatchNorm's entries make it LeNet-5-BN).
    pub model: Model,
    pub in_channels: usize,
    pub arena: Arena,
    pub weights: Vec<f32>,
    pub momentum: Option<Vec<f32>>,
    pub state_arena: Arena,
    /// BatchNorm's running statistics (empty without BatchNorm).
    pub state: Vec<f32>,
    pub batches_tracked: u64,
    pub metadata: HashMap<String, String>,
}

/// Parses a checkpoint. Every `state_dict` entry of its network must be present with its
/// PyTorch shape and dtype (F32; the BatchNorm counters I64 scalars); momentum tensors
/// (`momentum.<name>`) are optional but all-or-nothing; anything else is refused. Errors name
/// the file and the tensor. `align` is the arenas' offset alignment.
pub fn from_bytes(path: &Path, bytes: &[u8], align: u64) -> Result<Loaded, String> {
    let name = path.display();
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{name}: not a valid safetensors file: {e}"))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("{name}: not a valid safetensors file: {e}"))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors: HashMap<String, TensorView> = st.tensors().into_iter().collect();
    let conv1 = tensors.get("conv1.weight").ok_or_else(|| {
        format!(
            "{name}: tensor conv1.weight is missing (expected a state_dict of LeNet-5, LeNet-5-BN or ResNet-20: \
             conv1.weight first)"
        )
    })?;
    // A PyTorch export without metadata is known by its tensors: ResNet-20's layer1.0.conv1,
    // LeNet-5-BN's bn1.
    let model = match metadata.get("model") {
        Some(m) => <Model as clap::ValueEnum>::from_str(m, false)
            .map_err(|_| format!("{name}: metadata field model is {m:?}, expected lenet5, lenet5-bn or resnet20"))?,
        None if tensors.contains_key("layer1.0.conv1.weight") => Model::Resnet20,
        None if tensors.contains_key("bn1.weight") => Model::Lenet5Bn,
        None => Model::Lenet5,
    };
    let (stem, stem_name) =
        if model == Model::Resnet20 { ((16, 3), "[16, 3, 3, 3]") } else { ((6, 5), "[6, 3, 5, 5]") };
    let in_channels = match conv1.shape() {
        [o, c @ (1 | 3), k, k2] if (*o, *k) == stem && k == k2 => *c,
        s => {
            let one = stem_name.replace(", 3,", ", 1,");
            return Err(format!(
                "{name}: tensor conv1.weight has shape {s:?}, expected {stem_name} (CIFAR-10) or {one} (Fashion-MNIST)"
            ));
        }
    };
    let network = model.network(in_channels);
    let specs = network.specs(ParamKind::Trainable);
    let arena = Arena::new(&specs, align);
    let state_arena = Arena::new(&network.specs(ParamKind::RunningStat), align);
    let mut weights = vec![0f32; arena.words];
    let mut momentum = vec![0f32; arena.words];
    let mut state = vec![0f32; state_arena.words];
    let mut batches_tracked = 0u64;
    let mut momentum_found = 0;
    let check = |t: &TensorView, tname: &str, dtype: Dtype, shape: &[usize]| -> Result<(), String> {
        if t.dtype() != dtype {
            return Err(format!("{name}: tensor {tname} has dtype {:?}, expected {dtype:?}", t.dtype()));
        }
        if t.shape() != shape {
            return Err(format!("{name}: tensor {tname} has shape {:?}, expected {shape:?}", t.shape()));
        }
        Ok(())
    };
    let read = |t: &TensorView, tname: &str, shape: &[usize], dst: &mut [f32]| -> Result<(), String> {
        check(t, tname, Dtype::F32, shape)?;
        for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    };
    let what = if model == Model::Lenet5 {
        "LeNet's state_dict: conv1.weight … fc3.bias".to_string()
    } else {
        format!("the {} state_dict", model.name())
    };
    for p in network.params() {
        let tname = p.name.as_str();
        let t = tensors.get(tname).ok_or_else(|| format!("{name}: tensor {tname} is missing (expected {what})"))?;
        match p.kind {
            ParamKind::Trainable => {
                read(t, tname, &p.shape, arena.slice_mut(&mut weights, tname))?;
                let mname = format!("{MOMENTUM_PREFIX}{tname}");
                if let Some(m) = tensors.get(&mname) {
                    read(m, &mname, &p.shape, arena.slice_mut(&mut momentum, tname))?;
                    momentum_found += 1;
                }
            }
            ParamKind::RunningStat => read(t, tname, &p.shape, state_arena.slice_mut(&mut state, tname))?,
            ParamKind::Counter => {
                check(t, tname, Dtype::I64, &[])?;
                let v = i64::from_le_bytes(t.data()[..8].try_into().expect("an I64 scalar is 8 bytes"));
                batches_tracked =
                    u64::try_from(v).map_err(|_| format!("{name}: tensor {tname} is {v}, expected 0 or more"))?;
            }
        }
    }
    if momentum_found != 0 && momentum_found != specs.len() {
        return Err(format!(
            "{name}: holds momentum for {momentum_found} of {} tensors; expected all or none",
            specs.len()
        ));
    }
    let all = network.params();
    let known = |n: &str| {
        all.iter().any(|p| p.name == n)
            || n.strip_prefix(MOMENTUM_PREFIX).is_some_and(|m| specs.iter().any(|(s, _)| s == m))
    };
    let mut extra: Vec<&String> = tensors.keys().filter(|n| !known(n)).collect();
    extra.sort();
    if let Some(x) = extra.first() {
        let holds = if model == Model::Lenet5 {
            "a LeNet state_dict holds only conv1.weight … fc3.bias".to_string()
        } else {
            format!("not an entry of the {} state_dict", model.name())
        };
        return Err(format!("{name}: unexpected tensor {x} ({holds})"));
    }
    let non_finite = weights.iter().chain(&state).enumerate().find(|(_, v)| !v.is_finite());
    if let Some((i, v)) = non_finite {
        let (layout, at) = if i < weights.len() { (&arena, i) } else { (&state_arena, i - weights.len()) };
        let t = layout
            .tensors
            .iter()
            .find(|t| at >= t.offset && at < t.offset + t.len())
            .map(|t| t.name.as_str())
            .unwrap_or("?");
        return Err(format!("{name}: tensor {t} holds a non-finite value ({v})"));
    }
    Ok(Loaded {
        model,
        in_channels,
        arena,
        weights,
        momentum: (momentum_found > 0).then_some(momentum),
        state_arena,
        state,
        batches_tracked,
        metadata,
    })
}

pub fn load(path: &Path, align: u64) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read checkpoint: {e}", path.display()))?;
    from_bytes(path, &bytes, align)
}
