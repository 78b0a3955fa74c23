//! The domain shared by server and browser: no server-only code lives here.
mod event;
mod order;

pub(crate) use event::millis;

pub use event::{
    parse_time, retry_ms, rfc3339_millis, EventId, OrderEvent, OrderStatusUpdate, RETRY_MAX_MS,
    RETRY_MIN_MS,
};
pub use order::{
    parse_order_id, parse_order_reference, InvalidOrderId, Order, OrderStatus, OrderSummary,
    TransitionError, UnknownStatus,
};
