//! Fair shares: no client address holds more than its share of connections or streams
//! (spec §13), and the process never holds more connections than it has descriptors for.
//!
//! A client is the peer's address, or, when the peer is a proxy listed in
//! `TRUSTED_PROXIES`, the address that proxy appended to `X-Forwarded-For`: a header is
//! believed only from a proxy we trust, so a client cannot forge its way into another's
//! share. A trusted proxy's own connections count against the total only: they carry many
//! clients.
//!
//! The table holds an entry per address only while that address holds something, so it is
//! bounded by the connections and streams open. One std `Mutex`, held for a lookup and an
//! increment, never across an await: contention is one short critical section per accept
//! and per stream, far cheaper than what either costs anyway.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Args;
use ipnet::IpNet;

use crate::server::metrics::Metrics;

/// The shares as configured; unset ones are derived ([`Shares::resolve`]).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections open at once, in all. Default: the descriptor limit (raised at start to
    /// the hard limit) less what the store, the logs and the bus need.
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Connections one client address may hold at once; past it a new one is closed at
    /// once. Default: its stream share plus 64, and at most a quarter of MAX_CONNECTIONS.
    #[arg(long, env = "MAX_CONNECTIONS_PER_CLIENT", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_client: Option<u64>,

    /// Streams one client address may hold at once; past it `429` with `Retry-After`.
    /// Default: a tenth of MAX_STREAMS, at most 1,000 (a carrier's NAT puts many customers
    /// behind one address; no default lets one address take every slot).
    #[arg(long, env = "MAX_STREAMS_PER_CLIENT", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_streams_per_client: Option<u64>,

    /// Proxies whose `X-Forwarded-For` is believed, as addresses or CIDR ranges separated by
    /// commas (e.g. `127.0.0.1,10.0.0.0/8`). Unset: none; the peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = proxy)]
    pub trusted_proxies: Vec<IpNet>,
}

/// An address or a range, as `TRUSTED_PROXIES` lists them.
fn proxy(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{raw}` is not an address or a CIDR range (e.g. 10.0.0.0/8)"))
}

/// Descriptors kept back from connections: the store's and the bus' connections, the log,
/// the event loop's own. A fixed part and a hundredth of the limit.
pub fn reserved_descriptors(limit: u64) -> u64 {
    64 + limit / 100
}

/// The shares in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub connections: u64,
    pub connections_per_client: u64,
    pub streams_per_client: u64,
}

impl Shares {
    /// The shares `limits` set, with the unset ones derived from `max_streams` and the
    /// process's descriptor limit. Refuses a `MAX_CONNECTIONS` the descriptors cannot hold,
    /// with a sentence saying so.
    pub fn resolve(
        limits: &ClientLimits,
        max_streams: u64,
        descriptors: u64,
    ) -> Result<Shares, String> {
        let available = descriptors.saturating_sub(reserved_descriptors(descriptors));
        let connections = match limits.max_connections {
            Some(wanted) if wanted > available => {
                return Err(format!(
                    "MAX_CONNECTIONS={wanted} is more than this process can hold: its descriptor \
                     limit is {descriptors}, of which {} are kept for the store and the logs; \
                     lower it, or raise the limit (`ulimit -n`, or LimitNOFILE= in systemd)",
                    descriptors - available.min(descriptors)
                ));
            }
            Some(wanted) => wanted,
            None if available == 0 => {
                return Err(format!(
                    "the descriptor limit ({descriptors}) leaves nothing for connections; raise it \
                     (`ulimit -n`, or LimitNOFILE= in systemd)"
                ));
            }
            None => available,
        };
        let streams_per_client = limits
            .max_streams_per_client
            .unwrap_or_else(|| (max_streams / 10).clamp(1, 1000));
        let connections_per_client = limits
            .max_connections_per_client
            .unwrap_or_else(|| (streams_per_client + 64).min((connections / 4).max(1)));
        Ok(Shares {
            connections,
            connections_per_client,
            streams_per_client,
        })
    }
}

/// Why a connection or a stream was refused; each is counted apart in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `MAX_CONNECTIONS` are open.
    Connections,
    /// The client holds `MAX_CONNECTIONS_PER_CLIENT`.
    ClientConnections,
    /// The client holds `MAX_STREAMS_PER_CLIENT`.
    ClientStreams,
}

impl Refused {
    /// Its label in `order_tracking_refused_total{reason=…}`.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::ClientConnections => "client_connections",
            Refused::ClientStreams => "client_streams",
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    connections: u64,
    streams: u64,
}

/// What every client holds now.
#[derive(Debug)]
pub struct Clients {
    shares: Shares,
    trusted: Vec<IpNet>,
    table: Mutex<HashMap<IpAddr, Held>>,
    connections: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Clients {
    pub fn new(shares: Shares, trusted: Vec<IpNet>, metrics: Arc<Metrics>) -> Self {
        Self {
            shares,
            trusted,
            table: Mutex::default(),
            connections: AtomicU64::new(0),
            metrics,
        }
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// Counts a new connection from `peer`, unless the process or the peer holds its share.
    pub fn connect(self: &Arc<Self>, peer: IpAddr) -> Result<ClientConnection, Refused> {
        let peer = peer.to_canonical();
        if self.connections.fetch_add(1, Ordering::Relaxed) >= self.shares.connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refuse(Refused::Connections));
        }
        let per_client = !self.is_trusted(peer);
        if per_client {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let held = table.entry(peer).or_default();
            if held.connections >= self.shares.connections_per_client {
                drop(table);
                self.connections.fetch_sub(1, Ordering::Relaxed);
                return Err(self.refuse(Refused::ClientConnections));
            }
            held.connections += 1;
        }
        self.metrics.connections_open.inc();
        Ok(ClientConnection {
            clients: self.clone(),
            peer,
            per_client,
        })
    }

    /// Counts a new stream of `client`, unless it holds its share.
    pub fn open_stream(self: &Arc<Self>, client: IpAddr) -> Result<ClientStream, Refused> {
        let client = client.to_canonical();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let held = table.entry(client).or_default();
        if held.streams >= self.shares.streams_per_client {
            drop(table);
            return Err(self.refuse(Refused::ClientStreams));
        }
        held.streams += 1;
        Ok(ClientStream {
            clients: self.clone(),
            client,
        })
    }

    /// The client a request from `peer` is: the peer itself, or, from a trusted proxy, the
    /// last address in `X-Forwarded-For` (all its lines, in order) that is not a trusted
    /// proxy too. A hop that is not an address ends the walk at the last one that was.
    pub fn client_of<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let hops: Vec<&[u8]> = forwarded_for
            .flat_map(|line| line.split(|&b| b == b','))
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(addr) = std::str::from_utf8(hop)
                .ok()
                .and_then(|hop| hop.trim().parse::<IpAddr>().ok())
            else {
                break;
            };
            client = addr.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    fn refuse(&self, why: Refused) -> Refused {
        self.metrics.refused(why.reason());
        why
    }

    fn release(&self, addr: IpAddr, connection: bool) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = table.get_mut(&addr) {
            if connection {
                held.connections -= 1;
            } else {
                held.streams -= 1;
            }
            if held.connections == 0 && held.streams == 0 {
                table.remove(&addr);
            }
        }
    }

    /// Addresses holding anything now (for tests: the table does not outgrow what is open).
    pub fn addresses(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One connection counted for as long as it lives (its socket included, until closed).
#[derive(Debug)]
pub struct ClientConnection {
    clients: Arc<Clients>,
    peer: IpAddr,
    per_client: bool,
}

impl ClientConnection {
    /// The peer's address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.clients.connections.fetch_sub(1, Ordering::Relaxed);
        self.clients.metrics.connections_open.dec();
        if self.per_client {
            self.clients.release(self.peer, true);
        }
    }
}

/// One stream of a client, counted for as long as it lives.
#[derive(Debug)]
pub struct ClientStream {
    clients: Arc<Clients>,
    client: IpAddr,
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.clients.release(self.client, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn clients(shares: Shares, trusted: &[&str]) -> Arc<Clients> {
        let trusted = trusted.iter().map(|raw| proxy(raw).unwrap()).collect();
        Arc::new(Clients::new(shares, trusted, Arc::default()))
    }

    const SHARES: Shares = Shares {
        connections: 5,
        connections_per_client: 2,
        streams_per_client: 1,
    };

    #[test]
    fn the_default_shares_leave_room_for_others_whatever_max_streams_is() {
        for max_streams in [1, 2, 9, 10, 100, 10_000, 50_000, 1_000_000] {
            let shares = Shares::resolve(&ClientLimits::default(), max_streams, 20_000).unwrap();
            assert!(shares.streams_per_client >= 1);
            assert!(
                shares.streams_per_client < max_streams || max_streams == 1,
                "{max_streams}: {shares:?}"
            );
            assert!(shares.streams_per_client <= 1000);
            assert!(shares.connections_per_client < shares.connections);
        }
        let shares = Shares::resolve(&ClientLimits::default(), 10_000, 20_000).unwrap();
        assert_eq!(
            shares,
            Shares {
                connections: 20_000 - 264,
                connections_per_client: 1064,
                streams_per_client: 1000,
            }
        );
        // A low descriptor limit: a quarter of what is left, per client.
        let low = Shares::resolve(&ClientLimits::default(), 10_000, 256).unwrap();
        assert_eq!(low.connections, 256 - 66);
        assert_eq!(low.connections_per_client, 47);
    }

    #[test]
    fn explicit_shares_are_taken_as_they_are_and_an_impossible_total_is_refused() {
        let limits = ClientLimits {
            max_connections: Some(19_000),
            max_connections_per_client: Some(19_000),
            max_streams_per_client: Some(50_000),
            trusted_proxies: vec![],
        };
        let shares = Shares::resolve(&limits, 50_000, 20_000).unwrap();
        assert_eq!(
            (
                shares.connections,
                shares.connections_per_client,
                shares.streams_per_client
            ),
            (19_000, 19_000, 50_000)
        );
        let too_many = ClientLimits {
            max_connections: Some(20_000),
            ..ClientLimits::default()
        };
        let err = Shares::resolve(&too_many, 10, 20_000).unwrap_err();
        assert!(err.contains("MAX_CONNECTIONS=20000"), "{err}");
        assert!(Shares::resolve(&ClientLimits::default(), 10, 10).is_err());
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_others_are_still_served() {
        let clients = clients(SHARES, &[]);
        let a = addr("192.0.2.1");
        let first = clients.connect(a).unwrap();
        let _second = clients.connect(a).unwrap();
        assert_eq!(clients.connect(a).unwrap_err(), Refused::ClientConnections);
        let _other = clients.connect(addr("192.0.2.2")).unwrap();
        drop(first);
        let _again = clients.connect(a).unwrap();

        let stream = clients.open_stream(a).unwrap();
        assert_eq!(clients.open_stream(a).unwrap_err(), Refused::ClientStreams);
        let _other_stream = clients.open_stream(addr("192.0.2.2")).unwrap();
        drop(stream);
        let _stream_again = clients.open_stream(a).unwrap();
        assert_eq!(
            clients.metrics.render().matches("reason=\"client_").count(),
            2,
            "{}",
            clients.metrics.render()
        );
    }

    #[test]
    fn the_total_is_capped_and_the_table_empties_as_things_close() {
        let clients = clients(SHARES, &["10.0.0.0/8"]);
        // A trusted proxy is not held to a client's share, only to the total.
        let held: Vec<_> = (0..5)
            .map(|_| clients.connect(addr("10.1.2.3")).unwrap())
            .collect();
        assert_eq!(
            clients.connect(addr("192.0.2.9")).unwrap_err(),
            Refused::Connections
        );
        drop(held);
        let a = clients.connect(addr("192.0.2.9")).unwrap();
        let s = clients.open_stream(addr("192.0.2.9")).unwrap();
        // An IPv4 peer seen as IPv6-mapped is the same client.
        let _mapped = clients.connect(addr("::ffff:192.0.2.9")).unwrap();
        assert_eq!(
            clients.connect(addr("192.0.2.9")).unwrap_err(),
            Refused::ClientConnections
        );
        drop((a, s, _mapped));
        assert_eq!(clients.addresses(), 0);
        assert_eq!(clients.connections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn forwarded_for_is_believed_from_a_trusted_proxy_only() {
        let clients = clients(SHARES, &["127.0.0.1", "10.0.0.0/8"]);
        let lines = |lines: &[&'static str]| {
            lines
                .iter()
                .map(|line| line.as_bytes())
                .collect::<Vec<_>>()
                .into_iter()
        };
        let proxy = addr("127.0.0.1");
        let stranger = addr("192.0.2.7");
        // From a stranger, the header is ignored whatever it says.
        assert_eq!(clients.client_of(stranger, lines(&["1.2.3.4"])), stranger);
        // From a trusted proxy: the hop it appended.
        assert_eq!(
            clients.client_of(proxy, lines(&["6.6.6.6, 1.2.3.4"])),
            addr("1.2.3.4")
        );
        // Through a chain of trusted proxies, the first untrusted hop from the right;
        // what a client wrote to the left of it is never believed.
        assert_eq!(
            clients.client_of(proxy, lines(&["6.6.6.6", "1.2.3.4, 10.0.0.5"])),
            addr("1.2.3.4")
        );
        // No header, or a hop that is not an address: the proxy itself.
        assert_eq!(clients.client_of(proxy, lines(&[])), proxy);
        assert_eq!(clients.client_of(proxy, lines(&["unknown"])), proxy);
        assert_eq!(
            clients.client_of(proxy, lines(&["1.2.3.4, bogus, 10.0.0.5"])),
            addr("10.0.0.5")
        );
    }

    #[test]
    fn a_proxy_list_is_addresses_or_ranges() {
        assert_eq!(proxy(" 10.0.0.0/8 ").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(proxy("::1").unwrap().to_string(), "::1/128");
        assert!(proxy("localhost").is_err());
        assert!(proxy("10.0.0.0/33").is_err());
    }
}
