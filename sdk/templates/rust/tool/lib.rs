//! `{{name}}`: a Pincer tool. Called with `{}` it answers with a greeting and
//! the host clock's time. Edit `invoke` to do real work.

wit_bindgen::generate!({ path: "wit", world: "tool-plugin" });

use exports::pincer::plugin::plugin::Guest as Plugin;
use exports::pincer::plugin::tool::{Guest as Tool, ToolInfo};
use pincer::plugin::types::Error;
use pincer::plugin::{clock, kv, log};

struct Component;

impl Plugin for Component {
    fn name() -> String {
        "{{name}}".into()
    }
    fn last_activity() -> u64 {
        clock::now_ms()
    }
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}

impl Tool for Component {
    fn describe() -> ToolInfo {
        ToolInfo {
            name: "{{name}}".into(),
            description: "Says hello and tells the time (scaffolded by `pincer plugin new`).".into(),
            parameters_schema: r#"{"type":"object","properties":{}}"#.into(),
        }
    }

    fn invoke(arguments: String) -> Result<String, Error> {
        let now = clock::now_ms();
        let calls = kv::increment("calls", 1)?;
        log::write(
            log::Level::Info,
            "invoked",
            &[("calls".into(), calls.to_string()), ("arguments".into(), arguments)],
        );
        Ok(format!(
            r#"{{"greeting":"Hello from {{name}}!","now_ms":{now},"calls":{calls}}}"#
        ))
    }
}

export!(Component);
