//! Embeds every `elements/*.toml` of the workspace into the binary, twice:
//! the text (what `export` and the console show) and the catalog parsed and
//! checked here, in the compact form of `RegistryBuilder::compile_layer`, so
//! start-up parses no TOML for the built-in elements. A file that `elements
//! check` would refuse fails the build with the same errors.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use elements_core::RegistryBuilder;
// The built-in element crates, as in `src/lib.rs`: linked here so the check
// sees the catalog fields their code does not support.
use elements_hubspot as _;

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
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        let name = format!("elements/{}", path.file_name().unwrap().to_string_lossy());
        let abs = path.canonicalize().unwrap();
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(out, "    ({name:?}, include_str!({abs:?})),").unwrap();
        let text =
            fs::read_to_string(&abs).unwrap_or_else(|e| panic!("reading {}: {e}", abs.display()));
        texts.push((name, text));
    }
    out.push(']');
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(out_dir.join("builtin.rs"), out).unwrap();

    match RegistryBuilder::compile_layer(texts.iter().map(|(n, t)| (n.as_str(), t.as_str()))) {
        Ok(bytes) => fs::write(out_dir.join("builtin.bin"), bytes).unwrap(),
        Err(errors) => {
            eprintln!("the built-in catalog (elements/*.toml) is invalid:");
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.0.len());
            std::process::exit(1);
        }
    }
}
