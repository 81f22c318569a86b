//! The GPU context: adapter choice, device creation with the adapter's own limits, and the few
//! buffer helpers (upload, blocking readback for tests and checkpoints) everything else uses.

pub mod keep_awake;
use std::fmt;
use std::str::FromStr;

/// Which adapter to run on. `Lavapipe` means "a Vulkan adapter whose device type is CPU".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterChoice {
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
    Lavapipe,
}

impl AdapterChoice {
    pub const NAMES: &'static str = "auto, vulkan, metal, dx12, gl, lavapipe";

    fn backends(self) -> wgpu::Backends {
        match self {
            AdapterChoice::Auto => wgpu::Backends::all(),
            AdapterChoice::Vulkan | AdapterChoice::Lavapipe => wgpu::Backends::VULKAN,
            AdapterChoice::Metal => wgpu::Backends::METAL,
            AdapterChoice::Dx12 => wgpu::Backends::DX12,
            AdapterChoice::Gl => wgpu::Backends::GL,
        }
    }

    fn accepts(self, info: &wgpu::AdapterInfo) -> bool {
        match self {
            AdapterChoice::Auto => true,
            AdapterChoice::Vulkan => info.backend == wgpu::Backend::Vulkan,
            AdapterChoice::Metal => info.backend == wgpu::Backend::Metal,
            AdapterChoice::Dx12 => info.backend == wgpu::Backend::Dx12,
            AdapterChoice::Gl => info.backend == wgpu::Backend::Gl,
            AdapterChoice::Lavapipe => {
                info.backend == wgpu::Backend::Vulkan && info.device_type == wgpu::DeviceType::Cpu
            }
        }
    }

    /// Reads `GPU_LENET_ADAPTER`, defaulting to `auto`.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("GPU_LENET_ADAPTER") {
            Ok(v) if !v.trim().is_empty() => {
                v.parse().map_err(|e| format!("environment variable GPU_LENET_ADAPTER: {e}"))
            }
            _ => Ok(AdapterChoice::Auto),
        }
    }
}

impl FromStr for AdapterChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => AdapterChoice::Auto,
            "vulkan" => AdapterChoice::Vulkan,
            "metal" => AdapterChoice::Metal,
            "dx12" => AdapterChoice::Dx12,
            "gl" | "gles" | "opengl" => AdapterChoice::Gl,
            "lavapipe" => AdapterChoice::Lavapipe,
            other => return Err(format!("unknown adapter '{other}': expected one of {}", AdapterChoice::NAMES)),
        })
    }
}

impl fmt::Display for AdapterChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AdapterChoice::Auto => "auto",
            AdapterChoice::Vulkan => "vulkan",
            AdapterChoice::Metal => "metal",
            AdapterChoice::Dx12 => "dx12",
            AdapterChoice::Gl => "gl",
            AdapterChoice::Lavapipe => "lavapipe",
        };
        f.write_str(s)
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    // Validation layers only when asked for (WGPU_VALIDATION=1): they are slow and rarely installed.
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see on this machine, on every backend compiled in.
pub fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    let inst = instance(wgpu::Backends::all());
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
}

/// One line describing an adapter: name, backend, device type, driver and the optional features
/// this engine cares about.
pub fn describe_adapter(adapter: &wgpu::Adapter) -> String {
    let info = adapter.get_info();
    let f = adapter.features();
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "{} | backend {:?} | type {:?} | driver {} {} | TIMESTAMP_QUERY {} | SHADER_F16 {} | SUBGROUP {}",
        info.name,
        info.backend,
        info.device_type,
        if info.driver.is_empty() { "?" } else { &info.driver },
        info.driver_info,
        yn(f.contains(wgpu::Features::TIMESTAMP_QUERY)),
        yn(f.contains(wgpu::Features::SHADER_F16)),
        yn(f.contains(wgpu::Features::SUBGROUP)),
    )
}

/// Device type preference for `auto`: real GPUs first, then CPU emulation.
fn rank(info: &wgpu::AdapterInfo) -> u32 {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    // Among equals prefer Vulkan/Metal/DX12 over GL (GL has no subgroups or f16 and runs slower).
    let be = if info.backend == wgpu::Backend::Gl { 1 } else { 0 };
    ty * 2 + be
}

/// The device, its queue and what was learnt about the adapter.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// The first device error (validation, out of memory, device lost), recorded instead of
    /// panicking so the command can end with one clear line; see [`Gpu::check`].
    errors: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// On CPU adapters, a lowest-priority thread that keeps idle cores from halting between
    /// dispatches (see [`keep_awake`]).
    _keep_awake: Option<keep_awake::KeepAwake>,
}

/// A wgpu error as one readable message: wgpu's `Display` gives only the outermost line
/// ("Validation Error"); the causes below it say what was wrong.
fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(text.trim())) {
            parts.push(text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "));
        }
        source = s.source();
    }
    parts.join(": ")
}

impl Gpu {
    /// Chooses the adapter and opens a device with the adapter's own limits (the defaults are too
    /// small for the data set binding and the number of storage buffers some kernels bind).
    pub fn new(choice: AdapterChoice) -> Result<Gpu, String> {
        // `auto` looks at GL only when no Vulkan/Metal/DX12 adapter exists: GL is slower here and
        // probing EGL prints warnings on headless machines.
        let tries = match choice {
            AdapterChoice::Auto => vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL],
            c => vec![c.backends()],
        };
        let mut adapters: Vec<wgpu::Adapter> = Vec::new();
        for backends in tries {
            let inst = instance(backends);
            adapters = pollster::block_on(inst.enumerate_adapters(backends))
                .into_iter()
                .filter(|a| choice.accepts(&a.get_info()))
                .collect();
            if !adapters.is_empty() {
                break;
            }
        }
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let Some(adapter) = adapters.into_iter().next() else {
            let all = enumerate_adapters();
            let found = if all.is_empty() {
                "none (is a Vulkan driver installed? on Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
                    .to_string()
            } else {
                all.iter()
                    .map(|a| {
                        let i = a.get_info();
                        format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(format!("adapter '{choice}' not found; adapters found: {found}"));
        };
        let info = adapter.get_info();
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gpu-lenet"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("could not open a device on '{}': {e}", info.name))?;
        let errors = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let record = |slot: &std::sync::Arc<std::sync::Mutex<Option<String>>>, msg: String| {
            if let Ok(mut e) = slot.lock() {
                e.get_or_insert(msg);
            }
        };
        let e1 = errors.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            let msg = match &e {
                wgpu::Error::OutOfMemory { .. } => "the GPU ran out of memory (try a smaller --batch-size)".to_string(),
                other => format!("GPU error: {}", describe_error(other)),
            };
            record(&e1, msg);
        }));
        let e2 = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            record(&e2, format!("the GPU device was lost ({reason:?}{}{msg})", if msg.is_empty() { "" } else { ": " }));
        });
        let _keep_awake = keep_awake::KeepAwake::for_adapter(&info);
        Ok(Gpu { device, queue, info, features, limits, errors, _keep_awake })
    }

    /// Err with the first device error recorded so far (out of memory, device lost, a
    /// validation error), so callers can stop cleanly instead of computing garbage.
    pub fn check(&self) -> Result<(), String> {
        match self.errors.lock().ok().and_then(|e| e.clone()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A one-line description of the adapter in use.
    /// Name, backend, device type and driver version (lavapipe: "Mesa 25.0.7 ...").
    pub fn describe(&self) -> String {
        let driver =
            if self.info.driver_info.is_empty() { String::new() } else { format!(", {}", self.info.driver_info) };
        format!("{} ({:?}, {:?}{driver})", self.info.name, self.info.backend, self.info.device_type)
    }

    /// Alignment of binding offsets on this device: tensors of the parameter arena are bound
    /// both as storage (gradients, optimizer) and as uniform buffers (conv weights).
    pub fn storage_alignment(&self) -> u64 {
        (self.limits.min_storage_buffer_offset_alignment as u64)
            .max(self.limits.min_uniform_buffer_offset_alignment as u64)
    }

    /// A storage buffer of `len` f32/u32 words, zero-filled, usable as kernel input and output,
    /// as a uniform buffer (small read-only operands such as conv weights) and as a copy
    /// source/destination (readback, clears).
    pub fn storage(&self, label: &str, words: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (words.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data`.
    /// A storage buffer holding `data`, its size rounded up to whole vec4s so that it can also
    /// be bound as a uniform array of vec4.
    pub fn storage_from<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(label, bytes.len().div_ceil(16) * 4);
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    /// A small uniform buffer holding one params struct.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(value);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.len().max(16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    /// Blocking readback of `words` 32-bit words starting at byte `offset`. For tests, checkpoints
    /// and end-of-epoch metrics only: never call it per training step.
    pub fn read_words<T: bytemuck::Pod>(
        &self,
        buf: &wgpu::Buffer,
        offset: u64,
        words: usize,
    ) -> Result<Vec<T>, String> {
        let size = (words * 4) as u64;
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("GPU device error while reading back results: {e}"))?;
        match pollster::block_on(rx.receive()) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(self.check().err().unwrap_or(format!("GPU readback failed: {e}"))),
            None => return Err(self.check().err().unwrap_or("GPU readback was cancelled (device lost?)".into())),
        }
        self.check()?;
        let view = slice.get_mapped_range().map_err(|e| format!("GPU readback failed: {e:?}"))?;
        let out = bytemuck::cast_slice::<u8, T>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Reads a whole buffer as f32 (tests and tools).
    pub fn read_f32(&self, buf: &wgpu::Buffer, words: usize) -> Vec<f32> {
        self.read_words(buf, 0, words).expect("GPU readback")
    }

    /// Waits until every submitted command has finished.
    pub fn wait_idle(&self) -> Result<(), String> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| format!("GPU device error: {e}"))
    }
}
