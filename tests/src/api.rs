//! A small HTTP client for the gateway's API: one request per connection (HTTP/1.0).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// An answer: status, headers (names lower case) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics, naming the body, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a request proves who sends it.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// Nothing.
    None,
    /// `Authorization: Bearer {token}`.
    Bearer(&'a str),
    /// `Cookie: {cookie}`.
    Cookie(&'a str),
}

/// Sends `method path` to the API on loopback `port`, with a JSON `body` if given.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    credential: Credential<'_>,
    body: Option<&serde_json::Value>,
) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the API answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&raw(port, method, path, credential, body))
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("an answer");
    parse(&response)
}

/// A stream of Server-Sent Events read on a thread of its own until it is stopped.
pub struct Listener {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: std::thread::JoinHandle<Answer>,
}

impl Listener {
    /// Opens `GET path` with `credential` and reads what comes.
    pub fn open(port: u16, path: &str, credential: Credential<'_>) -> Listener {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the API answers");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        stream
            .write_all(&raw(port, "GET", path, credential, None))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut response = Vec::new();
            let mut buffer = [0u8; 8192];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match stream.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => response.extend_from_slice(&buffer[..n]),
                    Err(_) => {} // a read timeout: look at the flag again
                }
            }
            parse(&response)
        });
        Listener { stop, reader }
    }

    /// Whether the server ended the stream.
    pub fn ended(&self) -> bool {
        self.reader.is_finished()
    }

    /// Stops reading: the answer so far, with every event received in its body.
    pub fn close(self) -> Answer {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.reader.join().expect("the reader")
    }
}

/// The events (name, JSON data) in a Server-Sent Events body.
pub fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    (body.split("\n\n"))
        .filter_map(|block| {
            let field = |name: &str| {
                (block.lines())
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let data = serde_json::from_str(&field("data:")?).ok()?;
            Some((field("event:")?, data))
        })
        .collect()
}

/// As [`request`], over HTTPS with `openssl s_client`, which verifies the server's
/// certificate for 127.0.0.1 against the authority `ca`.
pub fn request_tls(
    port: u16,
    ca: &Path,
    method: &str,
    path: &str,
    credential: Credential<'_>,
    body: Option<&serde_json::Value>,
) -> Option<Answer> {
    let mut client = Command::new(crate::require("openssl", "openssl"))
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ])
        .arg("-CAfile")
        .arg(ca)
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running openssl s_client");
    let request = raw(port, method, path, credential, body);
    if let Some(mut stdin) = client.stdin.take() {
        let _ = stdin.write_all(&request);
    }
    let out = client.wait_with_output().ok()?;
    (out.status.success() && !out.stdout.is_empty()).then(|| parse(&out.stdout))
}

fn raw(
    port: u16,
    method: &str,
    path: &str,
    credential: Credential<'_>,
    body: Option<&serde_json::Value>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    match credential {
        Credential::None => {}
        Credential::Bearer(token) => head.push_str(&format!("Authorization: Bearer {token}\r\n")),
        Credential::Cookie(cookie) => head.push_str(&format!("Cookie: {cookie}\r\n")),
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

fn parse(response: &[u8]) -> Answer {
    let response = String::from_utf8_lossy(response);
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = (lines.next().and_then(|l| l.split(' ').nth(1)))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `parklight token create` for `role`, named after it, on the gateway of `config`: the
/// token, which it printed alone on one line.
pub fn create_token(config: &str, role: &str) -> String {
    let done = crate::process::Parklight::spawn(&[
        "token", "create", "--config", config, "--role", role, "--name", role,
    ])
    .wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.stderr);
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone: {:?}", done.stdout);
    assert!(
        lines[0].starts_with("plk_") && lines[0].len() == 68,
        "{}",
        lines[0]
    );
    lines[0].to_owned()
}
