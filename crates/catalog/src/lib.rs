//! The built-in catalog and the built-in element crates.
//!
//! Every `elements/*.toml` of the workspace is embedded at build time, so the
//! `elements` binary works from any directory: the text ([`BUILTIN`]) and the
//! catalog parsed and checked by the build script (a file `elements check`
//! would refuse fails the build), in the compact form of
//! [`RegistryBuilder::compile_layer`], so start-up parses no TOML for the
//! built-in elements and decodes each one's spec only when it is first used. This crate also *names* every
//! built-in element crate: a crate that is a dependency but never named in
//! code is not linked, and its `inventory::submit!` registration silently
//! disappears. Binaries and tests depend on this crate and get them all.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use elements_core::{CatalogError, CatalogErrors, OAuthOverride, Registry, RegistryBuilder};

// The built-in element crates. Add one line per element crate.
use elements_hubspot as _;

/// The embedded catalog files: (`elements/<file>.toml`, contents), by name.
pub static BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The built-in catalog as parsed and checked at build time.
static COMPILED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/builtin.bin"));

/// A builder holding the built-in catalog as its first layer.
pub fn builder() -> RegistryBuilder {
    let mut builder = RegistryBuilder::new();
    builder.add_compiled_layer(COMPILED);
    builder
}

/// The registry of the built-in catalog alone.
pub fn builtin() -> Result<Registry, CatalogErrors> {
    builder().build()
}

/// Reads every `*.toml` file of a directory, sorted by name, as
/// (path, contents).
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, CatalogError> {
    let io_err = |e: io::Error| CatalogError {
        file: dir.display().to_string(),
        line: None,
        message: format!("cannot read catalog directory: {e}"),
    };
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?
        .into_iter()
        // The entry's own type (no extra stat), following symbolic links only.
        .filter(|entry| match entry.file_type() {
            Ok(t) if t.is_symlink() => entry.path().is_file(),
            Ok(t) => t.is_file(),
            Err(_) => false,
        })
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    read_files(&paths).into_iter().collect()
}

/// Files per reading thread below which a directory is read on the calling
/// thread.
const FILES_PER_THREAD: usize = 64;

/// Reads every file of `paths`, in order: large directories in contiguous
/// chunks on scoped threads (one per available core), so the open/read
/// system calls of a thousand files overlap.
fn read_files(paths: &[PathBuf]) -> Vec<Result<(String, String), CatalogError>> {
    let read = |chunk: &[PathBuf]| -> Vec<_> {
        chunk
            .iter()
            .map(|path| {
                let text = fs::read_to_string(path).map_err(|e| CatalogError {
                    file: path.display().to_string(),
                    line: None,
                    message: format!("cannot read file: {e}"),
                })?;
                Ok((path.display().to_string(), text))
            })
            .collect()
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = cores.min(paths.len() / FILES_PER_THREAD);
    if threads <= 1 {
        return read(paths);
    }
    let chunk = paths.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = paths.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks.map(|c| scope.spawn(move || read(c))).collect();
        let mut all = read(first);
        for handle in handles {
            match handle.join() {
                Ok(files) => all.extend(files),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

/// The built-in catalog, then each directory as a layer that adds or
/// overrides elements by key, then the endpoint overrides.
pub fn load<'a>(
    dirs: &[PathBuf],
    overrides: impl IntoIterator<Item = (&'a str, OAuthOverride)>,
) -> Result<Registry, CatalogErrors> {
    load_with(dirs, overrides, [])
}

/// [`load`], then replaces the `api_base_url` of elements by key (a
/// deployment pointing an element at another API host, a test at a fake).
pub fn load_with<'a>(
    dirs: &[PathBuf],
    overrides: impl IntoIterator<Item = (&'a str, OAuthOverride)>,
    api_base_urls: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Registry, CatalogErrors> {
    let mut builder = builder();
    for (key, url) in api_base_urls {
        builder.override_api_base_url(key, url);
    }
    let mut errors = Vec::new();
    for dir in dirs {
        match read_dir(dir) {
            Ok(files) => {
                builder.add_layer(files);
            }
            Err(e) => errors.push(e),
        }
    }
    for (key, o) in overrides {
        builder.override_oauth(key, o);
    }
    match builder.build() {
        Ok(registry) if errors.is_empty() => Ok(registry),
        Ok(_) => Err(CatalogErrors(errors)),
        Err(CatalogErrors(more)) => {
            errors.extend(more);
            Err(CatalogErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_with_hubspot() {
        let registry = super::builtin().unwrap();
        assert_eq!(registry.get("hubspot").map(|e| e.id()), Some(43));
    }

    #[test]
    fn the_compiled_catalog_is_the_embedded_files_parsed() {
        let compiled = builtin().unwrap();
        let mut parsed = RegistryBuilder::new();
        parsed.add_layer(BUILTIN.iter().copied());
        let parsed = parsed.build().unwrap();
        assert_eq!(compiled.len(), BUILTIN.len());
        assert_eq!(compiled.len(), parsed.len());
        assert!(compiled.listing().eq(parsed.listing()));
        for (c, p) in compiled.iter().zip(parsed.iter()) {
            assert_eq!((c.key(), c.id()), (p.key(), p.id()));
            assert_eq!(c.spec(), p.spec(), "{}", p.key());
            assert_eq!(format!("{c:?}"), format!("{p:?}"));
        }
        // Lookups by alias reach the same elements.
        for p in parsed.iter() {
            for alias in &p.spec().aliases {
                assert_eq!(compiled.get(alias).unwrap().key(), p.key());
            }
        }
    }

    #[test]
    fn overrides_apply_to_compiled_elements() {
        let registry = load_with(
            &[],
            [(
                "hubspot",
                OAuthOverride {
                    token_url: Some("http://127.0.0.1:1/token".into()),
                    ..Default::default()
                },
            )],
            [("hubspot", "http://127.0.0.1:2/api")],
        )
        .unwrap();
        let spec = registry.get("hubspot").unwrap().spec();
        assert_eq!(
            spec.oauth.as_ref().unwrap().token_url,
            "http://127.0.0.1:1/token"
        );
        assert_eq!(spec.api_base_url.as_deref(), Some("http://127.0.0.1:2/api"));
        // A generic (compiled) element too, and an unknown key is refused.
        let generic = builtin()
            .unwrap()
            .iter()
            .find(|e| e.spec().oauth.is_some() && e.key() != "hubspot")
            .unwrap()
            .key()
            .to_owned();
        let registry = load_with(&[], [], [(generic.as_str(), "http://127.0.0.1:3/api")]).unwrap();
        assert_eq!(
            registry
                .get(&generic)
                .unwrap()
                .spec()
                .api_base_url
                .as_deref(),
            Some("http://127.0.0.1:3/api")
        );
        let err = load_with(&[], [], [("no-such-element", "http://127.0.0.1:3/api")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: api_base_url override for unknown element `no-such-element`"
        );
    }
}
