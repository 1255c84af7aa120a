//! The alerting state, shared by every alerts instance through Redis and
//! changed only by the scripts below, each atomic, so that instances counting
//! failures at the same moment raise exactly one alert per threshold
//! crossing and one summary per cooldown.
//!
//! Per kind (`delivery`, `telegram_session`, `dead_letter_<queue>`):
//! - `alerts:<kind>:window`: a sorted set of recent failures, scored by time
//!   (ms). A member is `<id>\t<code>\t<conversation>`, so a redelivered
//!   failure counts once.
//! - `alerts:<kind>:state`: `firing` (the stream id of an alert not yet
//!   accepted by Slack) and `cooldown_until` (ms).
//! - `alerts:<kind>:held` (the ids), `alerts:<kind>:held_codes` (counts per
//!   code) and `alerts:<kind>:held_convs` (at most five conversations):
//!   failures that arrived while firing or in cooldown, for the summary.
//!   Counters, not the failures themselves, so a long incident costs a few
//!   bytes per failure and the summary is read in constant time.
//!
//! `alerts:outbox` is a stream of messages to post, read by the senders'
//! consumer group: an entry is acknowledged only once Slack has accepted it,
//! and one whose sender died is claimed by another (at least once);
//! `alerts:kinds` lists the kinds seen, for the cooldown sweep.
//!
//! A deployment on a RabbitMQ vhost other than `/` prefixes these keys with
//! `<vhost>:`, so deployments sharing one Redis keep their alerts apart.

use fred::{
    interfaces::StreamsInterface,
    prelude::{Client as RedisClient, Error as RedisError},
    types::{
        Value,
        scripts::Script,
        streams::{XID, XReadValue},
    },
};
use std::collections::HashMap;
use std::time::Duration;

/// The consumer group of every alerts instance's sender.
pub const GROUP: &str = "senders";
/// Most conversations and codes an alert names.
const TOP: usize = 5;

/// Shared Lua: `now` in ms from Redis's clock, and the digest of a list of
/// members (`id\tcode\tconversation`) as the top codes and conversations.
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function top_codes(counts, order, top)
  table.sort(order, function(a, b)
    if counts[a] == counts[b] then return a < b end
    return counts[a] > counts[b]
  end)
  local codes = {}
  for i = 1, math.min(top, #order) do table.insert(codes, {order[i], counts[order[i]]}) end
  if #codes == 0 then codes = cjson.empty_array end
  return codes
end
local function digest(members, top)
  local counts, order, convs, seen = {}, {}, {}, {}
  for _, m in ipairs(members) do
    local id, code, conv = string.match(m, '^([^\t]*)\t([^\t]*)\t([^\t]*)$')
    if code then
      if not counts[code] then counts[code] = 0; table.insert(order, code) end
      counts[code] = counts[code] + 1
      if conv ~= '' and not seen[conv] and #convs < top then
        seen[conv] = true; table.insert(convs, conv)
      end
    end
  end
  if #convs == 0 then convs = cjson.empty_array end
  return top_codes(counts, order, top), convs
end
";

/// KEYS: window, state, held, outbox, kinds, held codes, held
/// conversations. ARGV: kind, member, threshold, window ms, top, held TTL ms.
/// Returns `{outcome, n}`: `counted` (n in the window), `held` (n = 1 when
/// newly held), or `fired` (n counted; an alert entered the outbox and the
/// window starts over).
const RECORD: &str = r"
local kind, member = ARGV[1], ARGV[2]
local threshold, window, top = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SADD', KEYS[5], kind)
local firing = redis.call('HGET', KEYS[2], 'firing')
local cooldown_until = tonumber(redis.call('HGET', KEYS[2], 'cooldown_until') or '0')
if firing or cooldown_until > now then
  local id, code, conv = string.match(member, '^([^\t]*)\t([^\t]*)\t([^\t]*)$')
  if not id or redis.call('SADD', KEYS[3], id) == 0 then return {'held', 0} end
  redis.call('HINCRBY', KEYS[6], code, 1)
  if conv ~= '' and redis.call('SCARD', KEYS[7]) < top then redis.call('SADD', KEYS[7], conv) end
  for i = 6, 7 do redis.call('PEXPIRE', KEYS[i], ARGV[6]) end
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
  return {'held', 1}
end
redis.call('ZADD', KEYS[1], 'NX', now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
local count = redis.call('ZCARD', KEYS[1])
if count < threshold then return {'counted', count} end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local codes, convs = digest(members, top)
local alert = cjson.encode({type = 'alert', kind = kind, count = count,
  window_ms = window, threshold = threshold, codes = codes, conversations = convs,
  first_ms = tonumber(first), fired_ms = now})
local id = redis.call('XADD', KEYS[4], '*', 'kind', kind, 'type', 'alert', 'body', alert)
redis.call('HSET', KEYS[2], 'firing', id)
redis.call('DEL', KEYS[1])
return {'fired', count}
";

/// KEYS: state, outbox. ARGV: entry id, type, cooldown ms, group. Slack
/// accepted the entry: acknowledge it and, for an alert, start the cooldown.
/// Returns 0 when another sender had already settled it.
const SETTLE: &str = r"
if redis.call('XACK', KEYS[2], ARGV[4], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[2], ARGV[1])
if ARGV[2] == 'alert' then
  redis.call('HDEL', KEYS[1], 'firing')
  redis.call('HSET', KEYS[1], 'cooldown_until', now + tonumber(ARGV[3]))
end
return 1
";

/// KEYS: state, held, outbox, held codes, held conversations. ARGV: kind,
/// cooldown ms, top. A cooldown that has ended: with failures held, one
/// summary enters the outbox. A `firing` whose entry is gone from the stream
/// (deleted by hand, or Redis restarted empty) is cleared. Returns 1 when a
/// summary was queued.
const SWEEP: &str = r"
local firing = redis.call('HGET', KEYS[1], 'firing')
if firing then
  if #redis.call('XRANGE', KEYS[3], firing, firing) == 0 then
    redis.call('HDEL', KEYS[1], 'firing')
  end
  return 0
end
local cooldown_until = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until') or '0')
if cooldown_until == 0 or cooldown_until > now then return 0 end
redis.call('HDEL', KEYS[1], 'cooldown_until')
local n = redis.call('SCARD', KEYS[2])
if n == 0 then return 0 end
local counts, order = {}, {}
local flat = redis.call('HGETALL', KEYS[4])
for i = 1, #flat, 2 do
  counts[flat[i]] = tonumber(flat[i + 1]); table.insert(order, flat[i])
end
local codes = top_codes(counts, order, tonumber(ARGV[3]))
local convs = redis.call('SMEMBERS', KEYS[5])
table.sort(convs)
if #convs == 0 then convs = cjson.empty_array end
local summary = cjson.encode({type = 'summary', kind = ARGV[1], count = n,
  cooldown_ms = tonumber(ARGV[2]), codes = codes, conversations = convs,
  until_ms = cooldown_until})
redis.call('XADD', KEYS[3], '*', 'kind', ARGV[1], 'type', 'summary', 'body', summary)
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
return 1
";

/// KEYS: outbox. ARGV: group, entry id, consumer. Renews `consumer`'s claim
/// on an entry it still holds (resets its idle time); returns 0 when another
/// sender holds it now.
const KEEP: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
";

/// KEYS: outbox. ARGV: group, consumer. Removes a consumer that holds
/// nothing from the group (a sender that stops cleanly).
const LEAVE: &str = r"
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// What recording one failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted in the window (this many now).
    Counted(u64),
    /// Held for the summary (`false`: it was already held).
    Held(bool),
    /// Crossed the threshold: an alert is queued.
    Fired(u64),
}

/// One queued message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    /// `alert` or `summary`.
    pub kind_of_message: String,
    pub body: serde_json::Value,
}

#[derive(Clone)]
pub struct AlertState {
    redis: RedisClient,
    /// `""`, or `<vhost>:`.
    prefix: String,
    record: Script,
    settle: Script,
    sweep: Script,
    keep: Script,
    leave: Script,
}

fn with_prelude(body: &str) -> Script {
    Script::from_lua(format!("{PRELUDE}{body}"))
}

impl AlertState {
    /// The state of the deployment on `vhost`.
    pub fn new(redis: RedisClient, vhost: &str) -> Self {
        Self {
            redis,
            prefix: platform::authz_redis::namespace(vhost),
            record: with_prelude(RECORD),
            settle: with_prelude(SETTLE),
            sweep: with_prelude(SWEEP),
            keep: Script::from_lua(KEEP),
            leave: Script::from_lua(LEAVE),
        }
    }

    fn key(&self, kind: &str, part: &str) -> String {
        format!("{}alerts:{kind}:{part}", self.prefix)
    }

    /// The stream of messages waiting for Slack.
    pub fn outbox(&self) -> String {
        format!("{}alerts:outbox", self.prefix)
    }

    fn kinds(&self) -> String {
        format!("{}alerts:kinds", self.prefix)
    }

    /// Creates the senders' group (and the stream) if missing.
    pub async fn ensure_group(&self) -> Result<(), RedisError> {
        let created: Result<Value, RedisError> = self
            .redis
            .xgroup_create(self.outbox(), GROUP, "0", true)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records one failure of `kind`. Held failures are kept a day past
    /// `cooldown` at most (a Slack outage lasting longer loses their summary).
    pub async fn record(
        &self,
        kind: &str,
        member: &str,
        threshold: u32,
        window: Duration,
        cooldown: Duration,
    ) -> Result<Recorded, RedisError> {
        let (outcome, n): (String, u64) = self
            .record
            .evalsha_with_reload(
                &self.redis,
                vec![
                    self.key(kind, "window"),
                    self.key(kind, "state"),
                    self.key(kind, "held"),
                    self.outbox(),
                    self.kinds(),
                    self.key(kind, "held_codes"),
                    self.key(kind, "held_convs"),
                ],
                vec![
                    kind.to_owned(),
                    member.to_owned(),
                    threshold.max(1).to_string(),
                    window.as_millis().max(1).to_string(),
                    TOP.to_string(),
                    (cooldown + Duration::from_secs(86_400))
                        .as_millis()
                        .to_string(),
                ],
            )
            .await?;
        Ok(match outcome.as_str() {
            "fired" => Recorded::Fired(n),
            "held" => Recorded::Held(n == 1),
            _ => Recorded::Counted(n),
        })
    }

    /// Slack accepted `entry`; returns whether this call settled it.
    pub async fn settle(&self, entry: &Entry, cooldown: Duration) -> Result<bool, RedisError> {
        let settled: i64 = self
            .settle
            .evalsha_with_reload(
                &self.redis,
                vec![self.key(&entry.kind, "state"), self.outbox()],
                vec![
                    entry.id.clone(),
                    entry.kind_of_message.clone(),
                    cooldown.as_millis().to_string(),
                    GROUP.to_owned(),
                ],
            )
            .await?;
        Ok(settled == 1)
    }

    /// Queues the summaries of cooldowns that have ended; returns how many.
    pub async fn sweep(&self, cooldown: Duration) -> Result<usize, RedisError> {
        let kinds: Vec<String> =
            fred::interfaces::SetsInterface::smembers(&self.redis, self.kinds()).await?;
        let mut queued = 0;
        for kind in kinds {
            let n: i64 = self
                .sweep
                .evalsha_with_reload(
                    &self.redis,
                    vec![
                        self.key(&kind, "state"),
                        self.key(&kind, "held"),
                        self.outbox(),
                        self.key(&kind, "held_codes"),
                        self.key(&kind, "held_convs"),
                    ],
                    vec![
                        kind.clone(),
                        cooldown.as_millis().to_string(),
                        TOP.to_string(),
                    ],
                )
                .await?;
            queued += usize::try_from(n).unwrap_or(0);
        }
        Ok(queued)
    }

    /// New entries for `consumer`, at most `count`.
    pub async fn read_new(&self, consumer: &str, count: u64) -> Result<Vec<Entry>, RedisError> {
        let raw: Value = self
            .redis
            .xreadgroup(
                GROUP,
                consumer,
                Some(count),
                None,
                false,
                self.outbox(),
                XID::NewInGroup,
            )
            .await?;
        if raw.is_null() {
            return Ok(Vec::new());
        }
        let response: HashMap<String, Vec<XReadValue<String, String, String>>> =
            raw.into_xread_response()?;
        Ok(response.into_values().flatten().filter_map(entry).collect())
    }

    /// Entries another sender took and left idle for `idle` (it died),
    /// now `consumer`'s.
    pub async fn claim_stale(
        &self,
        consumer: &str,
        idle: Duration,
    ) -> Result<Vec<Entry>, RedisError> {
        let (_, values): (String, Vec<XReadValue<String, String, String>>) = self
            .redis
            .xautoclaim_values(
                self.outbox(),
                GROUP,
                consumer,
                u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                "0-0",
                Some(1),
                false,
            )
            .await?;
        Ok(values.into_iter().filter_map(entry).collect())
    }

    /// Tells the group that `consumer` still works on `id` (resets its idle
    /// time, so nobody claims an entry whose Slack retries go on); `false`
    /// when another sender holds it now, and this one must let it go.
    pub async fn keep(&self, consumer: &str, id: &str) -> Result<bool, RedisError> {
        let kept: i64 = self
            .keep
            .evalsha_with_reload(
                &self.redis,
                vec![self.outbox()],
                vec![GROUP.to_owned(), id.to_owned(), consumer.to_owned()],
            )
            .await?;
        Ok(kept == 1)
    }

    /// Leaves the group, if `consumer` holds nothing.
    pub async fn leave(&self, consumer: &str) -> Result<(), RedisError> {
        let _: i64 = self
            .leave
            .evalsha_with_reload(
                &self.redis,
                vec![self.outbox()],
                vec![GROUP.to_owned(), consumer.to_owned()],
            )
            .await?;
        Ok(())
    }
}

fn entry((id, fields): XReadValue<String, String, String>) -> Option<Entry> {
    let body = serde_json::from_str(fields.get("body")?).ok()?;
    Some(Entry {
        id,
        kind: fields.get("kind")?.clone(),
        kind_of_message: fields.get("type")?.clone(),
        body,
    })
}
