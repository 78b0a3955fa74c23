-- The event log: one row per status change, never updated or deleted. Shared by every
-- instance. An order exists once its Created event is stored; its current status is its
-- latest event.
CREATE TABLE events (
    -- The event id sent as the SSE `id:`. Assigned while the writer holds the commit-order
    -- advisory lock (see the store), so ids become visible in increasing order.
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id UUID     NOT NULL,
    -- Index of the status: 0 Created, 1 PaymentConfirmed, 2 Packed, 3 Shipped,
    -- 4 OutForDelivery, 5 Delivered.
    status   SMALLINT NOT NULL CHECK (status BETWEEN 0 AND 5),
    -- Milliseconds since the Unix epoch, UTC.
    at_ms    BIGINT   NOT NULL,
    -- A status happens at most once per order, whatever the code above does.
    UNIQUE (order_id, status)
);

-- No skipping: a status other than Created needs its predecessor already stored.
-- Together with UNIQUE this makes every order's events exactly 0, 1, 2, ... in id order.
CREATE FUNCTION events_no_skipping() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status > 0 AND NOT EXISTS (
        SELECT 1 FROM events WHERE order_id = NEW.order_id AND status = NEW.status - 1
    ) THEN
        RAISE EXCEPTION 'status out of order' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_no_skipping
BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION events_no_skipping();

-- Recent orders, newest first: the Created events by id.
CREATE INDEX events_created ON events (id) WHERE status = 0;
