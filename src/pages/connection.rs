//! The state of an order page's live connection, as its badge shows it. Shared by the
//! timeline ([`super::order`]), which renders the badge, and the browser's feed
//! (`super::live`), which moves it.

/// The server renders only `Connecting` and `Completed`; the others come from the browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub enum Connection {
    Connecting,
    Live,
    Reconnecting,
    Offline,
    Completed,
}

impl Connection {
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    pub const ALL: [Connection; 5] = [
        Connection::Connecting,
        Connection::Live,
        Connection::Reconnecting,
        Connection::Offline,
        Connection::Completed,
    ];

    /// Its name in the tabs' messages (`super::channel`).
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    pub fn name(self) -> &'static str {
        match self {
            Connection::Connecting => "Connecting",
            Connection::Live => "Live",
            Connection::Reconnecting => "Reconnecting",
            Connection::Offline => "Offline",
            Connection::Completed => "Completed",
        }
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|connection| connection.name() == name)
    }

    pub fn label(self) -> &'static str {
        match self {
            Connection::Connecting => "Connecting…",
            Connection::Live => "Live",
            Connection::Reconnecting => "Reconnecting…",
            Connection::Offline => "Offline",
            Connection::Completed => "Completed",
        }
    }

    pub fn class(self) -> &'static str {
        match self {
            Connection::Connecting => "badge connecting",
            Connection::Live => "badge live",
            Connection::Reconnecting => "badge reconnecting",
            Connection::Offline => "badge offline",
            Connection::Completed => "badge completed",
        }
    }
}
