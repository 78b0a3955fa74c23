//! The faults of a chaos run: drawn from a seed before the run starts (so that a seed gives
//! the same schedule again), then done and undone on the parts `scripts/cluster.sh` started,
//! through the scripts and pid files it leaves in its folder.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use super::checker::Fault;

/// What can go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `kill -9` of an instance, started again a few seconds later.
    Kill,
    /// `SIGSTOP` of an instance for 1 to 10 s, then `SIGCONT`.
    Stop,
    /// Redis killed and started again (it keeps nothing: pub/sub only).
    RedisRestart,
    /// `CLIENT KILL TYPE pubsub`: every instance's subscription cut at once.
    PubsubKill,
    /// Postgres stopped with `-m immediate` (a crash: recovery from its log at start).
    PostgresCrash,
    /// nginx told to reload (`SIGHUP`): new workers, the old ones finishing their streams.
    NginxReload,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill -9 instance",
            Kind::Stop => "SIGSTOP instance",
            Kind::RedisRestart => "Redis restarted",
            Kind::PubsubKill => "CLIENT KILL pubsub",
            Kind::PostgresCrash => "Postgres crash",
            Kind::NginxReload => "nginx reload",
        }
    }

    fn on_instance(self) -> bool {
        matches!(self, Kind::Kill | Kind::Stop)
    }

    pub fn on_redis(self) -> bool {
        matches!(self, Kind::RedisRestart | Kind::PubsubKill)
    }

    /// How long it is held, in seconds, drawn.
    fn hold(self, rng: &mut fastrand::Rng) -> f64 {
        let between = |rng: &mut fastrand::Rng, low: f64, high: f64| low + rng.f64() * (high - low);
        match self {
            Kind::Kill => between(rng, 2.0, 5.0),
            Kind::Stop => between(rng, 1.0, 10.0),
            Kind::RedisRestart | Kind::PostgresCrash => between(rng, 1.0, 3.0),
            Kind::PubsubKill | Kind::NginxReload => 0.0,
        }
    }
}

/// The kinds, each as often as its weight.
const WEIGHTED: [(Kind, u32); 6] = [
    (Kind::Kill, 3),
    (Kind::Stop, 3),
    (Kind::RedisRestart, 2),
    (Kind::PubsubKill, 2),
    (Kind::PostgresCrash, 2),
    (Kind::NginxReload, 2),
];

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub kind: Kind,
    /// The instance, for a fault on one.
    pub instance: usize,
    pub hold: f64,
}

/// Faults that start together (one, sometimes two), and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub at: f64,
    pub faults: Vec<Planned>,
}

fn draw(rng: &mut fastrand::Rng, kinds: &[(Kind, u32)]) -> Kind {
    let total: u32 = kinds.iter().map(|(_, w)| w).sum();
    let mut pick = rng.u32(0..total);
    for (kind, weight) in kinds {
        if pick < *weight {
            return *kind;
        }
        pick -= weight;
    }
    kinds[0].0
}

/// The schedule for a run of `duration` seconds over `instances` instances: a group every
/// 2 to 6 s after the last one ends, from the third second to three seconds before the end;
/// one in four groups holds two faults of different kinds (never both on Redis, never the
/// same instance twice), so that at least one instance always serves.
pub fn plan(seed: u64, duration: f64, instances: usize) -> Vec<Group> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut groups = Vec::new();
    let mut at = 3.0;
    while at < duration - 3.0 {
        let first = draw(&mut rng, &WEIGHTED);
        let mut faults = vec![Planned {
            kind: first,
            instance: rng.usize(0..instances),
            hold: first.hold(&mut rng),
        }];
        if rng.u32(0..4) == 0 {
            let others: Vec<(Kind, u32)> = WEIGHTED
                .iter()
                .copied()
                .filter(|(k, _)| *k != first && !(k.on_redis() && first.on_redis()))
                .collect();
            let second = draw(&mut rng, &others);
            let instance = if second.on_instance() && first.on_instance() {
                (faults[0].instance + 1 + rng.usize(0..instances - 1)) % instances
            } else {
                rng.usize(0..instances)
            };
            faults.push(Planned {
                kind: second,
                instance,
                hold: second.hold(&mut rng),
            });
        }
        let longest = faults.iter().map(|f| f.hold).fold(0.0, f64::max);
        groups.push(Group { at, faults });
        // Undoing takes a moment more than the hold (a restart, a recovery).
        at += longest + 1.0 + 2.0 + rng.f64() * 4.0;
    }
    groups
}

/// The parts of the cluster, as `scripts/cluster.sh` leaves them in its folder.
#[derive(Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub instances: Vec<String>,
}

impl Cluster {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn pid(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(&format!("{name}.pid")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    pub fn port(&self, name: &str) -> u16 {
        std::fs::read_to_string(self.file(&format!("{name}.port")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    fn signal(&self, name: &str, signal: &str) {
        let pid = self.pid(name);
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
    }

    fn run(&self, script: &str) {
        let status = Command::new(self.file(script)).status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("[chaos] {script} failed: {status:?}");
        }
    }

    /// Waits (up to 30 s) until `port` accepts, or answers `path` with `200`; whether it did.
    pub async fn wait_port(port: u16, path: Option<&str>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while Instant::now() < deadline {
            match path {
                Some(path) => {
                    let mut conn = crate::wire::Conn::new(addr);
                    let answer = tokio::time::timeout(
                        Duration::from_secs(1),
                        conn.request("GET", path, None),
                    )
                    .await;
                    if matches!(answer, Ok(Ok((200, _)))) {
                        return true;
                    }
                }
                None => {
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("[chaos] port {port} did not come back within 30 s");
        false
    }

    /// Does `fault`, holds it, undoes it, and waits until the part serves again; returns
    /// the window it was in effect, in seconds since `epoch`.
    pub async fn inflict(&self, fault: &Planned, epoch: Instant) -> Fault {
        let instance = || format!("{}.instance", self.instances[fault.instance]);
        let hold = Duration::from_secs_f64(fault.hold);
        let start = epoch.elapsed().as_secs_f64();
        let what = match fault.kind {
            Kind::Kill | Kind::Stop => self.instances[fault.instance].clone(),
            _ => String::new(),
        };
        match fault.kind {
            Kind::Kill => {
                let instance = instance();
                self.signal(&instance, "KILL");
                tokio::time::sleep(hold).await;
                self.run(&format!("{instance}.start"));
                Self::wait_port(self.port(&instance), Some("/healthz")).await;
            }
            Kind::Stop => {
                let instance = instance();
                self.signal(&instance, "STOP");
                tokio::time::sleep(hold).await;
                self.signal(&instance, "CONT");
            }
            Kind::RedisRestart => {
                self.signal("redis", "KILL");
                tokio::time::sleep(hold).await;
                self.run("redis.start");
                Self::wait_port(self.port("redis"), None).await;
            }
            Kind::PubsubKill => {
                let _ = Command::new("redis-cli")
                    .args(["-p", &self.port("redis").to_string()])
                    .args(["CLIENT", "KILL", "TYPE", "pubsub"])
                    .stdout(std::process::Stdio::null())
                    .status();
            }
            Kind::PostgresCrash => {
                let dir = self.dir.clone();
                let _ = tokio::task::spawn_blocking(move || run_in(&dir, "postgres.crash")).await;
                tokio::time::sleep(hold).await;
                let dir = self.dir.clone();
                let _ = tokio::task::spawn_blocking(move || run_in(&dir, "postgres.start")).await;
            }
            Kind::NginxReload => self.signal("nginx", "HUP"),
        }
        Fault {
            kind: fault.kind.name(),
            what,
            start,
            end: epoch.elapsed().as_secs_f64(),
        }
    }
}

fn run_in(dir: &Path, script: &str) {
    let status = Command::new(dir.join(script))
        .stdout(std::process::Stdio::null())
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("[chaos] {script} failed: {status:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_never_every_instance_at_once() {
        let plan_a = plan(42, 300.0, 3);
        assert_eq!(plan_a, plan(42, 300.0, 3));
        assert_ne!(plan_a, plan(43, 300.0, 3));
        assert!(plan_a.len() > 20, "{}", plan_a.len());
        let mut kinds = std::collections::HashSet::new();
        let mut pairs = 0;
        for group in &plan_a {
            assert!(group.at >= 3.0 && group.at < 297.0);
            assert!(group.faults.len() <= 2);
            if let [a, b] = &group.faults[..] {
                pairs += 1;
                assert_ne!(a.kind, b.kind);
                assert!(!(a.kind.on_redis() && b.kind.on_redis()));
                if a.kind.on_instance() && b.kind.on_instance() {
                    assert_ne!(a.instance, b.instance);
                }
            }
            kinds.extend(group.faults.iter().map(|f| f.kind));
        }
        assert_eq!(kinds.len(), 6, "every kind is drawn in 300 s");
        assert!(pairs > 0, "sometimes two together");
        // One after the other: a group starts after the last one's hold.
        for w in plan_a.windows(2) {
            let hold = w[0].faults.iter().map(|f| f.hold).fold(0.0, f64::max);
            assert!(w[1].at >= w[0].at + hold + 3.0);
        }
    }
}
