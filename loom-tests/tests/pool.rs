//! The worker pool's park / wake protocol under every interleaving: a task
//! scheduled while the worker is parking (or parked) is run. The main thread
//! waits for the task through a condition variable *before* shutting down, so
//! shutdown's wake-up cannot mask a lost one; loom never times a wait out, so
//! a lost wake-up is a reported deadlock.
#![cfg(topicbus_loom)]

use loom::sync::{Arc, Condvar, Mutex};
use topicbus::__loom::{Pool, Task};

struct Signal {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Task for Signal {
    fn run(&self) -> bool {
        *self.done.lock().unwrap() = true;
        self.cv.notify_all();
        false
    }
}

#[test]
fn a_scheduled_task_wakes_a_parked_worker() {
    loom::model(|| {
        let pool = Pool::new(1, None).expect("spawn");
        let signal = Arc::new(Signal {
            done: Mutex::new(false),
            cv: Condvar::new(),
        });
        // Task handles are std Arcs holding the loom-observed state.
        let task = std::sync::Arc::new(Handle(signal.clone()));
        pool.schedule(task);
        let mut done = signal.done.lock().unwrap();
        while !*done {
            done = signal.cv.wait(done).unwrap();
        }
        drop(done);
        pool.shutdown();
    });
}

struct Handle(Arc<Signal>);

impl Task for Handle {
    fn run(&self) -> bool {
        self.0.run()
    }
}
