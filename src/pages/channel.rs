//! What the tabs of one browser say to each other over their `BroadcastChannel`
//! ([`super::live`]): one line of text per message.
//!
//! Written and read by hand rather than as JSON through serde: the derived reader of an
//! enum with fields cost the bundle 13 KB (issue 22), and these six messages are a word and
//! a few numbers. Every field but an event's data is free of spaces; the data, last, may
//! hold anything.
use uuid::Uuid;

use crate::domain::EventId;
use crate::pages::connection::Connection;

/// The Web Lock the tabs compete for, and the channel they talk on. Messages of another
/// format (a tab of an older release, during a deploy) are not heard, so both names end in
/// the messages' version: tabs of two releases each elect their own holder rather than talk
/// past each other.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub const LOCK: &str = "order-tracking-stream-2";
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub const CHANNEL: &str = "order-tracking-2";

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub enum Message {
    /// A tab's open orders and the last event it has of each; sent on every change and when
    /// a new holder asks.
    Want {
        tab: u32,
        orders: Vec<(Uuid, Option<EventId>)>,
    },
    /// A tab is going away.
    Bye { tab: u32 },
    /// A new holder asks every tab what it wants.
    Who,
    /// An event from the stream, as the server sent it.
    Event { id: EventId, data: String },
    /// The stream said `reset`: events of some order shown are no longer stored.
    Reset,
    /// The state of the browser's stream.
    State { connection: Connection },
}

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
impl Message {
    /// `want 7 <uuid>=42 <uuid>=-`, `bye 7`, `who`, `event 42 <data>`, `reset`, `state Live`.
    pub fn encode(&self) -> String {
        match self {
            Message::Want { tab, orders } => {
                let mut line = format!("want {tab}");
                for (order, last) in orders {
                    line.push_str(&format!(" {order}="));
                    match last {
                        Some(id) => line.push_str(&id.to_string()),
                        None => line.push('-'),
                    }
                }
                line
            }
            Message::Bye { tab } => format!("bye {tab}"),
            Message::Who => "who".to_owned(),
            Message::Event { id, data } => format!("event {id} {data}"),
            Message::Reset => "reset".to_owned(),
            Message::State { connection } => format!("state {}", connection.name()),
        }
    }

    /// The message `line` encodes; `None` for anything else.
    pub fn decode(line: &str) -> Option<Message> {
        let Some((word, rest)) = line.split_once(' ') else {
            return match line {
                "who" => Some(Message::Who),
                "reset" => Some(Message::Reset),
                _ => None,
            };
        };
        Some(match word {
            "want" => {
                let mut fields = rest.split(' ');
                let tab = fields.next()?.parse().ok()?;
                let orders = fields
                    .map(|field| {
                        let (order, last) = field.split_once('=')?;
                        let last = match last {
                            "-" => None,
                            id => Some(id.parse().ok()?),
                        };
                        Some((order.parse().ok()?, last))
                    })
                    .collect::<Option<_>>()?;
                Message::Want { tab, orders }
            }
            "bye" => Message::Bye {
                tab: rest.parse().ok()?,
            },
            "event" => {
                let (id, data) = rest.split_once(' ')?;
                Message::Event {
                    id: id.parse().ok()?,
                    data: data.to_owned(),
                }
            }
            "state" => Message::State {
                connection: Connection::from_name(rest)?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_itself() {
        let order: Uuid = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        let messages = [
            Message::Want {
                tab: 7,
                orders: vec![(order, Some(EventId(42))), (Uuid::nil(), None)],
            },
            Message::Want {
                tab: u32::MAX,
                orders: vec![],
            },
            Message::Bye { tab: 0 },
            Message::Who,
            Message::Event {
                id: EventId(9),
                data: r#"{"orderId":"x", "status":"Packed = done"}"#.to_owned(),
            },
            Message::Event {
                id: EventId(1),
                data: String::new(),
            },
            Message::Reset,
            Message::State {
                connection: Connection::Reconnecting,
            },
        ];
        for message in messages {
            let line = message.encode();
            assert_eq!(Message::decode(&line), Some(message), "{line}");
        }
        for connection in [
            Connection::Connecting,
            Connection::Live,
            Connection::Reconnecting,
            Connection::Offline,
            Connection::Completed,
        ] {
            let line = Message::State { connection }.encode();
            assert_eq!(Message::decode(&line), Some(Message::State { connection }));
        }
    }

    #[test]
    fn anything_else_is_not_a_message() {
        for line in [
            "",
            "hello",
            "who ",
            "who 1",
            "reset now",
            "reset ",
            "want 1 ",
            "bye",
            "bye -1",
            "bye x",
            "want",
            "want x",
            "want 1 not-a-uuid=1",
            "want 1 67e55044-10b1-426f-9247-bb680e5fe0c8",
            "want 1 67e55044-10b1-426f-9247-bb680e5fe0c8=x",
            "event 12",
            "event x {}",
            "state",
            "state Lively",
            r#"{"Bye":{"tab":1}}"#,
        ] {
            assert_eq!(Message::decode(line), None, "{line:?}");
        }
    }
}
