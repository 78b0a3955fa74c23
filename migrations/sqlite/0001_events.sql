-- The event log: one row per status change, never updated or deleted.
-- An order exists once its Created event is stored; its current status is its latest event.
CREATE TABLE events (
    -- The event id sent as the SSE `id:`; AUTOINCREMENT never reuses an id, so ids only grow.
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Lowercase hyphenated UUID.
    order_id TEXT    NOT NULL CHECK (length(order_id) = 36),
    -- Index of the status: 0 Created, 1 PaymentConfirmed, 2 Packed, 3 Shipped,
    -- 4 OutForDelivery, 5 Delivered.
    status   INTEGER NOT NULL CHECK (status BETWEEN 0 AND 5),
    -- Milliseconds since the Unix epoch, UTC.
    at_ms    INTEGER NOT NULL,
    -- A status happens at most once per order, whatever the code above does.
    UNIQUE (order_id, status)
);

-- No skipping: a status other than Created needs its predecessor already stored.
-- Together with UNIQUE this makes every order's events exactly 0, 1, 2, ... in id order.
CREATE TRIGGER events_no_skipping
BEFORE INSERT ON events
WHEN NEW.status > 0 AND NOT EXISTS (
    SELECT 1 FROM events WHERE order_id = NEW.order_id AND status = NEW.status - 1
)
BEGIN
    SELECT RAISE(ABORT, 'status out of order');
END;

-- Recent orders, newest first: the Created events by id.
CREATE INDEX events_created ON events (id) WHERE status = 0;
