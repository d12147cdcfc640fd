//! Request-reply completion (`src/bus/request.rs`), the real inbox and the
//! real timer under loom on a `ManualClock`:
//!
//! - `a_request_completes_once_by_reply_or_timeout`: the reply racing the
//!   timeout job (made due by a clock jump) completes the request exactly
//!   once: the requester gets the reply, or `Timeout` and the reply is
//!   counted late; the requester is always woken (a lost completion would
//!   leave it waiting forever, which loom reports as a deadlock).
#![cfg(topicbus_loom)]

use std::sync::Arc;
use std::time::Duration;

use loom::thread;
use topicbus::__loom::{Inbox, Timer};
use topicbus::{Clock, ManualClock, Message, MessageId, RequestError, Topic};

#[test]
fn a_request_completes_once_by_reply_or_timeout() {
    loom::model(|| {
        let clock = ManualClock::shared();
        let timer = Timer::new(clock.clone());
        let inbox = Inbox::<u32>::new();
        let corr = MessageId::new();
        let waiter = inbox.expect(corr);
        timer.schedule(
            clock.now() + Duration::from_secs(1),
            inbox.timeout_job(corr),
        );
        let replier = {
            let inbox = Arc::clone(&inbox);
            thread::spawn(move || {
                let topic = Topic::parse("reply").unwrap();
                let reply = Message::builder(topic, 7).correlation_id(corr).build();
                inbox.deliver(&Arc::new(reply));
            })
        };
        let jumper = {
            let clock = Arc::clone(&clock);
            thread::spawn(move || clock.advance(Duration::from_secs(1)))
        };
        let result = waiter.wait();
        replier.join().unwrap();
        jumper.join().unwrap();
        timer.stop();
        match result {
            Ok(reply) => {
                assert_eq!(*reply.payload(), 7);
                assert_eq!(inbox.late(), 0, "a reply that won is not late");
            }
            Err(RequestError::Timeout) => assert_eq!(inbox.late(), 1, "the lost reply counts late"),
            Err(e) => panic!("unexpected {e:?}"),
        }
    });
}
