//! Generates `include/tidemark.h` from the `extern "C"` layer with cbindgen. The header is
//! committed; `make check-header` fails when it differs from a fresh one.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(Path::new(&crate_dir).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut header = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut header);
    let path = Path::new(&crate_dir).join("include/tidemark.h");
    // Rewrite only on change, so an unchanged API does not touch the file.
    if std::fs::read(&path).ok().as_deref() != Some(&header[..]) {
        std::fs::create_dir_all(path.parent().expect("include/")).expect("create include/");
        std::fs::write(&path, header).expect("write include/tidemark.h");
    }
}
