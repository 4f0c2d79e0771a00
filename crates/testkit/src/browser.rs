//! A real headless Chromium driven over WebDriver, for tests of HTML pages.
//!
//! [`Browser::start`] runs the machine's `chromedriver` (installed by
//! `scripts/setup.sh`) on a free port of 127.0.0.1 in its own process group,
//! opens a headless session with a fresh temporary profile, and offers the
//! few things tests do: navigate, find by CSS selector, fill, click, read
//! text, take a PNG screenshot. Dropping the browser kills chromedriver and
//! the Chromium it started, and removes the profile.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// The flags Chromium runs with (plus `--user-data-dir` and the window size).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// The window size, so screenshots are comparable.
pub const WINDOW: (u32, u32) = (1280, 900);

/// What went wrong, in words.
#[derive(Debug)]
pub struct BrowserError(pub String);

impl fmt::Display for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

/// Shorthand.
pub type Result<T> = std::result::Result<T, BrowserError>;

fn err(context: &str) -> impl Fn(fantoccini::error::CmdError) -> BrowserError + '_ {
    move |e| BrowserError(format!("{context}: {e}"))
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver_pid", &self.driver.id())
            .finish_non_exhaustive()
    }
}

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BrowserError(format!("no free port on 127.0.0.1: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| BrowserError(format!("no local address: {e}")))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Result<Browser> {
        let driver_path = on_path(&["chromedriver"]).ok_or_else(|| {
            BrowserError("chromedriver is not on PATH: run scripts/setup.sh".into())
        })?;
        let chromium = on_path(&["chromium", "chromium-browser"])
            .ok_or_else(|| BrowserError("chromium is not on PATH: run scripts/setup.sh".into()))?;
        let profile = tempfile::tempdir()
            .map_err(|e| BrowserError(format!("temporary profile directory: {e}")))?;
        // Chromium's own temporary directories go inside the profile's, so
        // they are removed with it even when Chromium is killed.
        let tmp = profile.path().join("tmp");
        std::fs::create_dir(&tmp).map_err(|e| BrowserError(format!("temporary directory: {e}")))?;
        let user_data = profile.path().join("profile");
        let port = free_port()?;
        let mut command = Command::new(&driver_path);
        command
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so drop can end Chromium with it.
            command.process_group(0);
        }
        let driver = command
            .spawn()
            .map_err(|e| BrowserError(format!("starting {}: {e}", driver_path.display())))?;
        // From here on, a failure still kills chromedriver (Guard's drop).
        let mut guard = Guard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        wait_listening(port, guard.0.as_mut().expect("spawned")).await?;

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data.display()));
        args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": args,
                "binary": chromium.display().to_string(),
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .map_err(|e| BrowserError(format!("opening a Chromium session: {e}")))?;
        Ok(Browser {
            client,
            driver: guard.0.take().expect("spawned"),
            _profile: profile,
        })
    }

    /// The WebDriver client, for anything not wrapped here.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.map_err(err("navigating"))
    }

    /// The current URL.
    pub async fn url(&self) -> Result<String> {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .map_err(err("reading the URL"))
    }

    /// Waits (at most 10 s) until the current URL starts with `prefix`:
    /// after a click that navigates, `wait_for` an element the old page has
    /// too would return before the navigation.
    pub async fn wait_for_url(&self, prefix: &str) -> Result<String> {
        poll_until(
            || self.url(),
            |url| matches!(url, Ok(u) if u.starts_with(prefix)),
            |url| format!("waiting for a URL starting with `{prefix}`: still at {url:?}"),
        )
        .await
    }

    /// Waits (at most 10 s) until the element matching `css` has exactly
    /// the text `expected`, through a navigation (the old page's element,
    /// or none while the new page loads, is waited past). Answers the text.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> Result<String> {
        poll_until(
            || self.text(css),
            |text| matches!(text, Ok(t) if t == expected),
            |text| format!("waiting for `{css}` to read `{expected}`: {text:?}"),
        )
        .await
    }

    /// The page's title.
    pub async fn title(&self) -> Result<String> {
        self.client.title().await.map_err(err("reading the title"))
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> Result<String> {
        self.client
            .source()
            .await
            .map_err(err("reading the source"))
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(|e| BrowserError(format!("finding `{css}`: {e}")))
    }

    /// The first element matching a CSS selector, waiting up to 10 s for it
    /// to appear (after a click that navigates, say).
    pub async fn wait_for(&self, css: &str) -> Result<Element> {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| BrowserError(format!("waiting for `{css}`: {e}")))
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_err(|e| BrowserError(format!("finding all `{css}`: {e}")))
    }

    /// Whether any element matches a CSS selector.
    pub async fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self.find_all(css).await?.is_empty())
    }

    /// The visible text of the first element matching a CSS selector.
    pub async fn text(&self, css: &str) -> Result<String> {
        self.find(css)
            .await?
            .text()
            .await
            .map_err(|e| BrowserError(format!("reading the text of `{css}`: {e}")))
    }

    /// Replaces the value of the input matching a CSS selector.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let element = self.find(css).await?;
        element
            .clear()
            .await
            .map_err(|e| BrowserError(format!("clearing `{css}`: {e}")))?;
        element
            .send_keys(value)
            .await
            .map_err(|e| BrowserError(format!("typing into `{css}`: {e}")))
    }

    /// Clicks the element matching a CSS selector (and waits for any
    /// navigation it starts).
    pub async fn click(&self, css: &str) -> Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .map_err(|e| BrowserError(format!("clicking `{css}`: {e}")))
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        self.client
            .screenshot()
            .await
            .map_err(err("taking a screenshot"))
    }

    /// Writes a PNG screenshot of the window to `path` (creating its folder).
    pub async fn screenshot_to(&self, path: &Path) -> Result<()> {
        let png = self.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BrowserError(format!("creating {}: {e}", dir.display())))?;
        }
        std::fs::write(path, png)
            .map_err(|e| BrowserError(format!("writing {}: {e}", path.display())))
    }

    /// Ends the session cleanly, then stops chromedriver.
    pub async fn close(self) -> Result<()> {
        self.client
            .clone()
            .close()
            .await
            .map_err(err("closing the session"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills a chromedriver and its process group if dropped before `take`.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
        }
    }
}

/// Kills chromedriver's process group (chromedriver and the Chromium it
/// started), then reaps chromedriver.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until chromedriver accepts connections on `port` (at most 30 s),
/// failing early if it exits.
async fn wait_listening(port: u16, driver: &mut Child) -> Result<()> {
    for _ in 0..600 {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(BrowserError(format!(
                "chromedriver exited before listening: {status}"
            )));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BrowserError(format!(
        "chromedriver did not listen on 127.0.0.1:{port} within 30 s"
    )))
}

/// Polls `read` every 50 ms until `done` holds for what it answered (then
/// answers that), or 10 s have passed (then an error `why` describes from
/// the last answer).
async fn poll_until<T, F, Fut>(
    mut read: F,
    done: impl Fn(&Result<T>) -> bool,
    why: impl Fn(&Result<T>) -> String,
) -> Result<T>
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = read().await;
        if done(&answer) {
            return answer;
        }
        if std::time::Instant::now() >= deadline {
            return Err(BrowserError(why(&answer)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
