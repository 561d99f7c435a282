//! Generates `include/tidemark.h` from the `extern "C"` layer with cbindgen. The header is
//! committed; `make check-header` fails when it differs from a fresh one.
//!
//! cbindgen does not expand macros, so the status codes, declared once in the
//! `status_codes!` table of `src/ffi/status.rs`, are handed to it as the plain enum that
//! table expands to.

use std::fmt::Write as _;
use std::path::Path;

use syn::parse::{Parse, ParseStream};

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    let status_enum = Path::new(&out_dir).join("status_enum.rs");
    let status_src = std::fs::read_to_string(Path::new(&crate_dir).join("src/ffi/status.rs"))
        .expect("read src/ffi/status.rs");
    std::fs::write(&status_enum, status_enum_source(&status_src)).expect("write status_enum.rs");
    let config =
        cbindgen::Config::from_file(Path::new(&crate_dir).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut header = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_src(&status_enum)
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

/// The `status_codes!` table: the enum's docs and name, and each code's docs, name and value
/// (the `from <pattern>` mapping matters only to the Rust side).
struct StatusTable {
    docs: Vec<String>,
    name: syn::Ident,
    codes: Vec<(Vec<String>, syn::Ident, syn::LitInt)>,
}

fn docs(attrs: &[syn::Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl Parse for StatusTable {
    fn parse(input: ParseStream) -> syn::Result<StatusTable> {
        let docs_of_enum = docs(&input.call(syn::Attribute::parse_outer)?);
        let name = input.parse()?;
        let body;
        syn::braced!(body in input);
        let mut codes = Vec::new();
        while !body.is_empty() {
            let attrs = body.call(syn::Attribute::parse_outer)?;
            let code: syn::Ident = body.parse()?;
            body.parse::<syn::Token![=]>()?;
            let value: syn::LitInt = body.parse()?;
            if body.peek(syn::Ident) {
                let from: syn::Ident = body.parse()?;
                if from != "from" {
                    return Err(syn::Error::new(from.span(), "expected `from <Error pattern>`"));
                }
                syn::Pat::parse_multi(&body)?;
            }
            if !body.is_empty() {
                body.parse::<syn::Token![,]>()?;
            }
            codes.push((docs(&attrs), code, value));
        }
        Ok(StatusTable { docs: docs_of_enum, name, codes })
    }
}

fn status_enum_source(status_rs: &str) -> String {
    let file = syn::parse_file(status_rs).expect("parse src/ffi/status.rs");
    let table = file
        .items
        .iter()
        .find_map(|item| match item {
            syn::Item::Macro(m) if m.mac.path.is_ident("status_codes") => {
                Some(m.mac.parse_body::<StatusTable>().expect("the status_codes! table"))
            }
            _ => None,
        })
        .expect("src/ffi/status.rs invokes status_codes!");
    let mut out = String::new();
    for d in &table.docs {
        writeln!(out, "///{d}").unwrap();
    }
    writeln!(out, "#[repr(u32)]\npub enum {} {{", table.name).unwrap();
    for (docs, code, value) in &table.codes {
        for d in docs {
            writeln!(out, "    ///{d}").unwrap();
        }
        writeln!(out, "    {code} = {value},").unwrap();
    }
    out.push_str("}\n");
    out
}
