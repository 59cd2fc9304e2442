//! A running `warden serve` driven over HTTP, shared by the daemon tests (`tests/serve.rs`,
//! `tests/serve_proof.rs`). Each test file keeps its own site (policies and `warden.yaml`);
//! this is the process and the client.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `warden serve`, killed on drop.
pub struct Server {
    /// The daemon (public for a test that SIGKILLs it).
    pub child: Child,
    /// The `host:port` it listens on.
    pub addr: String,
    /// The file its stderr (the log) goes to.
    pub log: PathBuf,
    agent: ureq::Agent,
}

/// One HTTP answer: the status, the headers, the body as text and, where it is JSON, parsed
/// (`Value::Null` otherwise).
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error body's `error.code` (OPA's routes: its top-level `code`), or `""`.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .or_else(|| self.body["code"].as_str())
            .unwrap_or("")
    }

    /// The error body's `error.message` (OPA's routes: its top-level `message`), or `""`.
    pub fn message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .or_else(|| self.body["message"].as_str())
            .unwrap_or("")
    }
}

impl Server {
    /// Starts `warden serve ARGS --port-file PORT_FILE` with its log in `log` (see
    /// [`super::spawn_serve`]) and waits until it listens.
    pub fn spawn(args: &[impl AsRef<OsStr>], port_file: &Path, log: &Path) -> Self {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let (child, addr) = super::spawn_serve(&args, port_file, log);
        Self {
            child,
            addr,
            log: log.to_path_buf(),
            agent: super::agent(),
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One request: `method` (`PUT`, `PATCH`, else POST) with `body`, or without one a `DELETE`
    /// or (any other method) a GET.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let uri = self.url(path);
        let mut response = match body {
            Some(body) => {
                let mut req = match method {
                    "PUT" => self.agent.put(&uri),
                    "PATCH" => self.agent.patch(&uri),
                    _ => self.agent.post(&uri),
                };
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.send(body).unwrap()
            }
            None => {
                let mut req = match method {
                    "DELETE" => self.agent.delete(&uri),
                    _ => self.agent.get(&uri),
                };
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.call().unwrap()
            }
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// POSTs `body` as JSON, with `key` as `x-api-key` if given.
    pub fn post_json(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        let body = body.to_string();
        let mut headers = vec![("content-type", "application/json")];
        if let Some(key) = key {
            headers.push(("x-api-key", key));
        }
        self.request("POST", path, &headers, Some(body.as_bytes()))
    }

    /// POSTs `body` as is, as JSON (to send it the way a client wrote it: key order, spacing).
    pub fn post_raw(&self, path: &str, body: &str) -> Reply {
        let headers = [("content-type", "application/json")];
        self.request("POST", path, &headers, Some(body.as_bytes()))
    }

    /// GETs `path`.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    /// The value on the first `/metrics` line starting with `line_prefix`, or 0.
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let metrics = self.get("/metrics").text;
        metrics
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Sends the daemon `signal` (`HUP`, `TERM`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                break;
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log_text()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `cond` holds (reloads are asynchronous).
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
