//! `testchan`: a poll-mode channel for the host's tests, steered through its
//! key-value store (which tests write through the host's store API):
//! - `inbox`: JSON list of `{id, conversation, text}` returned by the next poll;
//! - `last_activity`: the value `last-activity` reports (else the SDK's record);
//! - `restart`: `fail` makes `restart` fail, `hang` makes it never return;
//! - `start`: `fail` makes `start` fail (so re-creating the instance fails too).
//!
//! Poll sleeps for the host-given wait unless the inbox has messages. `name`
//! reports `testchan` plus the config key `suffix`, so tests can tell versions apart.

use std::cell::RefCell;

use pincer_sdk::{
    Capabilities, Channel, Config, Error, InboundMessage, OutboundMessage, ReceiveMode, clock, kv,
};
use serde_json::Value;

thread_local! {
    static SUFFIX: RefCell<String> = const { RefCell::new(String::new()) };
}

struct TestChan;

fn take_inbox() -> Result<Vec<InboundMessage>, Error> {
    let Some(list) = kv::get_json::<Vec<Value>>("inbox")? else {
        return Ok(vec![]);
    };
    kv::delete("inbox")?;
    Ok(list
        .into_iter()
        .map(|m| {
            let s = |k: &str| {
                m.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            InboundMessage {
                id: s("id"),
                conversation: s("conversation"),
                sender: "tester".into(),
                sender_name: None,
                text: s("text"),
                timestamp: clock::now_ms(),
            }
        })
        .collect())
}

impl Channel for TestChan {
    fn name() -> String {
        format!("testchan{}", SUFFIX.with(|s| s.borrow().clone()))
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            mode: ReceiveMode::Poll,
            edit: false,
            typing: false,
            max_message_length: 0,
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        if kv::get_string("start")?.as_deref() == Some("fail") {
            return Err(Error::Auth("start failure requested by the test".into()));
        }
        SUFFIX.with(|s| *s.borrow_mut() = config.get("suffix").unwrap_or_default().to_string());
        Ok(())
    }

    fn poll(wait_ms: u32) -> Result<Vec<InboundMessage>, Error> {
        let now = take_inbox()?;
        if !now.is_empty() {
            return Ok(now);
        }
        // Wait in short steps so new inbox entries are seen promptly. (Steps
        // are counted, not timed: tests run the host clock by hand.)
        for _ in 0..wait_ms.div_ceil(20) {
            clock::sleep_ms(20);
            let got = take_inbox()?;
            if !got.is_empty() {
                return Ok(got);
            }
        }
        Ok(vec![])
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let n = kv::list_keys("sent/")?.len() + 1;
        let id = format!("t{n}");
        kv::set_string(&format!("sent/{id:0>6}"), &message.text)?;
        Ok(id)
    }

    fn last_activity() -> u64 {
        match kv::get_string("last_activity") {
            Ok(Some(v)) => v.parse().unwrap_or(0),
            _ => pincer_sdk::last_touched(),
        }
    }

    fn restart() -> Result<(), Error> {
        match kv::get_string("restart")?.as_deref() {
            Some("fail") => Err(Error::Transient(
                "restart failure requested by the test".into(),
            )),
            Some("hang") => loop {
                clock::sleep_ms(60_000);
            },
            _ => Ok(()),
        }
    }
}

pincer_sdk::export_channel!(TestChan);
