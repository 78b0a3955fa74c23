//! The two systems under test, each started fresh as a child process on a free loopback
//! port: our release server on a temporary database, and Nchan (Debian's nginx module).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wire::{Conn, STATUSES};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Ours,
    Nchan,
}

pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sse-bench-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    pub async fn start_ours(binary: &Path, site_root: &Path) -> Self {
        let dir = temp_dir("ours");
        let addr = free_addr();
        let child = Command::new(binary)
            .env("LEPTOS_SITE_ADDR", addr.to_string())
            .env("LEPTOS_SITE_ROOT", site_root)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/orders.db", dir.display()),
            )
            .env("MAX_STREAMS", "50000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let server = Self {
            kind: Kind::Ours,
            addr,
            child,
            dir,
        };
        server.wait_ready("/healthz").await;
        server
    }

    pub async fn start_nchan(template: &Path) -> Self {
        let dir = temp_dir("nchan");
        let addr = free_addr();
        let conf = std::fs::read_to_string(template)
            .unwrap()
            .replace("@PREFIX@", &dir.display().to_string())
            .replace("@PORT@", &addr.port().to_string());
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx + libnginx-mod-nchan)");
        let server = Self {
            kind: Kind::Nchan,
            addr,
            child,
            dir,
        };
        server.wait_ready("/pub/ready").await;
        server
    }

    async fn wait_ready(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut conn = Conn::new(self.addr);
            if let Ok((status, _)) = conn.request("GET", path, None).await {
                if status < 500 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{:?} did not start", self.kind);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Ours => "ours",
            Kind::Nchan => "nchan",
        }
    }

    /// A new channel: an order created through the API, or an Nchan channel id.
    pub async fn new_channel(&self, conn: &mut Conn) -> String {
        match self.kind {
            Kind::Ours => {
                let (status, body) = conn
                    .request("POST", "/api/orders", None)
                    .await
                    .expect("create order");
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
                let body = String::from_utf8(body).unwrap();
                let start = body.find("\"id\":\"").unwrap() + 6;
                body[start..start + 36].to_owned()
            }
            Kind::Nchan => uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Publishes status `index` of the channel's order; returns the HTTP status.
    pub async fn publish(&self, conn: &mut Conn, channel: &str, index: usize) -> u16 {
        let status = STATUSES[index];
        let result = match self.kind {
            Kind::Ours => {
                let body = format!("{{\"status\":\"{status}\"}}");
                conn.request(
                    "POST",
                    &format!("/api/orders/{channel}/status"),
                    Some(&body),
                )
                .await
            }
            Kind::Nchan => {
                // The same payload our server sends as the event's data.
                let body = format!(
                    "{{\"orderId\":\"{channel}\",\"status\":\"{status}\",\"timestamp\":\"2026-11-23T23:10:00.123Z\"}}"
                );
                conn.request("POST", &format!("/pub/{channel}"), Some(&body))
                    .await
            }
        };
        result.map(|(status, _)| status).unwrap_or(0)
    }

    /// The statuses a fresh channel already has (ours: `Created`).
    pub fn initial_events(&self) -> usize {
        match self.kind {
            Kind::Ours => 1,
            Kind::Nchan => 0,
        }
    }

    pub fn subscribe_path(&self, channel: &str, replay: bool) -> String {
        match (self.kind, replay) {
            (Kind::Ours, _) => format!("/orders/{channel}/stream"),
            (Kind::Nchan, false) => format!("/sub/{channel}"),
            (Kind::Nchan, true) => format!("/replay/{channel}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| {
                let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
                let user: f64 = fields.get(11)?.parse().ok()?;
                let system: f64 = fields.get(12)?.parse().ok()?;
                Some((user + system) / ticks)
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
