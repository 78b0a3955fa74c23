-- Retention (spec §12): an order past its retention is compacted: its events are deleted
-- and this summary stays. Transitions hold against it: the next event of a compacted order
-- follows its summary's status.
CREATE TABLE compacted (
    order_id   UUID     PRIMARY KEY,
    -- The status the order had when it was compacted (its last event's).
    status     SMALLINT NOT NULL CHECK (status BETWEEN 0 AND 5),
    -- Milliseconds since the Unix epoch, UTC: its Created event's and its last event's.
    created_ms BIGINT   NOT NULL,
    updated_ms BIGINT   NOT NULL,
    -- The id of its last event deleted: a stream resuming before it missed something.
    last_id    BIGINT   NOT NULL
);

-- No skipping, now against events and summaries: a status other than Created needs its
-- predecessor stored as an event or as a summary's status, and a compacted order cannot be
-- created again. (A status at or before a summary's has no predecessor left: refused too.)
CREATE OR REPLACE FUNCTION events_no_skipping() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.status = 0 AND EXISTS (SELECT 1 FROM compacted WHERE order_id = NEW.order_id))
       OR (NEW.status > 0
           AND NOT EXISTS (
               SELECT 1 FROM events WHERE order_id = NEW.order_id AND status = NEW.status - 1)
           AND NOT EXISTS (
               SELECT 1 FROM compacted WHERE order_id = NEW.order_id AND status = NEW.status - 1))
    THEN
        RAISE EXCEPTION 'status out of order' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

-- Whether a stream of every order resuming after an id missed something: the newest
-- event ever compacted.
CREATE INDEX compacted_last_id ON compacted (last_id);

-- The sweep's question for delivered orders: by the time of their Delivered event. (Idle
-- orders are found among the oldest events, by id.)
CREATE INDEX events_delivered ON events (at_ms) WHERE status = 5;
