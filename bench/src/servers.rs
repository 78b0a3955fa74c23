//! The systems under test, each started fresh as child processes on free loopback ports: our
//! release server on a temporary SQLite database, Nchan (Debian's nginx module), and, for the
//! cluster scenario, our server on a fresh Postgres database, alone or as two instances
//! sharing a Redis.
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
    /// Where publishes go (and subscribers too, unless there are several instances).
    pub addr: SocketAddr,
    /// Every instance subscribers are spread over, round robin.
    instances: Vec<SocketAddr>,
    child: Child,
    /// The other processes of a cluster (its second instance, its Redis): stopped with it,
    /// and counted in its CPU time.
    others: Vec<Child>,
    dir: PathBuf,
    /// Ours on Postgres: the database's name.
    database: Option<String>,
    label: &'static str,
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sse-bench-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts Debian's nginx (with Nchan) on `conf`, written into `prefix` with its error log.
pub fn spawn_nginx(prefix: &Path, conf: &str) -> Child {
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx (Debian's nginx + libnginx-mod-nchan)")
}

impl Server {
    pub async fn start_ours(binary: &Path, site_root: &Path) -> Self {
        Self::start_ours_with(binary, site_root, &[]).await
    }

    /// Ours on SQLite with more settings (`env`), such as a retention.
    pub async fn start_ours_with(binary: &Path, site_root: &Path, env: &[(&str, &str)]) -> Self {
        let dir = temp_dir("ours");
        let addr = free_addr();
        let child = Command::new(binary)
            .envs(env.iter().copied())
            .env("LEPTOS_SITE_ADDR", addr.to_string())
            .env("LEPTOS_SITE_ROOT", site_root)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/orders.db", dir.display()),
            )
            .env("MAX_STREAMS", "50000")
            // Every subscriber of the bench comes from one address: set explicitly, the
            // shares are taken as they are (the default would be a tenth of MAX_STREAMS).
            .env("MAX_STREAMS_PER_CLIENT", "50000")
            .env("MAX_CONNECTIONS_PER_CLIENT", "19700")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let server = Self {
            kind: Kind::Ours,
            addr,
            instances: vec![addr],
            child,
            others: Vec::new(),
            dir,
            database: None,
            label: "ours",
        };
        server.wait_ready("/healthz").await;
        server
    }

    /// Ours on a fresh database of the Postgres server the `PG*` variables name (`make bench`
    /// runs inside pg_virtualenv): one instance, or two sharing a fresh `redis-server`.
    pub async fn start_ours_postgres(binary: &Path, site_root: &Path, instances: usize) -> Self {
        Self::start_ours_postgres_with(binary, site_root, instances, &[]).await
    }

    /// [`Server::start_ours_postgres`] with more settings (`env`).
    pub async fn start_ours_postgres_with(
        binary: &Path,
        site_root: &Path,
        instances: usize,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = temp_dir("cluster");
        let database = format!("bench{}", uuid::Uuid::new_v4().simple());
        let created = Command::new("psql")
            .args(["-q", "-c", &format!("CREATE DATABASE {database}")])
            .status()
            .expect("psql (Debian's postgresql-client)");
        assert!(created.success(), "cannot create the database");
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let database_url = format!(
            "postgres://{}:{}@{}:{}/{database}",
            var("PGUSER"),
            var("PGPASSWORD"),
            var("PGHOST"),
            var("PGPORT")
        );
        let mut others = Vec::new();
        let mut redis_url = None;
        if instances > 1 {
            let port = free_addr().port();
            others.push(
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server (Debian's redis-server)"),
            );
            redis_url = Some(format!("redis://127.0.0.1:{port}"));
        }
        let mut addrs = Vec::new();
        let mut children = Vec::new();
        for _ in 0..instances {
            let addr = free_addr();
            let mut command = Command::new(binary);
            command
                .envs(env.iter().copied())
                .env("LEPTOS_SITE_ADDR", addr.to_string())
                .env("LEPTOS_SITE_ROOT", site_root)
                .env("DATABASE_URL", &database_url)
                .env("MAX_STREAMS", "50000")
                .env("MAX_STREAMS_PER_CLIENT", "50000")
                .env("MAX_CONNECTIONS_PER_CLIENT", "19700")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if let Some(url) = &redis_url {
                command.env("REDIS_URL", url);
            }
            children.push(command.spawn().expect("our server"));
            addrs.push(addr);
            // One at a time: the first applies the migrations.
            Self::wait_ready_at(addr, "/healthz", "ours").await;
        }
        let child = children.remove(0);
        others.extend(children);
        Self {
            kind: Kind::Ours,
            addr: addrs[0],
            instances: addrs,
            child,
            others,
            dir,
            database: Some(database),
            label: match instances {
                1 => "one instance",
                2 => "two instances",
                _ => "instances",
            },
        }
    }

    pub async fn start_nchan(template: &Path) -> Self {
        Self::start_nchan_workers(template, 1).await
    }

    /// Nchan with `workers` worker processes under nginx's master (scenario (7)), sharing
    /// the port (`reuseport`, so the kernel spreads the connections evenly: each worker may
    /// hold no more than 20,000 descriptors here) and the channels (Nchan's shared memory).
    pub async fn start_nchan_workers(template: &Path, workers: usize) -> Self {
        let dir = temp_dir("nchan");
        let addr = free_addr();
        let mut conf = std::fs::read_to_string(template)
            .unwrap()
            .replace("@PREFIX@", &dir.display().to_string())
            .replace("@PORT@", &addr.port().to_string());
        if workers > 1 {
            conf = conf
                .replace("master_process off;", "master_process on;")
                .replace(
                    "worker_processes 1;",
                    &format!("worker_processes {workers};"),
                )
                .replace("backlog=8192;", "backlog=8192 reuseport;");
            assert!(
                conf.contains("master_process on;") && conf.contains("reuseport"),
                "the Nchan template no longer has the settings (7) changes"
            );
        }
        let child = spawn_nginx(&dir, &conf);
        let server = Self {
            kind: Kind::Nchan,
            addr,
            instances: vec![addr],
            child,
            others: Vec::new(),
            dir,
            database: None,
            label: "nchan",
        };
        server.wait_ready("/pub/ready").await;
        server
    }

    async fn wait_ready(&self, path: &str) {
        Self::wait_ready_at(self.addr, path, self.label).await
    }

    /// Waits (up to 20 s) until `path` at `addr` answers below 500.
    pub async fn wait_ready_at(addr: SocketAddr, path: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut conn = Conn::new(addr);
            if let Ok((status, _)) = conn.request("GET", path, None).await {
                if status < 500 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{name} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn name(&self) -> &'static str {
        self.label
    }

    /// Every instance's address (the first is [`Server::addr`]).
    pub fn instances(&self) -> &[SocketAddr] {
        &self.instances
    }

    /// `kill -9` of the first instance (the storm's fault).
    pub fn kill_first(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where subscriber `n` connects: the instances in turn.
    pub fn subscribe_addr(&self, n: usize) -> SocketAddr {
        self.instances[n % self.instances.len()]
    }

    /// What publishing needs of a server, to move into a task.
    pub fn handle(&self) -> Handle {
        Handle {
            kind: self.kind,
            addr: self.addr,
        }
    }

    /// A new channel: an order created through the API, or an Nchan channel id.
    pub async fn new_channel(&self, conn: &mut Conn) -> String {
        self.handle().new_channel(conn).await
    }

    /// Publishes status `index` of the channel's order; returns the HTTP status.
    pub async fn publish(&self, conn: &mut Conn, channel: &str, index: usize) -> u16 {
        self.handle().publish(conn, channel, index).await
    }

    /// Publishes status `index` of each channel's order in one batch (`POST /api/events`,
    /// ours only); returns how many were stored.
    pub async fn publish_batch(&self, conn: &mut Conn, channels: &[String], index: usize) -> usize {
        let status = STATUSES[index];
        let items: Vec<String> = channels
            .iter()
            .map(|channel| format!("{{\"orderId\":\"{channel}\",\"status\":\"{status}\"}}"))
            .collect();
        let body = format!("[{}]", items.join(","));
        match conn.request("POST", "/api/events", Some(&body)).await {
            Ok((200, answer)) => memchr::memmem::find_iter(&answer, b"{\"status\":200,").count(),
            _ => 0,
        }
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

    /// Resident memory in KiB (of the first process).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Proportional resident memory in KiB of every process of the server and their
    /// children (nginx's workers): shared pages (Nchan's shared memory) counted once.
    pub fn pss_total_kib(&self) -> u64 {
        self.processes()
            .into_iter()
            .filter_map(|pid| {
                let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
                rollup
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// The pids of the server's processes and all their descendants.
    fn processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = std::iter::once(&self.child)
            .chain(&self.others)
            .map(Child::id)
            .collect();
        let mut at = 0;
        while at < pids.len() {
            let pid = pids[at];
            if let Ok(children) =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            {
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
            at += 1;
        }
        pids
    }

    /// What ours holds on disk, in bytes: the SQLite file and its log, or the Postgres
    /// database's size.
    pub fn disk_bytes(&self) -> u64 {
        match &self.database {
            Some(database) => Command::new("psql")
                .args([
                    "-tAq",
                    "-c",
                    &format!("SELECT pg_database_size('{database}')"),
                ])
                .output()
                .ok()
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0),
            None => ["orders.db", "orders.db-wal"]
                .iter()
                .filter_map(|file| std::fs::metadata(self.dir.join(file)).ok())
                .map(|meta| meta.len())
                .sum(),
        }
    }

    /// User + system CPU seconds so far, of every process of the server.
    pub fn cpu_seconds(&self) -> f64 {
        // SAFETY: sysconf only reads a process-wide setting.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        self.processes()
            .into_iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let user: f64 = fields.get(11)?.parse().ok()?;
                let system: f64 = fields.get(12)?.parse().ok()?;
                Some((user + system) / ticks)
            })
            .sum()
    }
}

/// A server's kind and address: enough to create channels and publish.
#[derive(Clone, Copy, Debug)]
pub struct Handle {
    pub kind: Kind,
    pub addr: SocketAddr,
}

impl Handle {
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
}

impl Drop for Server {
    fn drop(&mut self) {
        // nginx's workers outlive a killed master: it is asked to stop them (SIGTERM, a fast
        // shutdown), and whichever is left after two seconds is killed.
        let workers: Vec<u32> = self.processes().split_off(1 + self.others.len());
        if !workers.is_empty() {
            // SAFETY: signals to processes this server started.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            for pid in workers {
                // SAFETY: as above.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        for child in std::iter::once(&mut self.child).chain(&mut self.others) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
