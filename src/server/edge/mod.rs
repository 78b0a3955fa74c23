//! What a connection may cost us, whoever opens it (spec §13): the [`policy`] (how long a
//! head, an idle keep-alive or a stalled write may take, how large a head may be), the
//! [`clients`]' fair shares of connections and streams, and the process's [`descriptors`].
//!
//! Both paths of the accept loop ([`crate::server::serve`]: streams written directly, and
//! everything else through hyper) apply the same policy and count against the same shares.
pub mod clients;
pub mod descriptors;
pub mod policy;

pub use clients::{ClientConnection, ClientStream, Clients, Refused};
pub use policy::ConnectionPolicy;
