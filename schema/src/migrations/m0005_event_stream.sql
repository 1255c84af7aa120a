-- Positions in the realtime event stream. The active relay draws one value
-- per event, in publish order, and sends it as the `x-stream-id` header; the
-- WebSocket gateways use it as the frame id clients resume from.
CREATE SEQUENCE event_stream_seq AS bigint;
