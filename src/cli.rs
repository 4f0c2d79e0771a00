//! Flag parsing and the commands. Each command is a few calls into the crates.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use elements_core::{Element, OAuthUrlRequest, Registry};
use serde::Serialize;

/// Connector registry and OAuth broker, compatible with the Cloud Elements API.
#[derive(Debug, Parser)]
#[command(name = "elements", version, about)]
struct Cli {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct CatalogArgs {
    /// A directory of element TOML files that adds or overrides built-in
    /// elements (repeatable; later directories win).
    #[arg(long = "elements-dir", global = true, env = "ELEMENTS_ELEMENTS_DIR", value_delimiter = ',')]
    elements_dirs: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the elements, sorted by id.
    List {
        /// Print a JSON array of element objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one element as JSON.
    Show {
        /// The element's key or numeric id.
        element: String,
    },
    /// Print the OAuth authorization URL of an element as JSON.
    OauthUrl(OAuthUrlArgs),
    /// Validate catalog directories (default: elements/).
    Check {
        /// Directories to check, each a layer over the built-in catalog.
        dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct OAuthUrlArgs {
    /// The element's key or numeric id.
    element: String,
    /// The OAuth client id (`apiKey`).
    #[arg(long)]
    api_key: Option<String>,
    /// The client secret (`apiSecret`; HubSpot's legacy flow: the Portal ID).
    #[arg(long)]
    api_secret: Option<String>,
    /// The scope, e.g. "contacts-rw offline".
    #[arg(long)]
    scope: Option<String>,
    /// The callback URL, used exactly as given.
    #[arg(long)]
    callback_url: Option<String>,
    /// An opaque value passed through to the callback.
    #[arg(long)]
    state: Option<String>,
    /// The PKCE code verifier (generated and printed when the element uses
    /// PKCE and none is given).
    #[arg(long)]
    code_verifier: Option<String>,
    /// An element-specific parameter, e.g. `oauth.flow=current` for HubSpot
    /// (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::List { json } => list(&load(&cli.catalog)?, json),
        Command::Show { element } => {
            let registry = load(&cli.catalog)?;
            let element = find(&registry, &element)?;
            print_json(&serde_json::to_string_pretty(&element.spec().view())?)
        }
        Command::OauthUrl(args) => oauth_url(&load(&cli.catalog)?, args),
        Command::Check { dirs } => check(&cli.catalog, dirs),
    }
}

fn load(args: &CatalogArgs) -> anyhow::Result<Registry> {
    elements_catalog::load(&args.elements_dirs, [])
        .map_err(|errors| anyhow!("the catalog is invalid:\n{errors}"))
}

fn find<'r>(registry: &'r Registry, key_or_id: &str) -> anyhow::Result<&'r dyn Element> {
    if let Some(element) = registry.get(key_or_id) {
        return Ok(element.as_ref());
    }
    let suggestions = registry.suggest(key_or_id);
    if suggestions.is_empty() {
        bail!("unknown element `{key_or_id}` (`elements list` shows them all)")
    }
    bail!(
        "unknown element `{key_or_id}`; did you mean {}?",
        suggestions
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn print_json(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(ExitCode::SUCCESS)
}

fn list(registry: &Registry, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let all: Vec<_> = registry.iter().map(|e| e.spec().metadata()).collect();
        return print_json(&serde_json::to_string_pretty(&all)?);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:>6}  {:<24}  {:<14}  {:<8}  NAME", "ID", "KEY", "HUB", "AUTH")?;
    for element in registry.iter() {
        let spec = element.spec();
        writeln!(
            out,
            "{:>6}  {:<24}  {:<14}  {:<8}  {}",
            spec.id,
            spec.key,
            spec.hub,
            spec.authentication.as_str(),
            spec.name
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OAuthUrlOutput<'a> {
    element: &'a str,
    oauth_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_verifier: Option<&'a str>,
}

fn oauth_url(registry: &Registry, args: OAuthUrlArgs) -> anyhow::Result<ExitCode> {
    let element = find(registry, &args.element)?;
    let code_verifier = match args.code_verifier {
        Some(v) => Some(v),
        None if element.uses_pkce() => Some(elements_server::pkce::new_code_verifier()),
        None => None,
    };
    let request = OAuthUrlRequest {
        api_key: args.api_key,
        api_secret: args.api_secret,
        scope: args.scope,
        callback_url: args.callback_url,
        state: args.state,
        code_verifier: code_verifier.clone(),
        params: args.params.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let url = element
        .oauth_url(&request)
        .with_context(|| format!("cannot build the OAuth URL of `{}`", element.key()))?;
    print_json(&serde_json::to_string(&OAuthUrlOutput {
        element: element.key(),
        oauth_url: &url.url,
        code_verifier: code_verifier.as_deref(),
    })?)
}

fn check(args: &CatalogArgs, mut dirs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    if dirs.is_empty() {
        dirs.push(PathBuf::from("elements"));
    }
    dirs.splice(0..0, args.elements_dirs.iter().cloned());
    match elements_catalog::load(&dirs, []) {
        Ok(registry) => {
            println!(
                "ok: {} elements ({} checked)",
                registry.len(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(ExitCode::from(1))
        }
    }
}
