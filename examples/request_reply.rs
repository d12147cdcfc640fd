//! Request-reply: a price service answers quotes; a client asks with a
//! timeout. Replies travel as ordinary messages to the bus's inbox,
//! correlated by id.
//!
//! Run: `cargo run --example request_reply`

use std::time::Duration;

use topicbus::{Bus, Message, RequestError};

#[derive(Debug, Clone)]
enum Quote {
    Ask { symbol: String },
    Price { symbol: String, cents: u64 },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::<Quote>::builder().workers(2).build()?;

    // The service holds a weak handle: a handler must not keep its bus alive.
    let weak = bus.downgrade();
    let _service = bus.subscribe("prices.quote", move |m: &Message<Quote>| {
        let Quote::Ask { symbol } = m.payload() else {
            return Ok(());
        };
        let cents = symbol.bytes().map(u64::from).sum::<u64>() * 10;
        m.reply(
            &weak,
            Quote::Price {
                symbol: symbol.clone(),
                cents,
            },
        )
        .map(drop)
    })?;

    for symbol in ["ACME", "INITECH", "HOOLI"] {
        let reply = bus.request(
            "prices.quote",
            Quote::Ask {
                symbol: symbol.into(),
            },
            Duration::from_secs(5),
        )?;
        if let Quote::Price { symbol, cents } = reply.payload() {
            println!("{symbol}: {}.{:02}", cents / 100, cents % 100);
        }
        assert!(reply.causation_id().is_some());
    }

    // Nobody serves this topic: the request fails at once, not after the timeout.
    match bus.request(
        "prices.history",
        Quote::Ask {
            symbol: "ACME".into(),
        },
        Duration::from_secs(5),
    ) {
        Err(RequestError::NoResponders) => println!("history: no responders"),
        other => return Err(format!("unexpected: {other:?}").into()),
    }

    bus.shutdown(Duration::from_secs(5))?;
    Ok(())
}
