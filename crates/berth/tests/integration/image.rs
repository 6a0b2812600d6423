//! Test images built here, with no network: real gzip'd tar layers, configs with correct
//! diff_ids, an image manifest and a two-platform index, written as an OCI layout that skopeo
//! and podman can read.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_oci::Digest;
use serde_json::{Value, json};

use crate::harness::{require_tool, run};

/// A deterministic pseudo-random byte stream (xorshift), so each seed gives different layers.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An OCI image layout on disk.
pub struct Layout {
    /// Its folder.
    pub dir: PathBuf,
}

/// A descriptor of something written into the layout.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Desc {
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

impl Layout {
    /// An empty layout in `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        Layout { dir: dir.to_owned() }
    }

    /// Writes a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = Digest::sha256_of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
        Desc { media_type: media_type.to_owned(), digest, size: bytes.len() as u64 }
    }

    /// Adds `desc` to index.json under the reference name `name`.
    pub fn tag(&self, name: &str, desc: &Desc) {
        let path = self.dir.join("index.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut entry = desc.json();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        index["manifests"].as_array_mut().unwrap().push(entry);
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// A gzip'd tar layer holding `files`; returns its descriptor and its diff_id.
    pub fn layer(&self, files: &[(&str, Vec<u8>)]) -> (Desc, Digest) {
        let tar_bin = require_tool("tar", "install it with `apt-get install -y tar`");
        let gzip_bin = require_tool("gzip", "install it with `apt-get install -y gzip`");
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        for (name, content) in files {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let tar = work.path().join("layer.tar");
        run(Command::new(tar_bin)
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg("."));
        let tar_bytes = std::fs::read(&tar).unwrap();
        run(Command::new(gzip_bin).args(["-n", "-f"]).arg(&tar));
        let gz = std::fs::read(work.path().join("layer.tar.gz")).unwrap();
        (self.blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz), Digest::sha256_of(&tar_bytes))
    }

    /// An image manifest for `arch` over `layers`.
    pub fn image(&self, arch: &str, layers: &[(Desc, Digest)]) -> Desc {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.to_string()).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| json!({"created_by": "berth test"})).collect::<Vec<_>>(),
        });
        let config = self.blob("application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.json(),
            "layers": layers.iter().map(|(d, _)| d.json()).collect::<Vec<_>>(),
        });
        self.blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest).unwrap())
    }

    /// An index over `(manifest, arch)` pairs.
    pub fn index(&self, entries: &[(&Desc, &str)]) -> Desc {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries.iter().map(|(d, arch)| {
                let mut e = d.json();
                e["platform"] = json!({"architecture": arch, "os": "linux"});
                e
            }).collect::<Vec<_>>(),
        });
        self.blob("application/vnd.oci.image.index.v1+json", &serde_json::to_vec(&index).unwrap())
    }

    /// The bytes of a blob in the layout.
    pub fn read(&self, d: &Digest) -> Vec<u8> {
        std::fs::read(self.dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())).unwrap()
    }

    /// The descriptor index.json gives for reference name `name`.
    pub fn lookup(&self, name: &str) -> Option<Digest> {
        let index: Value = serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap();
        index["manifests"].as_array()?.iter().find_map(|m| {
            (m["annotations"]["org.opencontainers.image.ref.name"] == name)
                .then(|| m["digest"].as_str().unwrap().parse().unwrap())
        })
    }
}

/// What [`standard`] built.
pub struct Standard {
    pub layout: Layout,
    /// A three-layer linux/amd64 image, tagged `img` in the layout.
    pub image: Desc,
    /// Its layers.
    pub layers: Vec<Desc>,
    /// A two-platform index (amd64 = `image`, arm64 sharing the base layer), tagged `multi`.
    pub index: Desc,
    /// The arm64 image.
    pub arm64: Desc,
}

/// Builds the standard test layout in `dir`; `seed` makes its layers unique.
pub fn standard(dir: &Path, seed: u64) -> Standard {
    let layout = Layout::new(dir);
    let base =
        layout.layer(&[("etc/os-release", b"NAME=berth-test\n".to_vec()), ("etc/seed", seed.to_string().into_bytes())]);
    let data = layout.layer(&[("app/data.bin", noise(seed, 64 << 10))]);
    let version = layout.layer(&[("app/version", format!("amd64 {seed}\n").into_bytes())]);
    let image = layout.image("amd64", &[base.clone(), data.clone(), version.clone()]);
    let arm_version = layout.layer(&[("app/version", format!("arm64 {seed}\n").into_bytes())]);
    let arm64 = layout.image("arm64", &[base.clone(), arm_version]);
    let index = layout.index(&[(&image, "amd64"), (&arm64, "arm64")]);
    layout.tag("img", &image);
    layout.tag("multi", &index);
    Standard { layout, image, layers: vec![base.0, data.0, version.0], index, arm64 }
}
