//! The domain shared by server and browser: no server-only code lives here.
mod event;
mod order;

pub use event::{EventId, OrderEvent, OrderStatusUpdate};
pub use order::{
    parse_order_id, InvalidOrderId, Order, OrderStatus, OrderSummary, TransitionError,
    UnknownStatus,
};
