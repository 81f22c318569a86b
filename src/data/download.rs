//! Fetches CIFAR-10's binary archive from the data set's official host, verifies its md5 and
//! size, and extracts it. Idempotent: a verified archive already on disk is reused; nothing is
//! left half-written (downloads go to `.part` files, extraction to a temporary folder, and
//! both are renamed into place only when complete).

use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub const CIFAR10_BYTES: u64 = 170_052_171;
const ARCHIVE: &str = "cifar-10-binary.tar.gz";

/// What to fetch. The URL and checksum can be overridden through the environment for the
/// project's own tests (a local server serving a generated archive), never in normal use.
pub struct Source {
    pub url: String,
    pub md5: String,
    pub bytes: Option<u64>,
}

impl Source {
    pub fn cifar10() -> Source {
        match (std::env::var("GPU_LENET_TEST_CIFAR_URL"), std::env::var("GPU_LENET_TEST_CIFAR_MD5")) {
            (Ok(url), Ok(md5)) => Source { url, md5: md5.to_ascii_lowercase(), bytes: None },
            _ => Source { url: CIFAR10_URL.into(), md5: CIFAR10_MD5.into(), bytes: Some(CIFAR10_BYTES) },
        }
    }
}

fn md5_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn unreachable_hint(url: &str, e: impl std::fmt::Display) -> String {
    format!(
        "could not download CIFAR-10 from {url}: {e}. The network may be unreachable: use --data DIR with an \
            extracted cifar-10-batches-bin folder, --dataset fashion-mnist, or --dataset synthetic"
    )
}

/// Downloads `src` to `dest` (via `dest.part`) with a progress bar, and checks size and md5.
pub fn download(src: &Source, dest: &Path) -> Result<(), String> {
    let part = dest.with_extension("part");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut resp = agent.get(&src.url).call().map_err(|e| unreachable_hint(&src.url, e))?;
    let total = resp.body().content_length().or(src.bytes);
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("CIFAR-10");
    let mut out = std::fs::File::create(&part).map_err(|e| format!("{}: cannot create: {e}", part.display()))?;
    let mut reader = resp.body_mut().as_reader();
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    let result = (|| -> Result<(), String> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| unreachable_hint(&src.url, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| format!("{}: write failed: {e}", part.display()))?;
            got += n as u64;
            bar.set_position(got);
        }
        out.sync_all().map_err(|e| format!("{}: write failed: {e}", part.display()))?;
        Ok(())
    })();
    bar.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    if let Some(want) = src.bytes {
        if got != want {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "download from {} stopped at {got} bytes, expected {want}; the partial file was deleted, run again",
                src.url
            ));
        }
    }
    let md5: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if md5 != src.md5 {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "download from {}: md5 {md5} does not match the expected {}; the file was deleted (corrupted transfer or \
                a changed file on the server)",
            src.url, src.md5
        ));
    }
    std::fs::rename(&part, dest).map_err(|e| format!("{}: cannot rename into place: {e}", dest.display()))
}

/// Extracts the `cifar-10-batches-bin/` entries of the archive into `dir`, atomically.
pub fn extract(archive: &Path, dir: &Path) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.extracting", dir.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: cannot create: {e}", tmp.display()))?;
    let f = std::fs::File::open(archive).map_err(|e| format!("{}: cannot read: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let bad = |e: std::io::Error| format!("{}: not a valid CIFAR-10 tar.gz archive: {e}", archive.display());
    let mut files = 0;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let comps: Vec<Component> = path.components().collect();
        // Only plain files directly inside cifar-10-batches-bin/; nothing can escape `tmp`.
        let [Component::Normal(top), Component::Normal(name)] = comps[..] else { continue };
        if top != "cifar-10-batches-bin" || !entry.header().entry_type().is_file() {
            continue;
        }
        let target = tmp.join(name);
        let mut out =
            std::fs::File::create(&target).map_err(|e| format!("{}: cannot create: {e}", target.display()))?;
        std::io::copy(&mut entry, &mut out).map_err(bad)?;
        files += 1;
    }
    if files == 0 {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("{}: holds no cifar-10-batches-bin/ files", archive.display()));
    }
    std::fs::rename(&tmp, dir).map_err(|e| format!("{}: cannot move into place: {e}", dir.display()))
}

/// Makes `dir` a CIFAR-10 folder: reuses a verified archive beside it or downloads one, then
/// extracts it.
pub fn fetch_cifar10(dir: &Path) -> Result<(), String> {
    let src = Source::cifar10();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: cannot create: {e}", parent.display()))?;
    let archive = parent.join(ARCHIVE);
    let reuse = archive.exists() && md5_file(&archive)? == src.md5;
    if reuse {
        eprintln!("Reusing the verified archive {}", archive.display());
    } else {
        eprintln!("Downloading CIFAR-10 from {} to {}", src.url, archive.display());
        download(&src, &archive)?;
    }
    extract(&archive, dir)?;
    eprintln!("CIFAR-10 extracted to {}", dir.display());
    Ok(())
}
