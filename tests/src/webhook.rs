//! A webhook receiver run by the test: an HTTP server on a free loopback port that
//! records every request, and can be down (refusing connections), failing (500) or up.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Takes every request (204).
    Up = 0,
    /// Answers 500.
    Failing = 1,
    /// Refuses connections (no listener).
    Down = 2,
    /// Stops for good.
    Stopped = 3,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    /// Header names in lower case, and values.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// Whether it was taken (204) rather than failed (500).
    pub taken: bool,
    /// Wall time it arrived, Unix ms.
    pub at: i64,
}

/// The receiver; stops when dropped.
pub struct WebhookReceiver {
    port: u16,
    mode: Arc<AtomicU8>,
    requests: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Starts up, on a free loopback port.
    pub fn start() -> WebhookReceiver {
        let port = crate::free_port();
        let mode = Arc::new(AtomicU8::new(Mode::Up as u8));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (mode, requests) = (mode.clone(), requests.clone());
            std::thread::spawn(move || serve(port, &mode, &requests))
        };
        let receiver = WebhookReceiver {
            port,
            mode,
            requests,
            thread: Some(thread),
        };
        assert!(
            crate::wait_until(Duration::from_secs(5), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "the webhook receiver did not listen"
        );
        receiver
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Changes how it answers from now on.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests it took.
    pub fn taken(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.taken).collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.set(Mode::Stopped);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(port: u16, mode: &AtomicU8, requests: &Mutex<Vec<Request>>) {
    let mut listener: Option<TcpListener> = None;
    loop {
        let now = mode.load(Ordering::SeqCst);
        if now == Mode::Stopped as u8 {
            return;
        }
        if now == Mode::Down as u8 {
            listener = None; // connections are refused
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let bound = listener.get_or_insert_with(|| {
            let l = TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port again");
            l.set_nonblocking(true).unwrap();
            l
        });
        match bound.accept() {
            Ok((stream, _)) => {
                let taken = mode.load(Ordering::SeqCst) == Mode::Up as u8;
                if let Some(request) = answer(stream, taken) {
                    requests.lock().unwrap().push(request);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Reads one request and answers 204 when `taken`, else 500; closes the connection.
fn answer(stream: TcpStream, taken: bool) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let status = if taken {
        "204 No Content"
    } else {
        "500 Internal Server Error"
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Some(Request {
        headers,
        body,
        taken,
        at: jiff::Timestamp::now().as_millisecond(),
    })
}

/// Checks a request as a receiver must: a timestamp at most `max_age_s` old and an
/// HMAC-SHA256 with `secret` over `"{timestamp}.{body}"` that matches its signature.
pub fn verify(
    secret: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    max_age_s: i64,
) -> Result<(), String> {
    let timestamp: i64 = headers
        .get("x-parklight-timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("no timestamp")?;
    let age = jiff::Timestamp::now().as_second() - timestamp;
    if age.abs() > max_age_s {
        return Err(format!("timestamp {age} s old"));
    }
    let signature = headers.get("x-parklight-signature").ok_or("no signature")?;
    let hex = signature.strip_prefix("sha256=").ok_or("not sha256=")?;
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "signature not hex")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &tag).map_err(|_| "signature does not match".into())
}
