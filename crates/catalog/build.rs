//! Embeds every `elements/*.toml` of the workspace into the binary.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = manifest.join("../../elements");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy();
        let abs = path.canonicalize().unwrap();
        writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            format!("elements/{name}"),
            abs
        )
        .unwrap();
    }
    out.push(']');
    let dest = PathBuf::from(env::var("OUT_DIR").unwrap()).join("builtin.rs");
    fs::write(dest, out).unwrap();
}
