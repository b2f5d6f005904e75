//! What the pipeline tests of both fixtures (tiny.rs, sdxl.rs) share: a fixture model
//! written and loaded once, one image from a request, and copies of the model with a
//! file edited, to check what loading says about it.

use std::path::Path;

use basalt_diffusion::{DiffusionError, Pipeline, Request};

/// A fixture model on disk and the pipeline loaded from it.
pub struct Written {
    pub dir: tempfile::TempDir,
    pub pipeline: Pipeline,
}

pub fn write_and_load(write: fn(&Path) -> Result<(), DiffusionError>) -> Written {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path()).expect("write the fixture model");
    let pipeline = Pipeline::load(dir.path()).expect("load the fixture model");
    Written { dir, pipeline }
}

/// The PNG of a one-image request, which reports the seed it was given.
pub fn one_from(p: &Pipeline, r: &Request) -> Vec<u8> {
    let images = p.generate(r, &|_, _| {}, &|| false).expect("generate");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].seed, r.seed);
    images.into_iter().next().map(|i| i.png).unwrap_or_default()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Replaces `from` with `to` in one of the model's files.
pub fn edit(model: &Path, file: &str, from: &str, to: &str) {
    let path = model.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} has no {from}");
    std::fs::write(&path, text.replace(from, to)).expect("write");
}

/// What loading `dir` fails with.
pub fn load_error(dir: &Path) -> String {
    match Pipeline::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}
