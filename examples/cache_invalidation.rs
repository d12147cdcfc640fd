//! Cache invalidation fanned out with wildcards to sixteen cache shards.
//!
//! Four regions with four cache shards each. A shard subscribes to its own
//! region's invalidations (`cache.<region>.#`) and to the global ones
//! (`cache.global.#`). An invalidation names a key (`cache.eu.users.42`) or
//! a whole entity (`cache.eu.users`). The shards are *inline* subscribers:
//! they run on the publisher's thread, so when `publish` returns every
//! matching shard has already dropped the key, and a read that follows the
//! write cannot see the stale value.
//!
//! Run: `cargo run --example cache_invalidation`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use topicbus::{Bus, Message, SubscribeOptions};

const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];
const SHARDS: usize = 4;

/// One cache shard: `entity.id` → value.
struct Shard {
    name: String,
    entries: Mutex<HashMap<String, String>>,
}

impl Shard {
    fn new(name: String) -> Self {
        let mut entries = HashMap::new();
        for entity in ["users", "orders", "products"] {
            for id in 0..50 {
                entries.insert(format!("{entity}.{id}"), format!("cached {entity} {id}"));
            }
        }
        Self {
            name,
            entries: Mutex::new(entries),
        }
    }

    /// Drops what the topic names: `cache.<scope>.<entity>[.<id>]`.
    fn invalidate(&self, m: &Message<()>) -> Result<(), String> {
        let levels: Vec<&str> = m.topic().levels().collect();
        let mut entries = self.entries.lock().map_err(|_| "shard poisoned")?;
        match levels.as_slice() {
            [_, _, entity] => entries.retain(|k, _| !k.starts_with(&format!("{entity}."))),
            [_, _, entity, id] => {
                entries.remove(&format!("{entity}.{id}"));
            }
            _ => return Err(format!("{}: not an invalidation: {}", self.name, m.topic())),
        }
        Ok(())
    }

    fn has(&self, key: &str) -> bool {
        self.entries
            .lock()
            .map(|e| e.contains_key(key))
            .unwrap_or(false)
    }

    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// The shards of `region`.
fn in_region<'a>(
    shards: &'a [(&str, Arc<Shard>)],
    region: &'a str,
) -> impl Iterator<Item = &'a (&'a str, Arc<Shard>)> + 'a {
    shards.iter().filter(move |(r, _)| *r == region)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<()>::builder().workers(1).build()?;
    let mut shards = Vec::new();
    let mut subs = Vec::new();
    for region in REGIONS {
        for n in 0..SHARDS {
            let shard = Arc::new(Shard::new(format!("{region}-{n}")));
            let s = Arc::clone(&shard);
            subs.push(
                bus.subscribe_with(
                    SubscribeOptions::new()
                        .pattern(format!("cache.{region}.#"))
                        .pattern("cache.global.#")
                        .inline(true),
                    move |m: &Message<()>| s.invalidate(m),
                )?,
            );
            shards.push((region, shard));
        }
    }

    // A user in the EU changes their profile: the write commits, then the
    // invalidation; the read after it must miss the cache.
    let r = bus.publish("cache.eu.users.42", ())?;
    println!("cache.eu.users.42       reached {} shards", r.matched);
    assert_eq!(r.matched as usize, SHARDS);
    assert!(in_region(&shards, "eu").all(|(_, s)| !s.has("users.42")));
    assert!(in_region(&shards, "us").all(|(_, s)| s.has("users.42")));

    // A product's price changes everywhere.
    let r = bus.publish("cache.global.products.7", ())?;
    println!("cache.global.products.7 reached {} shards", r.matched);
    assert_eq!(r.matched as usize, REGIONS.len() * SHARDS);
    assert!(shards.iter().all(|(_, s)| !s.has("products.7")));

    // A bad migration in the US: drop every cached order there.
    let r = bus.publish("cache.us.orders", ())?;
    println!("cache.us.orders         reached {} shards", r.matched);
    assert!(in_region(&shards, "us").all(|(_, s)| !s.has("orders.0") && !s.has("orders.49")));
    assert!(in_region(&shards, "eu").all(|(_, s)| s.has("orders.0")));

    // A burst: 10,000 single-key invalidations, each to four shards.
    let start = std::time::Instant::now();
    for _round in 0..50 {
        for region in REGIONS {
            for id in 0..50 {
                bus.publish(format!("cache.{region}.users.{id}").as_str(), ())?;
            }
        }
    }
    let took = start.elapsed();
    println!(
        "10,000 invalidations (40,000 shard deliveries) in {took:.2?}: {:.0} ns each",
        took.as_nanos() as f64 / 10_000.0
    );

    bus.shutdown(Duration::from_secs(5))?;
    for (region, shard) in &shards {
        let left = shard.len();
        // Every region lost all 50 users; products.7 everywhere; US orders.
        let expect = 150 - 50 - 1 - if *region == "us" { 50 } else { 0 };
        assert_eq!(left, expect, "{}", shard.name);
    }
    let handled: u64 = subs.iter().map(|s| s.stats().handled).sum();
    println!("shard invalidations handled: {handled}");
    // 4 + 16 + 4 + 40,000
    assert_eq!(handled, 40_024);
    Ok(())
}
