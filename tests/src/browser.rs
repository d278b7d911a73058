//! A real browser: Debian's headless Chromium driven through chromedriver (WebDriver) with
//! `fantoccini`, each on a free loopback port and with a profile folder of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::{free_port, require, wait_until};

/// chromedriver and the browser session it drives; both stopped when dropped.
pub struct Browser {
    driver: Child,
    /// The WebDriver session.
    pub client: Client,
    _profile: tempfile::TempDir,
    artefacts: PathBuf,
    shots: usize,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; screenshots go to `artefacts`.
    pub async fn start(artefacts: &Path) -> Browser {
        let chromium = require("chromium", "chromium");
        let driver_path = require("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "chromedriver did not listen on port {port}");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let capabilities = capabilities.as_object().cloned().unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");
        std::fs::create_dir_all(artefacts).unwrap();
        Browser {
            driver,
            client,
            _profile: profile,
            artefacts: artefacts.to_owned(),
            shots: 0,
        }
    }

    /// Saves a screenshot of the page as `NN-{step}.png` among the artefacts.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let path = self.artefacts.join(format!("{:02}-{step}.png", self.shots));
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits up to `timeout` for `script` (a JavaScript expression) to be true on the page.
    pub async fn wait_for(&self, timeout: Duration, script: &str) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let value = self
                .client
                .execute(&format!("return Boolean({script});"), vec![])
                .await;
            if value.is_ok_and(|v| v == serde_json::Value::Bool(true)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// The value of a JavaScript expression on the page.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(&format!("return ({script});"), vec![])
            .await
            .expect("the script runs")
    }

    /// Logs in on the dashboard at `url` with `token`, and waits for the map.
    pub async fn log_in(&self, url: &str, token: &str) {
        self.client.goto(url).await.expect("the page loads");
        let form = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#token"))
            .await
            .expect("the login form");
        form.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("#login button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mapped = self
            .wait_for(
                Duration::from_secs(20),
                "document.querySelector('svg.map path')",
            )
            .await;
        assert!(mapped, "no map after logging in");
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
