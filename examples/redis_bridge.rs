//! Two processes sharing work through Redis: a shop publishes orders, a
//! billing service handles them as a queue group over Redis Streams (at
//! least once: each order billed by one member, acknowledged only once
//! billed) and announces invoices back over the pub/sub bridge.
//!
//! Against your own Redis, in two terminals (billing first):
//!
//! ```text
//! cargo run --release --example redis_bridge --features redis -- billing redis://127.0.0.1/ 1000
//! cargo run --release --example redis_bridge --features redis -- shop    redis://127.0.0.1/ 1000
//! ```
//!
//! With no arguments it starts a private `redis-server` (unix socket, no
//! TCP) and runs both roles as child processes of itself.
//!
//! Every envelope is signed: set `TOPICBUS_KEY` (32 bytes or more) the same
//! on both sides; without it a demo key is used.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use topicbus::envelope::{Codec, KeyRing};
use topicbus::redis::{RedisBridge, RedisStreams};
use topicbus::{Bus, Message};

type Error = Box<dyn std::error::Error>;

fn codec() -> Result<Codec, Error> {
    let key = std::env::var("TOPICBUS_KEY")
        .unwrap_or_else(|_| "demo key: set TOPICBUS_KEY in production!".into());
    Ok(Codec::signed(KeyRing::new("k1", key)?))
}

/// The billing service: takes orders from the stream's group, bills each,
/// announces the invoice.
fn billing(url: &str, orders: usize) -> Result<(), Error> {
    let bus = Bus::<String>::builder().build()?;
    let streams = RedisStreams::builder(url, codec()?, "orders")
        .node_id("billing-1")
        .consume("billing")
        .start(&bus)?;
    let bridge = RedisBridge::builder(url, codec()?)
        .node_id("billing-1")
        .export("billing.#")
        .start(&bus)?;
    let (done, billed) = std::sync::mpsc::channel();
    let announcer = bus.clone();
    let _billing = bus.subscribe("orders.#", move |m: &Message<String>| {
        let invoice = format!("invoice for {}", m.payload());
        announcer.publish("billing.invoiced", invoice)?;
        let _ = done.send(());
        Ok::<(), topicbus::PublishError>(())
    })?;
    println!("billing: ready");
    for n in 1..=orders {
        billed.recv_timeout(Duration::from_secs(60))?;
        if n % (orders / 4).max(1) == 0 {
            println!("billing: {n} orders billed");
        }
    }
    let report = bridge.shutdown(Duration::from_secs(5));
    let stats = streams.shutdown(Duration::from_secs(5));
    bus.shutdown(Duration::from_secs(5))?;
    println!(
        "billing: read {}, acknowledged {}, duplicates {}, invoices published {}",
        stats.read, stats.acked, stats.duplicates, report.stats.published
    );
    Ok(())
}

/// The shop: publishes orders into the stream, listens for invoices.
fn shop(url: &str, orders: usize) -> Result<(), Error> {
    let bus = Bus::<String>::builder().build()?;
    let invoices = bus.receiver("billing.#")?;
    let bridge = RedisBridge::builder(url, codec()?)
        .node_id("shop-1")
        .import("billing.#")
        .start(&bus)?;
    let streams = RedisStreams::builder(url, codec()?, "orders")
        .node_id("shop-1")
        .export("orders.#")
        .start(&bus)?;
    // Pub/sub reaches only connected subscribers: wait for ours.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bridge.stats().inbound_connected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    for i in 0..orders {
        bus.publish("orders.eu.created", format!("order #{i}"))?;
    }
    let mut got = 0;
    while got < orders {
        match invoices.recv_timeout(Duration::from_secs(30)) {
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    let elapsed = start.elapsed();
    let added = streams.shutdown(Duration::from_secs(5)).added;
    let report = bridge.shutdown(Duration::from_secs(5));
    bus.shutdown(Duration::from_secs(5))?;
    println!(
        "shop: {orders} orders added ({added} to the stream), {got} invoices back in {elapsed:.2?}; forged envelopes seen: {}",
        report.stats.forged
    );
    if got < orders {
        return Err(format!(
            "{} invoices missing (pub/sub is at most once)",
            orders - got
        )
        .into());
    }
    Ok(())
}

/// Starts a private redis-server and runs billing and shop as two child
/// processes against it.
fn demo(orders: usize) -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("tb-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("r.sock");
    let mut server = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e} (apt-get install -y redis-server)"))?;
    let url = format!("redis+unix://{}", socket.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_ready(&url).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let me = std::env::current_exe()?;
    let n = orders.to_string();
    let mut billing = Command::new(&me).args(["billing", &url, &n]).spawn()?;
    let shop = Command::new(&me).args(["shop", &url, &n]).status()?;
    let billing_ok = billing.wait()?.success();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if !(shop.success() && billing_ok) {
        return Err("a process failed".into());
    }
    Ok(())
}

fn redis_ready(url: &str) -> Result<(), Error> {
    let mut con = redis::Client::open(url)?.get_connection()?;
    let _: String = redis::cmd("PING").query(&mut con)?;
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let orders = |i: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(1_000);
    match args.first().map(String::as_str) {
        Some("billing") => billing(args.get(1).ok_or("billing <url> [orders]")?, orders(2)),
        Some("shop") => shop(args.get(1).ok_or("shop <url> [orders]")?, orders(2)),
        None => demo(1_000),
        Some(other) => {
            Err(format!("unknown role {other:?}: billing, shop, or none for the demo").into())
        }
    }
}
