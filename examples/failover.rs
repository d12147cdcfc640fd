//! Publishing to Redis with PostgreSQL as the fallback, through a Redis
//! outage.
//!
//! Orders go to a Redis stream; when Redis is down they go to the
//! PostgreSQL durable queue instead, and when it is back they go to Redis
//! again. Every publish is confirmed: the receipt says which server wrote
//! it. The example starts its own `redis-server` and PostgreSQL 15 cluster,
//! kills Redis with SIGKILL half-way, restarts it, and checks every
//! confirmed order is where its receipt says.
//!
//! ```text
//! cargo run --release --example failover --features redis,postgres
//! ```

#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use topicbus::envelope::Codec;
use topicbus::postgres::{PgQueue, QueueDepth};
use topicbus::redis::RedisStreams;
use topicbus::route::{Route, RouteError, Router, Strategy};
use topicbus::Bus;

type Error = Box<dyn std::error::Error>;

/// A private redis-server on a unix socket.
struct Redis {
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Result<Self, Error> {
        let dir = std::env::temp_dir().join(format!("tb-failover-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut r = Self { dir, child: None };
        r.spawn()?;
        Ok(r)
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("r.sock").display())
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.dir.join("r.sock"))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (apt-get install -y redis-server)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stream_len().is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stream_len(&self) -> Result<u64, Error> {
        let mut con = redis::Client::open(self.url())?.get_connection()?;
        Ok(redis::cmd("XLEN")
            .arg("topicbus:stream:orders")
            .query(&mut con)?)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() -> Result<(), Error> {
    let mut redis = Redis::start()?;
    let cluster =
        pg_server::PgCluster::start().ok_or("PostgreSQL 15 binaries not found (set PG_BIN)")?;
    let db = cluster.database();

    let bus = Bus::<String>::builder().workers(1).build()?;
    let streams = RedisStreams::builder(redis.url(), Codec::unsigned(), "orders")
        .routable()
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .start(&bus)?;
    let queue = PgQueue::builder(db.as_str(), Codec::unsigned(), "orders")
        .routable()
        .batch(100, Duration::from_millis(2))
        .start(&bus)?;
    let (to_redis, to_pg) = (
        streams.outlet().ok_or("no Redis outlet")?,
        queue.outlet().ok_or("no PostgreSQL outlet")?,
    );
    let router = Router::builder(&bus)
        .route(Route::to(to_redis.clone()).or(to_pg.clone()))
        .strategy(Strategy::All)
        .local(false)
        .build()?;

    let mut written: HashMap<String, u64> = HashMap::new();
    let mut order = 0u64;
    let mut send = |timeout: Duration| -> Result<Option<String>, Error> {
        order += 1;
        let payload = format!("order {order}");
        match router.publish_confirmed("orders.eu.created", payload, timeout) {
            Ok(r) => {
                let by = r.routes[0].delivered_by().unwrap_or("nobody").to_owned();
                *written.entry(by.clone()).or_default() += 1;
                Ok(Some(by))
            }
            // Accepted but not written in time: the outage's first message.
            Err(RouteError::Incomplete(r)) => {
                println!(
                    "  order {order}: {:?} (waits in the Redis outbox)",
                    r.routes[0].outcome()
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    };

    println!("1. both up: 100 orders");
    for _ in 0..100 {
        send(Duration::from_secs(10))?;
    }
    println!("2. Redis killed (SIGKILL)");
    redis.kill();
    let mut held = 0;
    while to_redis.is_up() {
        if send(Duration::from_millis(300))?.is_none() {
            held += 1;
        }
    }
    println!("   the Redis outlet is down; 100 orders");
    for _ in 0..100 {
        send(Duration::from_secs(10))?;
    }
    println!("3. Redis restarted");
    redis.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !to_redis.is_up() {
        if Instant::now() > deadline {
            return Err("the Redis outlet did not come back".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..100 {
        send(Duration::from_secs(10))?;
    }

    let in_stream = redis.stream_len()?;
    let QueueDepth {
        total: in_queue, ..
    } = queue.depth()?;
    let s = streams.shutdown(Duration::from_secs(5));
    queue.shutdown(Duration::from_secs(5));
    bus.shutdown(Duration::from_secs(5))?;
    println!("\nconfirmed, by the server that wrote them:");
    let mut by: Vec<_> = written.iter().collect();
    by.sort();
    for (outlet, n) in by {
        println!("  {outlet:<38} {n}");
    }
    println!(
        "held in the Redis outbox during the outage and sent after the restart: {held}; \
         the restarted stream holds {in_stream}, the PostgreSQL queue {in_queue}; unsent {}",
        s.unsent
    );
    let (r, p) = (
        written.get(to_redis.name()).copied().unwrap_or(0),
        written.get(to_pg.name()).copied().unwrap_or(0),
    );
    // Redis lost what it held when it was killed (no persistence here):
    // the restarted stream has the held orders and the 100 after it.
    assert_eq!(in_stream, 100 + held);
    assert_eq!(in_queue, p);
    assert!(r >= 200 && p >= 100, "{written:?}");
    assert_eq!(s.unsent, 0);
    Ok(())
}
